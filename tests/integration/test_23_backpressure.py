"""Backpressure (design invariant 5): over the backlog budget ingest answers 503 + Retry-After,
nothing half-stored, and memory stays bounded under a flood."""
import json
import os
import socket
import threading
import time

import requests

from conftest import METERD_BIN, embedded_only, metric_sum, reading, uid

T0 = 1773828900000  # 2026-03-18T10:15:00Z in epoch ms


def is_asan():
    if os.environ.get("METERD_ASAN") == "1" or "asan" in METERD_BIN:
        return True
    with open(METERD_BIN, "rb") as f:
        return b"__asan_init" in f.read()


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for pid %d" % pid)


def assert_503(r):
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers.get("Retry-After", "").isdigit(), dict(r.headers)
    assert int(r.headers["Retry-After"]) >= 1
    j = r.json()
    assert j["statusCode"] == 503 and j["message"]


def test_batch_larger_than_the_budget_is_503_and_nothing_stored(meterd_factory):
    srv = meterd_factory(extra_args=["--max-backlog-bytes", "64k"])
    dev = uid("toobig") + "-" + "x" * 40
    rs = [reading(dev, T0 + i * 1000, float(i)) for i in range(3000)]  # > 64 KiB encoded
    r = srv.post("/api/v1/readings", {"readings": rs})
    assert_503(r)
    assert "backlog" in r.json()["message"]
    srv.drained()
    time.sleep(0.2)
    assert srv.get("/api/v1/devices/%s" % dev).status_code == 404
    # a small request still goes through
    small = uid("small")
    srv.post_readings([reading(small, T0, 1.0)])
    srv.drained()
    assert [x["value"] for x in srv.readings(small)] == [1.0]
    assert metric_sum(srv.metrics(), "meterd_rejected_backpressure_total") == 1


def test_flood_gets_only_202_or_503_and_every_accepted_reading_is_stored_once(meterd_factory):
    budget = 256 * 1024
    srv = meterd_factory(extra_args=["--max-backlog-bytes", "256k"])
    threads, per_batch, duration = 8, 200, 5.0
    devices = [uid("flood%d" % t) for t in range(threads)]
    accepted = [set() for _ in range(threads)]
    counts = {"202": 0, "503": 0}
    errors, lock = [], threading.Lock()
    max_depth = [0]
    stop = threading.Event()

    def flood(t):
        s = requests.Session()
        seq = 0
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and not errors:
            ts = [T0 + (seq + i) * 1000 for i in range(per_batch)]
            seq += per_batch
            body = {"readings": [reading(devices[t], x, float(x % 1000)) for x in ts]}
            try:
                r = s.post(srv.base_url + "/api/v1/readings", json=body, timeout=30)
            except requests.RequestException as e:
                with lock:
                    errors.append("thread %d: %r" % (t, e))
                return
            if r.status_code == 202:
                assert r.json()["accepted"] == per_batch
                accepted[t].update(ts)
                with lock:
                    counts["202"] += 1
            elif r.status_code == 503 and r.headers.get("Retry-After", "").isdigit():
                with lock:
                    counts["503"] += 1
            else:
                with lock:
                    errors.append("thread %d: %d %r %s" % (t, r.status_code, dict(r.headers),
                                                           r.text[:300]))
                return

    def watch():
        while not stop.is_set():
            try:
                q = requests.get(srv.base_url + "/metrics", timeout=5,
                                 headers={"Accept": "application/json"}).json()["queue"]
                max_depth[0] = max(max_depth[0], q["depth_bytes"])
            except requests.RequestException:
                pass
            time.sleep(0.02)

    ws = [threading.Thread(target=flood, args=(t,)) for t in range(threads)]
    w = threading.Thread(target=watch)
    w.start()
    for x in ws:
        x.start()
    for x in ws:
        x.join()
    stop.set()
    w.join()
    assert not errors, errors[:5]
    assert counts["202"] > 0, counts
    srv.drained(timeout=60)
    # the queue never held more than the budget (one in-flight batch of slack per thread)
    assert max_depth[0] <= budget + threads * 20000, (max_depth[0], counts)
    for t in range(threads):
        got = srv.readings(devices[t], limit=5000)
        stamps = [x["ts"] for x in got]
        assert len(stamps) == len(set(stamps)) == len(accepted[t]), (
            t, len(stamps), len(set(stamps)), len(accepted[t]), counts)
        assert all(x["status"] == "valid" for x in got)
    total = sum(len(a) for a in accepted)
    m = srv.get("/metrics", headers={"Accept": "application/json"}).json()
    assert m["store"]["readings"] == total, (m["store"], total, counts)
    if not is_asan():
        hwm = vm_hwm_kb(srv.proc.pid)
        # 256 KiB backlog + 8 requests of ~20 KB in flight + SQLite cache (a few MB) + http
        # buffers and thread stacks: far below 200 MB; unbounded buffering would exceed it.
        assert hwm < 200 * 1024, "meterd VmHWM %d kB (counts %r)" % (hwm, counts)
    print("flood: %r, max backlog %d bytes" % (counts, max_depth[0]))


