"""Operations: /, health, ready, metrics, request ids, logs, command line, signals."""
import datetime
import json
import pathlib
import re
import signal
import socket
import threading
import time

import requests

from conftest import (METERD_BIN, embedded_only, metric_sum, parse_metrics, reading, run_meterd,
                      uid)

T0 = 1773828900000


def test_root_describes_the_service(shared_meterd):
    r = shared_meterd.get("/")
    assert r.status_code == 200
    body = r.json()
    assert body["service"] == "Energy Ingestion Engine" and body["status"] == "running"
    assert isinstance(body["version"], str) and body["version"]


@embedded_only('asserts the embedded backends wal and sqlite')
def test_health_reports_every_component_ok(shared_meterd):
    r = shared_meterd.get("/health")
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["status"] == "ok" and isinstance(h["version"], str)
    q, s, w = h["components"]["queue"], h["components"]["store"], h["components"]["worker"]
    assert q["status"] == "ok" and q["backend"] == "wal"
    for k in ("depth", "depth_bytes", "dead_letters"):
        assert isinstance(q[k], int) and q[k] >= 0, (k, q)
    assert s == {**s, "status": "ok", "backend": "sqlite"}
    assert w["status"] == "ok" and w["running"] is True
    assert isinstance(w["lag_seconds"], (int, float)) and w["lag_seconds"] >= 0


