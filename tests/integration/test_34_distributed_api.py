"""`meterd api` on a broker, with both RabbitMQ and Redis:
- --max-backlog-bytes: the backlog lives in the broker, where no worker is taking it; the api
  estimates it (depth × mean message size, sampled every 50 ms) and answers 503 + Retry-After
  above the budget, and 202 again once workers have drained it; nothing acknowledged is lost;
- kill -9 of the api and the workers together under load, 20 times: every 202 stored once
  (redelivered entries are applied alone, so a crash loop does not dead-letter good ones);
- live events: GET /api/v1/events on an api shows the readings that its workers (other
  processes) stored, through the broker."""
import json
import threading
import time

import pytest
import requests

from conftest import uid
from test_21_durability_crash import kill9_under_load_exactly_once

T0 = 1773828900000  # 2026-03-18T10:15:00Z in epoch ms
BUDGET = 256 * 1024


def wait_for(fn, timeout=30.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return None


def batch(dev, start, n=100):
    return {"readings": [{"device": dev, "metric": "energy", "ts": T0 + (start + i) * 1000,
                          "value": float(start + i)} for i in range(n)]}


@pytest.mark.parametrize("backend", ["amqp+pg", "redis+pg"])
def test_backlog_over_budget_in_the_broker_is_503_until_workers_drain_it(dist_factory, backend):
    srv = dist_factory(backend, extra_args=["--max-backlog-bytes", "256k"])
    srv.stop_worker(0)  # nobody consumes: every accepted batch stays in the broker
    dev = uid("backlog")
    accepted, first_503, seq = [], None, 0
    for _ in range(2000):
        r = srv.post("/api/v1/readings", batch(dev, seq))
        if r.status_code == 503:
            first_503 = r
            break
        assert r.status_code == 202, (r.status_code, r.text)
        accepted.append(seq)
        seq += 100
    assert first_503 is not None, "no 503 after %d batches in the broker" % len(accepted)
    assert first_503.headers.get("Retry-After", "").isdigit(), dict(first_503.headers)
    j = first_503.json()
    assert j["statusCode"] == 503 and "backlog" in j["message"], j
    # the broker holds what was accepted: about the budget's worth, and at least half of it
    def queue():
        q = srv.get("/metrics", headers={"Accept": "application/json"}).json()["queue"]
        return q if q["depth"] == len(accepted) else None

    q = wait_for(queue, timeout=5)  # broker counts are sampled, 50 ms apart
    assert q, (srv.get("/metrics", headers={"Accept": "application/json"}).json()["queue"],
               len(accepted))
    assert BUDGET // 2 <= q["depth_bytes"] <= BUDGET + 16 * 1024, q
    assert srv.post("/api/v1/readings", batch(dev, seq)).status_code == 503  # still over
    srv.start_worker(0)
    assert wait_for(lambda: srv.post("/api/v1/readings", batch(dev, seq)).status_code == 202), \
        "still 503 after the worker drained; stderr:\n" + srv.stderr_text()
    accepted.append(seq)
    srv.drained(timeout=60)
    got = srv.readings(dev, limit=10000)
    assert len(got) == 100 * len(accepted), (len(got), len(accepted))
    assert sorted(int(x["value"]) for x in got) == [s + i for s in accepted for i in range(100)]


@pytest.mark.parametrize("backend", ["amqp+pg", "redis+pg"])
def test_api_streams_the_events_of_readings_stored_by_other_processes(dist_factory, backend):
    srv = dist_factory(backend, workers=2)
    dev, other = uid("live"), uid("live-other")
    got, opened = [], threading.Event()

    def listen():
        with requests.get(srv.base_url + "/api/v1/events", params={"device": dev},
                          stream=True, timeout=(5, 20)) as r:
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            opened.set()
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if len(got) == 20:
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(10)
    time.sleep(0.5)  # the api's subscription to the broker is up long since; the stream too
    for k in range(20):  # one request each: they spread over both workers
        srv.post("/api/v1/readings", {"readings": [
            # 100 + k: two workers may store them out of order, and 0..19 out of order can
            # trip the spike rule (e.g. 14 after 0..9: > 3 x 4.5) and make an event "invalid"
            {"device": dev, "metric": "energy", "ts": T0 + k * 1000, "value": 100.0 + k},
            {"device": other, "metric": "energy", "ts": T0 + k * 1000, "value": -1.0}]})
    t.join(30)
    assert sorted(e["metric_value"] for e in got) == [100.0 + k for k in range(20)], got
    assert {e["device"] for e in got} == {dev}
    assert {e["validation_status"] for e in got} == {"valid"}


@pytest.mark.parametrize("backend", ["amqp+pg", "redis+pg"])
def test_kill9_of_api_and_workers_under_load_loses_nothing_acknowledged(dist_factory, backend):
    srv = dist_factory(backend)
    kill9_under_load_exactly_once(srv)
    q = srv.get("/metrics", headers={"Accept": "application/json"}).json()["queue"]
    assert q["dead_letters"] == 0, q  # counted by the broker, across all the restarts
