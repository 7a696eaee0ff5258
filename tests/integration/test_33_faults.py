"""Faults: RabbitMQ, Redis and PostgreSQL restarted (each separately) in the middle of a load.

Every reading that got a 2xx is stored exactly once afterwards, a batch is never half stored,
and the same api and worker processes carry on without a manual restart. The servers restarted
here are a second set (fixture fault_servers), used by nobody else.
"""
import re
import threading
import time

import pytest
import requests

from conftest import uid

BATCH = 100
CLIENTS = 4
T0 = 1767225600000  # 2026-01-01T00:00:00Z, ms


class Load:
    """CLIENTS threads posting BATCH-reading batches until stopped; remembers every 2xx."""

    def __init__(self, url, tag):
        self.url, self.tag = url, tag
        self.acked = [set() for _ in range(CLIENTS)]
        self.sent = [0] * CLIENTS
        self.statuses = {}
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True)
                        for t in range(CLIENTS)]

    def device(self, t):
        return "%s-%d" % (self.tag, t)

    def ts(self, b, i):
        return T0 + (b * BATCH + i) * 1000

    def run(self, t):
        s = requests.Session()
        b = 0
        while not self.stop_ev.is_set():
            body = {"readings": [{"device": self.device(t), "metric": "energy",
                                  "ts": self.ts(b, i), "value": float(b % 89 + 1)}
                                 for i in range(BATCH)]}
            self.sent[t] = b + 1
            try:
                r = s.post(self.url + "/api/v1/readings", json=body, timeout=(2, 40))
                code = r.status_code
                if code == 202 and r.json().get("accepted") == BATCH:
                    self.acked[t].add(b)
            except requests.RequestException as e:
                code = type(e).__name__
                s.close()
                s = requests.Session()
            self.statuses[code] = self.statuses.get(code, 0) + 1
            if code != 202:
                time.sleep(0.05)
            b += 1

    def start(self):
        for th in self.threads:
            th.start()
        return self

    def acked_total(self):
        return sum(len(a) for a in self.acked)

    def wait_acked(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while self.acked_total() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.acked_total()

    def stop(self):
        self.stop_ev.set()
        for th in self.threads:
            th.join(60)


def stored(srv, tag):
    """{device: {ts_ms: count}} from PostgreSQL."""
    rows = srv.sql("SELECT d.ext_id, r.ts_us / 1000, count(*) FROM readings r JOIN devices d "
                   "ON d.id = r.device_id WHERE d.ext_id LIKE %s GROUP BY 1, 2", (tag + "-%",))
    out = {}
    for dev, ts, n in rows:
        out.setdefault(dev, {})[int(ts)] = n
    return out


def check_exactly_once(srv, load, ctx, timeout=90):
    """Waits until every acknowledged batch is stored, then checks exactly-once."""
    need = {(load.device(t), load.ts(b, i)) for t in range(CLIENTS) for b in load.acked[t]
            for i in range(BATCH)}
    deadline = time.monotonic() + timeout
    progress = (None, time.monotonic())
    while True:
        got = stored(srv, load.tag)
        have = {(d, ts) for d, m in got.items() for ts in m}
        missing = need - have
        now = time.monotonic()
        if len(missing) != progress[0]:
            progress = (len(missing), now)
        if not missing or now > deadline or now - progress[1] > 15:  # 15 s without progress
            break
        time.sleep(0.5)
    srv.drained(timeout=60)
    got = stored(srv, load.tag)
    have = {(d, ts) for d, m in got.items() for ts in m}
    missing = sorted(need - have)
    info = "%s; acked %d batches, statuses %s" % (ctx, load.acked_total(), load.statuses)
    assert not missing, "%d acknowledged readings not stored, e.g. %s (%s)\n%s" % (
        len(missing), missing[:3], info, tail(srv))
    twice = [(d, ts, n) for d, m in got.items() for ts, n in m.items() if n != 1]
    assert not twice, (twice[:5], info)
    for t in range(CLIENTS):
        m = got.get(load.device(t), {})
        for b in range(load.sent[t]):
            n = sum(1 for i in range(BATCH) if load.ts(b, i) in m)
            assert n in (0, BATCH), "batch %d of %s half stored: %d/%d (%s)" % (
                b, load.device(t), n, BATCH, info)
    dup = srv.sql("SELECT duplicates, conflicts FROM counters")[0]
    return info, dup


def tail(srv, n=40):
    lines = srv.stderr_text().splitlines()
    return "\n".join(lines[-n:])


def assert_recovered(srv, procs, ctx):
    """Same processes as before the fault; a new reading goes through the whole pipeline."""
    assert [p.pid for p in srv._procs()] == procs, ctx
    assert all(p.poll() is None for p in srv._procs()), (ctx, tail(srv))
    dev = uid("after")
    deadline = time.monotonic() + 30
    while True:
        r = srv.post("/api/v1/readings", {"readings": [
            {"device": dev, "metric": "energy", "ts": T0, "value": 1.0}]})
        if r.status_code == 202 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 202, (ctx, r.status_code, r.text)
    srv.drained(timeout=60)
    assert srv.sql("SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id "
                   "WHERE d.ext_id = %s", (dev,)) == [(1,)], (ctx, tail(srv))
    for u in srv.worker_urls:
        h = requests.get(u + "/health", timeout=10)
        assert h.status_code == 200, (ctx, u, h.text)


def worker_errors(srv):
    """The workers' /health last_error values right now (a worker may be busy: skipped)."""
    out = []
    for u in srv.worker_urls:
        try:
            w = requests.get(u + "/health", timeout=2).json()["components"]["worker"]
        except (requests.RequestException, ValueError, KeyError):
            continue
        if w.get("last_error"):
            out.append(w["last_error"])
    return out


def run_fault(srv, server, down_s, ctx):
    """Returns the workers' last_error values seen while the server was down."""
    procs = [p.pid for p in srv._procs()]
    load = Load(srv.base_url, uid("fault")).start()
    seen = []
    try:
        assert load.wait_acked(20) >= 20, (ctx, load.statuses, tail(srv))
        server.stop()
        end = time.monotonic() + down_s
        while time.monotonic() < end:
            seen += worker_errors(srv)
            time.sleep(0.2)
        server.start()
        before = load.acked_total()
        load.wait_acked(before + 20, timeout=40)
        time.sleep(0.5)
    finally:
        load.stop()
    assert load.acked_total() >= before + 20, (
        "no 202 after the restart (%s, statuses %s)\n%s" % (ctx, load.statuses, tail(srv)))
    info, dup = check_exactly_once(srv, load, ctx)
    print(info, "duplicates/conflicts", dup)
    assert_recovered(srv, procs, ctx)
    return seen


def test_rabbitmq_restart_during_load(dist_factory, fault_servers):
    mq = fault_servers.get_rabbitmq()
    srv = dist_factory("amqp+pg", workers=2, env={
        "RABBITMQ_URL": mq.url, "DATABASE_URL": fault_servers.database("rabbit_fault")})
    run_fault(srv, mq, 1.0, "rabbitmq restart")


def test_redis_restart_during_load(dist_factory, fault_servers):
    rd = fault_servers.get_redis()
    srv = dist_factory("redis+pg", workers=2, env={
        "REDIS_PORT": str(rd.port), "DATABASE_URL": fault_servers.database("redis_fault")})
    run_fault(srv, rd, 2.0, "redis restart")


@pytest.mark.parametrize("backend", ["amqp+pg", "redis+pg"])
def test_postgresql_restart_during_load(backend, dist_factory, fault_servers):
    pg = fault_servers.get_pg()
    srv = dist_factory(backend, workers=2, env={
        "DATABASE_URL": fault_servers.database("pg_fault_" + backend.split("+")[0])})
    seen = run_fault(srv, pg, 3.0, "postgresql restart (%s)" % backend)
    # /health says why the worker waits: the store's own error, not only that it waits
    waiting = [e for e in seen if e.startswith("store unreachable (")]
    assert waiting, seen[-5:]
    assert all(re.match(r"store unreachable \(.{8,}\); waiting for it", e) for e in waiting), \
        waiting[-3:]
