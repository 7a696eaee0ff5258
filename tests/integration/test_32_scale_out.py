"""Scale-out: 2 `meterd api` + 3 `meterd worker` on one queue and one PostgreSQL database.

A client with several threads posts 200,000 readings in batches of 1000, spread over both apis;
afterwards every reading is stored exactly once (counted in PostgreSQL) and no duplicate was
counted, for RabbitMQ and for Redis Streams. Runs whatever METERD_TEST_BACKEND says.
"""
import os
import threading
import time

import pytest
import requests

from conftest import uid

TOTAL = int(os.environ.get("METERD_SCALE_READINGS", "200000"))
BATCH = 1000
THREADS = 8
T0 = 1767225600000  # 2026-01-01T00:00:00Z, ms


def post_all(urls, tag):
    """Posts TOTAL readings in batches over urls from THREADS threads; returns (seconds, errors).
    Batch b goes to urls[b % len(urls)]; 503 is retried (the contract), anything else is an error."""
    n_batches = TOTAL // BATCH
    next_batch = iter(range(n_batches))
    lock = threading.Lock()
    errors = []

    def body(b):
        return {"readings": [{"device": "%s-%d" % (tag, b % 50), "metric": "energy",
                              "ts": T0 + (b // 50 * BATCH + i) * 1000, "value": float(i % 97)}
                             for i in range(BATCH)]}

    def run():
        s = requests.Session()
        while True:
            with lock:
                b = next(next_batch, None)
            if b is None:
                return
            for attempt in range(50):
                try:
                    r = s.post(urls[b % len(urls)] + "/api/v1/readings", json=body(b),
                               timeout=60)
                except requests.RequestException as e:
                    errors.append((b, repr(e)))
                    break
                if r.status_code == 202 and r.json().get("accepted") == BATCH:
                    break
                if r.status_code != 503:
                    errors.append((b, r.status_code, r.text[:200]))
                    break
                time.sleep(0.1)
            else:
                errors.append((b, "503 fifty times"))

    t = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.monotonic() - t, errors


@pytest.mark.parametrize("backend", ["amqp+pg", "redis+pg"])
def test_two_apis_three_workers_store_200k_readings_exactly_once(backend, dist_factory,
                                                                tmp_path):
    data = tmp_path / "shared-data"
    a = dist_factory(backend, workers=3, data_dir=data, name="a")
    b = dist_factory(backend, workers=0, data_dir=data, name="b")
    tag = uid("scale")
    secs, errors = post_all([a.base_url, b.base_url], tag)
    assert not errors, errors[:5]
    print("%s: %d readings posted in %.1f s (%.0f/s)" % (backend, TOTAL, secs, TOTAL / secs))

    q = ("SELECT count(*), count(DISTINCT (r.device_id, r.metric_id, r.ts_us)) FROM readings r "
         "JOIN devices d ON d.id = r.device_id WHERE d.ext_id LIKE %s")
    deadline = time.monotonic() + 120
    t = time.monotonic()
    while time.monotonic() < deadline:
        n = a.sql(q, (tag + "-%",))[0]
        if n[0] >= TOTAL:
            break
        time.sleep(0.5)
    print("%s: stored %d readings %.1f s after the last 202" % (backend, n[0], time.monotonic() - t))
    a.drained(timeout=60)
    assert a.sql(q, (tag + "-%",)) == [(TOTAL, TOTAL)], (
        "stored (rows, distinct keys) != %d; worker stderr:\n%s" % (TOTAL, a.stderr_text()[-3000:]))
    dup, conf, batches = a.sql("SELECT duplicates, conflicts, batches FROM counters")[0]
    assert (dup, conf) == (0, 0), (dup, conf)
    assert batches == TOTAL // BATCH, batches
    assert a.sql("SELECT count(*) FROM batches") == [(TOTAL // BATCH,)]
    # every worker took part, none died, the apis are healthy
    m = [requests.get(u + "/metrics", timeout=10).text for u in a.worker_urls]
    applied = [sum(float(l.split()[-1]) for l in t.splitlines()
                   if l.startswith("meterd_batches_applied_total")) for t in m]
    assert all(x > 0 for x in applied), applied
    assert sum(applied) == TOTAL // BATCH, applied
    assert all(p.poll() is None for p in a.wprocs)
    for s in (a, b):
        assert s.get("/health").status_code == 200