def hold_upload(srv, length, send=1):
    """A POST whose headers and the first `send` body bytes are in; the rest never comes."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    s.sendall(b"POST /api/v1/readings HTTP/1.1\r\nHost: meterd\r\nContent-Type: application/json"
              b"\r\nContent-Length: %d\r\n\r\n" % length + b"{" + b" " * (send - 1))
    return s


def wait_metric(srv, name, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = metric_sum(srv.metrics(), name)
        if pred(v) or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def test_bodies_over_the_memory_budget_get_503_and_the_budget_comes_back(meterd_factory):
    srv = meterd_factory(extra_args=["--max-body-bytes", "1M", "--max-inflight-bytes", "2M"])
    held = [hold_upload(srv, 1000000) for _ in range(2)]  # 2,000,002 of 2,097,152 bytes taken
    used = wait_metric(srv, "meterd_request_memory_bytes", lambda v: v >= 2000002)
    assert used == 2000002, used
    assert metric_sum(srv.metrics(), "meterd_request_memory_budget_bytes") == 2 * 1024 * 1024
    dev = uid("overmem")
    rs = [reading(dev, T0 + i * 1000, float(i)) for i in range(1500)]  # ~150 KB of JSON
    r = srv.post("/api/v1/readings", {"readings": rs})
    assert_503(r)
    assert "--max-inflight-bytes" in r.json()["message"], r.text
    assert metric_sum(srv.metrics(), "meterd_rejected_memory_total") == 1
    # a small request still fits
    small = uid("fits")
    srv.post_readings([reading(small, T0, 1.0)])
    for s in held:
        s.close()
    assert wait_metric(srv, "meterd_request_memory_bytes", lambda v: v == 0) == 0
    r = srv.post("/api/v1/readings", {"readings": rs})
    assert r.status_code == 202, (r.status_code, r.text)
    srv.drained()
    assert len(srv.readings(dev, limit=5000)) == 1500
    assert [x["value"] for x in srv.readings(small)] == [1.0]


def test_a_chunked_body_that_grows_over_the_memory_budget_gets_503(meterd_factory):
    srv = meterd_factory(extra_args=["--max-body-bytes", "1M", "--max-inflight-bytes", "2M"])
    held = [hold_upload(srv, 700000) for _ in range(2)]
    wait_metric(srv, "meterd_request_memory_bytes", lambda v: v >= 1400002)
    dev = uid("chunked")
    body = json.dumps({"readings": [reading(dev, T0 + i * 1000, float(i))
                                    for i in range(6000)]}).encode()  # ~600 KB, no length
    assert 500000 < len(body) < 1000000
    r = requests.post(srv.base_url + "/api/v1/readings", timeout=30,
                      data=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                      headers={"Content-Type": "application/json"})
    assert_503(r)
    assert "--max-inflight-bytes" in r.json()["message"], r.text
    for s in held:
        s.close()
    assert wait_metric(srv, "meterd_request_memory_bytes", lambda v: v == 0) == 0
    srv.drained()
    assert srv.get("/api/v1/devices/%s" % dev).status_code == 404


def test_a_flood_of_large_uploads_holds_no_more_memory_than_the_budget(meterd_factory):
    """150 clients each upload all but the last byte of a 1 MB body. Without the budget meterd
    would hold 150 MB of bodies; with 8 MiB, 7 are taken and the others are read and dropped,
    then answered 503 once complete."""
    srv = meterd_factory(extra_args=["--max-body-bytes", "1M", "--max-inflight-bytes", "8M"])
    n, size = 150, 1000000

    def rss_kb():
        with open("/proc/%d/status" % srv.proc.pid) as f:
            return int(next(x for x in f if x.startswith("VmRSS:")).split()[1])

    base = rss_kb()
    conns = []
    for _ in range(n):
        s = hold_upload(srv, size, send=size - 1)
        conns.append(s)
    taken = metric_sum(srv.metrics(), "meterd_request_memory_bytes")
    assert taken <= 8 * 1024 * 1024, taken
    assert taken >= 7 * (size + 1), taken
    if not is_asan():
        grown = rss_kb() - base
        assert grown < 60 * 1024, "meterd grew by %d kB holding %d uploads" % (grown, n)
    statuses = []
    for s in conns:
        s.sendall(b"}")  # "{ ... }": complete, and not a batch (400) when it was taken
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        statuses.append(int(data.split(b" ", 2)[1]))
        s.close()
    assert statuses.count(503) >= n - 8, statuses
    assert statuses.count(503) + statuses.count(400) == n, statuses
    assert metric_sum(srv.metrics(), "meterd_rejected_memory_total") == statuses.count(503)
    assert wait_metric(srv, "meterd_request_memory_bytes", lambda v: v == 0) == 0
