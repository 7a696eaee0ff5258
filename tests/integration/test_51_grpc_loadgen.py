"""`meterd loadgen --format grpc`: gRPC Write calls against a real meterd, acknowledged readings
checked as stored (--verify reads /metrics over HTTP). Needs no Python gRPC: the load generator
is the client."""
import json
import subprocess

from conftest import METERD_BIN, SANITIZER_MARKERS, embedded_only, free_port, metric_sum

pytestmark = embedded_only("--verify reads one process's /metrics")


def start_grpc_server(meterd_factory, extra=()):
    port = free_port()
    srv = meterd_factory(extra_args=["--grpc-addr", "127.0.0.1:%d" % port, *extra])
    srv.grpc_target = "127.0.0.1:%d" % port
    return srv


def loadgen(grpc_target, *args, url=None, timeout=120):
    """Runs meterd loadgen --format grpc --json; returns (exit code, summary dict, stderr)."""
    cmd = [METERD_BIN, "loadgen", "--format", "grpc", "--grpc-addr", grpc_target, "--json",
           "--no-progress", *args]
    if url:
        cmd += ["--url", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout), p.stderr


def test_loadgen_grpc_writes_are_all_stored_and_verified(meterd_factory):
    srv = start_grpc_server(meterd_factory)
    before = metric_sum(srv.metrics(), "meterd_readings_stored_total")
    rc, s, err = loadgen(srv.grpc_target, "--batch", "50", "--count", "40", "--devices", "7",
                         "--connections", "4", "--threads", "2", "--verify",
                         "--verify-timeout", "30", url=srv.base_url)
    assert rc == 0, (s, err)
    assert s["format"] == "grpc" and s["url"].startswith("grpc://" + srv.grpc_target)
    assert (s["requests"], s["ok"], s["readings_ok"], s["errors"]) == (40, 40, 2000, 0)
    assert s["status"] == {"OK": 40} and s["failures"] == {}
    assert s["latency_ms"]["p50"] > 0 and s["latency_ms"]["p99"] >= s["latency_ms"]["p50"]
    v = s["verify"]
    assert v["ok"] and v["stored"] == 2000 and v["expected_stored"] == 2000
    assert v["duplicates"] == 0 and v["invalid"] == 0
    # the server agrees: every reading stored once, spread over the 7 devices
    assert metric_sum(srv.metrics(), "meterd_readings_stored_total") - before == 2000
    per_device = [len(srv.readings("lg-%d" % d)) for d in range(7)]
    assert sum(per_device) == 2000 and min(per_device) > 0


def test_loadgen_grpc_at_a_fixed_rate_sends_on_schedule(meterd_factory):
    srv = start_grpc_server(meterd_factory)
    rc, s, err = loadgen(srv.grpc_target, "--batch", "10", "--rate", "40", "--duration", "1",
                         "--connections", "2", "--threads", "1", "--verify", url=srv.base_url)
    assert rc == 0, (s, err)
    assert 30 <= s["requests"] <= 42 and s["errors"] == 0
    assert s["verify"]["ok"] and s["verify"]["stored"] == s["readings_ok"] == 10 * s["requests"]


def test_loadgen_grpc_counts_server_rejections_by_status(meterd_factory):
    srv = start_grpc_server(meterd_factory, extra=["--max-readings", "10"])
    rc, s, err = loadgen(srv.grpc_target, "--batch", "20", "--count", "5", "--connections", "2",
                         "--threads", "1")
    assert rc == 1, (s, err)
    assert s["status"] == {"INVALID_ARGUMENT": 5}
    assert (s["requests"], s["ok"], s["errors"]) == (5, 0, 5)
    assert s["first_error"] == "INVALID_ARGUMENT readings: 20 readings exceed the limit of 10"
    assert metric_sum(srv.metrics(), "meterd_readings_stored_total") == 0


def test_loadgen_grpc_without_a_server_fails_with_unavailable():
    rc, s, err = loadgen("127.0.0.1:%d" % free_port(), "--count", "3", "--connections", "1",
                         "--threads", "1", "--timeout", "5", timeout=60)
    assert rc == 1
    assert s["ok"] == 0 and s["errors"] == 3
    assert s["status"] == {"UNAVAILABLE": 3}
