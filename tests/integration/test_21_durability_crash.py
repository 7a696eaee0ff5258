"""kill -9 at random moments under load: every 202-acknowledged reading is stored exactly once.

Four clients post batches with globally unique (device, ts) keys and known values while the
server is killed and restarted on the same data directory at least 20 times. A batch without a
202 may or may not be stored, but never partly (a request is enqueued whole or not at all).
"""
import datetime
import os
import random
import threading
import time

import requests

from conftest import reading

T0 = 1735689600000  # 2025-01-01T00:00:00Z
BATCH = 50
CLIENTS = 4
KILLS = 20


def key_ts(b, i):
    return T0 + (b * BATCH + i) * 1000


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def value(t, b, i):
    return float(t * 1000000 + b * BATCH + i) + 0.25


def test_acknowledged_batches_survive_repeated_kill9_exactly_once(meterd):
    """Embedded: WAL recovery (torn tails, consumer.pos). With METERD_TEST_BACKEND, and in
    test_34 for both brokers: api and workers killed together, the broker keeps everything."""
    kill9_under_load_exactly_once(meterd)


def kill9_under_load_exactly_once(meterd):
    seed = int(os.environ.get("METERD_CRASH_SEED", time.time_ns() % 1000000))
    rnd = random.Random(seed)
    devices = ["crash-%d" % t for t in range(CLIENTS)]
    acked = [set() for _ in range(CLIENTS)]    # batch numbers answered 202
    sent = [0] * CLIENTS                       # batch numbers 0..sent-1 were attempted
    unexpected = []
    stop = threading.Event()

    def client(t):
        s = requests.Session()
        b = 0
        while not stop.is_set():
            body = {"readings": [reading(devices[t], key_ts(b, i), value(t, b, i))
                                 for i in range(BATCH)]}
            sent[t] = b + 1
            try:
                r = s.post(meterd.base_url + "/api/v1/readings", json=body, timeout=(1, 10))
            except requests.RequestException:
                s.close()
                s = requests.Session()
                time.sleep(0.01)  # server down: move on to the next batch
            else:
                if r.status_code == 202 and r.json().get("accepted") == BATCH:
                    acked[t].add(b)
                elif r.status_code != 503:
                    unexpected.append((t, b, r.status_code, r.text[:200]))
            b += 1

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(CLIENTS)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 90
    kills = 0
    try:
        while kills < KILLS and time.monotonic() < deadline:
            time.sleep(rnd.uniform(0.1, 0.6))
            meterd.kill9()
            kills += 1
            meterd.start()
        time.sleep(0.3)  # some acknowledged traffic after the last restart too
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    ctx = "seed=%d kills=%d acked=%s sent=%s" % (seed, kills, [len(a) for a in acked], sent)
    assert kills == KILLS, ctx
    assert not unexpected, (ctx, unexpected[:5])
    assert sum(len(a) for a in acked) >= KILLS, ctx  # the load really ran between the kills

    meterd.drained(timeout=60)

    def check():
        for t, dev in enumerate(devices):
            r = meterd.get("/api/v1/devices/%s/readings" % dev, params={"limit": 1})
            if r.status_code == 404:
                assert not acked[t], ctx
                continue
            rows = meterd.readings(dev, limit=10000)
            keys = [(x["metric"], x["ts"]) for x in rows]
            assert len(keys) == len(set(keys)), "duplicate readings for %s (%s)" % (dev, ctx)
            got = {x["ts"]: x["value"] for x in rows}
            by_batch = {}
            for b in range(sent[t]):
                present = [i for i in range(BATCH) if iso(key_ts(b, i)) in got]
                for i in present:
                    assert got[iso(key_ts(b, i))] == value(t, b, i), (dev, b, i, ctx)
                by_batch[b] = len(present)
                if b in acked[t]:
                    assert len(present) == BATCH, \
                        "acked batch %d of %s has %d/%d readings (%s)" % (b, dev, len(present),
                                                                          BATCH, ctx)
                else:
                    assert len(present) in (0, BATCH), \
                        "unacked batch %d of %s is half stored: %d/%d (%s)" % (
                            b, dev, len(present), BATCH, ctx)
            assert sum(by_batch.values()) == len(rows), "readings nobody sent (%s)" % ctx
            assert {x["metric"] for x in rows} == {"energy"}

    check()
    print(ctx)
    health = meterd.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert meterd.metrics()["meterd_queue_depth"] == 0
    # and once more after a clean stop: nothing lost, nothing doubled, exit code 0
    assert meterd.stop() == 0, meterd.stderr_text()[-2000:]
    meterd.start()
    meterd.drained()
    check()