def test_ready_answers_200(shared_meterd):
    r = shared_meterd.get("/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}


@embedded_only("the fsync histogram is the WAL's, and the api's own /metrics has no worker counters")
def test_metrics_exposes_counters_gauges_and_fsync_histogram(meterd):
    meterd.post_readings([reading(uid(), T0, 1.0)])
    meterd.drained()
    r = meterd.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    m = parse_metrics(text)
    for name in ("meterd_http_requests_total", "meterd_readings_accepted_total",
                 "meterd_readings_stored_total", "meterd_readings_duplicates_total",
                 "meterd_readings_conflicts_total", "meterd_readings_invalid_total",
                 "meterd_queue_depth", "meterd_worker_lag_seconds"):
        assert any(k == name or k.startswith(name + "{") for k in m), name
    assert metric_sum(m, "meterd_readings_accepted_total") >= 1
    assert metric_sum(m, "meterd_readings_stored_total") >= 1
    assert metric_sum(m, "meterd_http_requests_total") >= 2
    assert m["meterd_queue_depth"] == 0
    buckets = {k: v for k, v in m.items() if k.startswith("meterd_queue_fsync_seconds_bucket{")}
    assert any('le="+Inf"' in k for k in buckets), list(buckets)
    inf = [v for k, v in buckets.items() if 'le="+Inf"' in k][0]
    assert inf >= 1  # the accepted batch was fsync'd
    assert re.search(r"^# TYPE meterd_queue_fsync_seconds histogram$", text, re.M)
    vals = [v for k, v in sorted(buckets.items(), key=lambda kv: _le(kv[0]))]
    assert vals == sorted(vals), "histogram buckets must be cumulative"


def test_ingest_latency_histogram_counts_each_accepted_request_once(meterd):
    def count():
        return meterd.metrics().get("meterd_http_ingest_seconds_count", 0)

    assert count() == 0
    for i in range(3):
        meterd.post_readings([reading(uid(), T0 + i, 1.0)])
    assert meterd.post("/api/v1/readings", {"readings": []}).status_code == 400  # not counted
    assert meterd.get("/api/v1/devices").status_code == 200  # not an ingest request
    # libmicrohttpd's requests are counted once sent, which may be just after the client has them
    deadline = time.time() + 5
    while count() < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert count() == 3
    m = meterd.metrics()
    buckets = sorted(((_le(k), v) for k, v in m.items()
                      if k.startswith("meterd_http_ingest_seconds_bucket{")))
    assert buckets[-1] == (float("inf"), 3)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert 0 < m["meterd_http_ingest_seconds_sum"] < 30


def _le(key):
    v = re.search(r'le="([^"]+)"', key).group(1)
    return float("inf") if v == "+Inf" else float(v)


def test_client_request_id_is_echoed_on_success_and_error(shared_meterd):
    r = shared_meterd.get("/health", headers={"X-Request-Id": "it-ok-123"})
    assert r.headers["X-Request-Id"] == "it-ok-123"
    r = shared_meterd.post("/api/v1/readings", {"readings": []},
                           headers={"X-Request-Id": "it-err-456"})
    assert r.status_code == 400
    assert r.headers["X-Request-Id"] == "it-err-456"
    assert r.json()["request_id"] == "it-err-456"


def test_generated_request_ids_are_unique_and_match_the_error_body(shared_meterd):
    a = shared_meterd.get("/api/v1/devices/nobody-" + uid())
    b = shared_meterd.get("/api/v1/devices/nobody-" + uid())
    ra, rb = a.headers.get("X-Request-Id"), b.headers.get("X-Request-Id")
    assert ra and rb and ra != rb
    assert a.json()["request_id"] == ra
    ok = shared_meterd.get("/ready")
    assert ok.headers.get("X-Request-Id") not in (None, "", ra, rb)


def test_rejected_request_is_logged_as_json_with_its_request_id(shared_meterd):
    rid = "it-log-" + uid()
    r = shared_meterd.post("/api/v1/readings", {"readings": []}, headers={"X-Request-Id": rid})
    assert r.status_code == 400
    hits = shared_meterd.wait_log(lambda l: l.get("request_id") == rid)
    assert len(hits) == 1, "want one log line with request_id %s, got %r" % (rid, hits)
    line = hits[0]
    assert line["event"] == "http_request"
    assert line["status"] == 400
    assert line["path"] == "/api/v1/readings" and line["method"] == "POST"


def test_every_log_line_has_ts_level_event_and_msg(meterd):
    meterd.post("/api/v1/readings", {"readings": []})  # a 4xx is always logged
    meterd.wait_log(lambda l: l["event"] == "http_request")
    assert meterd.stop() == 0
    logs = meterd.logs()
    events = [l["event"] for l in logs]
    assert "started" in events and "http_request" in events and "stopped" in events
    bad = [l for l in logs if not {"ts", "level", "event", "msg"} <= set(l)]
    assert not bad, "log lines without ts/level/event/msg: %r" % bad[:3]


def test_help_lists_commands_and_serve_help_lists_flags_and_env():
    r = run_meterd("--help")
    assert r.returncode == 0
    assert "serve" in r.stdout and "dlq" in r.stdout
    r = run_meterd("serve", "--help")
    assert r.returncode == 0
    for s in ("--http-addr", "--data-dir", "METERD_HTTP_ADDR", "METERD_DATA_DIR",
              "--max-body-bytes", "--max-readings", "--max-inflight-bytes",
              "METERD_MAX_INFLIGHT_BYTES"):
        assert s in r.stdout, s


def test_unknown_option_exits_2_with_a_message(tmp_path):
    r = run_meterd("serve", "--no-such-option", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert "--no-such-option" in r.stderr
    r = run_meterd("no-such-command")
    assert r.returncode == 2 and r.stderr
    r = run_meterd("serve", "--max-readings", "lots", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "--max-readings" in r.stderr
    # options that contradict each other are refused at start, not found out under load
    r = run_meterd("serve", "--max-inflight-bytes", "1M", "--data-dir", str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "--max-inflight-bytes" in r.stderr and "--max-body-bytes" in r.stderr, r.stderr


def thread_nice_values(pid):
    """(name, nice value) of every thread of pid (/proc/PID/task/TID/comm and stat, field 19)."""
    out = []
    for t in pathlib.Path("/proc/%d/task" % pid).iterdir():
        stat = (t / "stat").read_text()
        out.append(((t / "comm").read_text().strip(),
                    int(stat[stat.rindex(")") + 2:].split()[16])))
    return out


@embedded_only('the worker thread lives in the serve process')
def test_serve_runs_its_worker_thread_at_nice_10_and_the_flag_changes_it(meterd_factory, tmp_path):
    pid = meterd_factory().proc.pid
    deadline = time.time() + 5  # the worker thread sets it first thing; give it the time
    while ("md-worker", 10) not in thread_nice_values(pid) and time.time() < deadline:
        time.sleep(0.05)
    threads = thread_nice_values(pid)
    assert [t for t in threads if t[1] != 0] == [("md-worker", 10)], threads  # nothing else
    assert "md-wal-commit" in [name for name, _ in threads], threads
    threads = thread_nice_values(meterd_factory(extra_args=["--worker-nice", "0"]).proc.pid)
    assert {nice for _, nice in threads} == {0}, threads
    r = run_meterd("serve", "--worker-nice", "20", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "--worker-nice" in r.stderr


@embedded_only('the linger applies to the embedded queue')
def test_serve_worker_lingers_so_single_reading_posts_share_a_store_transaction(meterd_factory,
                                                                                tmp_path):
    srv = meterd_factory(extra_args=["--worker-linger", "3000"])
    before = metric_sum(srv.metrics(), "meterd_store_apply_seconds_count")
    dev, n = uid(), 40
    t = time.time()
    for k in range(n):  # one request, one queue message each; every 202 waited for its fsync
        srv.post_readings([reading(dev, T0 + k * 1000, float(k))])
    posting = time.time() - t
    srv.drained()
    assert [r["value"] for r in srv.readings(dev)] == [float(k) for k in range(n)]
    transactions = metric_sum(srv.metrics(), "meterd_store_apply_seconds_count") - before
    # Without the linger each message that is durable is applied at once: ~40 transactions.
    # With it the first message opens a group that takes every message of the next 3 s.
    assert transactions <= 1 + int(posting / 3.0) + 1, (transactions, posting)
    r = run_meterd("serve", "--worker-linger", "10001", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "--worker-linger" in r.stderr


def test_a_rabbitmq_prefetch_amqp_cannot_carry_is_refused(tmp_path):
    # prefetch-count is a 16-bit field: 65536 used to become 0 (unlimited) on the wire
    for bad in ("0", "65536"):
        r = run_meterd("worker", "--rabbitmq-prefetch", bad, "--data-dir", str(tmp_path))
        assert r.returncode == 2, r.stderr
        assert "--rabbitmq-prefetch: invalid value '%s'" % bad in r.stderr, r.stderr
        assert "1-65535" in r.stderr, r.stderr


@embedded_only('the linger applies to the embedded queue')
def test_a_quiet_queue_is_applied_after_a_tenth_of_the_linger(meterd_factory):
    # 5 s linger: a group that stops growing is applied after a 0.5 s pause, not after 5 s
    srv = meterd_factory(extra_args=["--worker-linger", "5000"])
    dev = uid()
    srv.post_readings([reading(dev, T0, 1.0)])
    t = time.time()
    while srv.get("/api/v1/devices/%s/readings" % dev).status_code != 200:
        assert time.time() - t < 3.0, "a lone reading waited for the whole linger"
        time.sleep(0.02)
    waited = time.time() - t
    assert waited >= 0.3, "the worker did not wait for more messages at all (%.3f s)" % waited


@embedded_only('the linger applies to the embedded queue')
def test_shutdown_does_not_wait_for_the_linger_and_applies_the_group(meterd_factory):
    srv = meterd_factory(extra_args=["--worker-linger", "10000"])
    dev = uid()
    srv.post_readings([reading(dev, T0, 7.5)])
    t = time.time()
    assert srv.stop() == 0
    assert time.time() - t < 5, "shutdown waited for the 10 s linger"
    stopped = [e for e in srv.logs() if e.get("event") == "stopped"]
    assert stopped and stopped[-1]["queue_depth"] == 0, stopped  # applied before exiting
    srv.start()
    assert [r["value"] for r in srv.readings(dev)] == [7.5]
    assert metric_sum(srv.metrics(), "meterd_queue_depth") == 0


@embedded_only('checks the WAL files in the data directory')
def test_environment_variables_replace_the_flags(meterd_factory):
    srv = meterd_factory(start=False)
    srv.env = {"METERD_HTTP_ADDR": "127.0.0.1:%d" % srv.port, "METERD_DATA_DIR": srv.data_dir}
    srv.start(argv=[METERD_BIN, "serve"])
    dev = uid()
    srv.post_readings([reading(dev, T0, 1.0)])
    srv.drained()
    assert len(srv.readings(dev)) == 1
    data = pathlib.Path(srv.data_dir)
    assert (data / "queue").is_dir() and any(p.name.endswith(".db") for p in data.iterdir())
    assert srv.stop() == 0


def test_sigterm_drains_logs_stopped_exits_0_and_restart_keeps_everything(meterd):
    dev = uid()
    for b in range(20):
        meterd.post_readings([reading(dev, T0 + (b * 50 + i) * 1000, float(i)) for i in range(50)])
    assert meterd.stop(signal.SIGTERM) == 0  # no wait for the worker: SIGTERM must drain
    stopped = [l for l in meterd.logs() if l["event"] == "stopped"]
    assert len(stopped) == 1
    assert stopped[0].get("queue_depth", 0) == 0
    meterd.start()
    assert len(meterd.readings(dev)) == 1000  # already applied before the restart
    dev2 = uid()
    meterd.post_readings([reading(dev2, T0, 1.0)])
    meterd.drained()
    assert len(meterd.readings(dev2)) == 1


def test_sigint_stops_cleanly_too(meterd):
    assert meterd.stop(signal.SIGINT) == 0
    assert any(l["event"] == "stopped" for l in meterd.logs())


def test_requests_arriving_while_draining_get_503_and_the_connection_closes(meterd):
    """A slow upload keeps a request in flight after SIGTERM, so meterd is still draining when
    a new request comes in: it is answered 503 (JSON, Retry-After, Connection: close) instead
    of being refused or touching a closing queue, and meterd still exits 0."""
    body = json.dumps({"readings": [reading(uid(), T0, 1.0)]}).encode()
    slow = socket.create_connection(("127.0.0.1", meterd.port), timeout=10)
    slow.sendall(b"POST /api/v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
    keep_alive = requests.Session()  # a connection accepted before the signal
    assert keep_alive.get(meterd.base_url + "/health", timeout=5).status_code == 200
    time.sleep(0.2)  # the request is admitted before the signal
    meterd.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while True:
        r = requests.get(meterd.base_url + "/health", timeout=5)
        if r.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    kept = keep_alive.get(meterd.base_url + "/health", timeout=5)
    for r in (r, kept):  # a new connection, and one open since before the signal
        assert r.status_code == 503, r.text
        assert "shutting down" in r.json()["message"], r.text
        assert r.headers.get("Retry-After") == "5"
        assert r.headers.get("Connection", "").lower() == "close"
    assert meterd.running()  # still draining: the slow upload is in flight
    slow.sendall(body[5:])
    answer = slow.recv(4096)
    slow.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer  # ingest refuses once closing
    assert meterd.stop() == 0


def test_sigterm_lets_in_flight_requests_finish(meterd):
    """Requests already sent when SIGTERM arrives get an answer (202, or 503 once closing);
    every 202 is in the store after the restart."""
    dev = uid()
    acked, stop = [], threading.Event()
    errors = []

    def client(t):
        s = requests.Session()
        k = 0
        while not stop.is_set():
            ts = T0 + (t * 100000 + k) * 1000
            k += 1
            try:
                r = s.post(meterd.base_url + "/api/v1/readings",
                           json={"readings": [reading(dev, ts, 1.0)]}, timeout=10)
            except requests.ConnectionError:
                break
            if r.status_code == 202:
                acked.append(ts)
            elif r.status_code != 503:
                errors.append((r.status_code, r.text))

    ths = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for th in ths:
        th.start()
    time.sleep(0.5)
    code = meterd.stop(signal.SIGTERM)
    stop.set()
    for th in ths:
        th.join()
    assert code == 0
    assert not errors, errors[:3]
    assert len(acked) > 0
    meterd.start()
    meterd.drained()  # distributed: what the api took after its worker left is in the broker
    got = {x["ts"] for x in meterd.readings(dev)}
    want = {datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ") for ts in acked}
    assert want <= got
