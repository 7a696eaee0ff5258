"""`meterd loadgen` over HTTP at a fixed rate: the schedule is kept (what is due within the next
millisecond goes out together, nothing due after the end) and every acknowledged reading is
stored."""
import json
import subprocess

from conftest import METERD_BIN, SANITIZER_MARKERS, embedded_only, metric_sum

pytestmark = embedded_only("--verify reads one process's /metrics")


def loadgen(url, *args, timeout=120):
    """Runs meterd loadgen --json against url; returns (exit code, summary dict, stderr)."""
    p = subprocess.run([METERD_BIN, "loadgen", "--url", url, "--json", "--no-progress", *args],
                       capture_output=True, text=True, timeout=timeout)
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout), p.stderr


def test_loadgen_http_single_readings_at_a_fixed_rate_are_sent_on_schedule_and_stored(meterd):
    before = metric_sum(meterd.metrics(), "meterd_readings_stored_total")
    rc, s, err = loadgen(meterd.base_url, "--format", "single", "--rate", "400", "--duration", "1",
                         "--connections", "16", "--threads", "2", "--verify")
    assert rc == 0, (s, err)
    # 400 due in the second: a schedule that fell behind sends fewer, none due after it is sent
    assert 380 <= s["requests"] <= 400 and s["errors"] == 0, s
    assert s["status"] == {"202": s["requests"]}
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"]
    assert s["verify"]["ok"] and s["verify"]["stored"] == s["readings_ok"] == s["requests"]
    assert metric_sum(meterd.metrics(), "meterd_readings_stored_total") - before == s["requests"]
