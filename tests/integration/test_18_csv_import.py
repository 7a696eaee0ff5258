"""CSV import: `meterd import FILE.csv` and `meterd serve --seed-csv FILE`."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import METERD_BIN, Meterd, _finish, embedded_only, run_meterd

CSV = ("time,meterusage\n"
       "2019-01-01 00:15:00,55.09\n"
       "2019-01-01 00:30:00,54.64\n"
       "2019-01-01 00:45:00,55.18\n")
ROWS = [("2019-01-01T00:15:00Z", 55.09), ("2019-01-01T00:30:00Z", 54.64),
        ("2019-01-01T00:45:00Z", 55.18)]


@pytest.fixture
def servers(tmp_path):
    """Starts meterd serve on a given data dir: servers(data_dir, extra_args=[...])."""
    made = []

    def make(data_dir, extra_args=(), start=True):
        d = tmp_path / ("log%d" % len(made))
        d.mkdir()
        srv = Meterd(d, extra_args=extra_args, data_dir=data_dir)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        _finish(srv)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return str(path)


def run_import(path, data_dir, *args, expect_rc=0):
    p = run_meterd("import", path, "--data-dir", str(data_dir), *args,
                   env={"ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1"}, timeout=120)
    assert p.returncode == expect_rc, (p.returncode, p.stdout, p.stderr)
    assert "AddressSanitizer" not in p.stderr and "runtime error:" not in p.stderr, p.stderr
    if expect_rc:
        return p
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, (p.stdout, p.stderr)
    return json.loads(lines[-1])


def rows_of(srv, device="meterusage", **params):
    return [(x["ts"], x["value"]) for x in srv.readings(device, **params)]


def test_import_prints_a_summary_and_readings_read_back(tmp_path, servers):
    f = write(tmp_path / "usage.csv", CSV)
    s = run_import(f, tmp_path / "d")
    assert {k: s[k] for k in ("file", "rows_read", "stored", "skipped", "duplicates")} == {
        "file": f, "rows_read": 3, "stored": 3, "skipped": 0, "duplicates": 0}
    srv = servers(tmp_path / "d")
    d = srv.get("/api/v1/devices/meterusage").json()
    assert d["kind"] == "meter"
    got = srv.readings("meterusage")
    assert [(x["metric"], x["ts"], x["value"], x["status"]) for x in got] == [
        ("meterusage", ts, v, "valid") for ts, v in ROWS]


def test_importing_the_same_file_again_adds_nothing(tmp_path, servers):
    f = write(tmp_path / "usage.csv", CSV)
    d = tmp_path / "d"
    assert run_import(f, d)["stored"] == 3
    again = run_import(f, d)
    assert (again["rows_read"], again["stored"], again["duplicates"], again["skipped"]) == (
        3, 0, 3, 0)
    assert rows_of(servers(d)) == ROWS


def test_device_option_names_the_device(tmp_path, servers):
    f = write(tmp_path / "usage.csv", CSV)
    assert run_import(f, tmp_path / "d", "--device", "house-7")["stored"] == 3
    srv = servers(tmp_path / "d")
    assert rows_of(srv, "house-7") == ROWS
    assert srv.get("/api/v1/devices/meterusage").status_code == 404


def test_nan_empty_and_non_numeric_rows_are_skipped_and_counted(tmp_path, servers):
    f = write(tmp_path / "bad.csv", "time,meterusage\n"
              "2019-01-01 00:15:00,55.09\n"
              "2019-01-01 00:30:00,NaN\n"
              "2019-01-01 00:45:00,\n"
              "2019-01-01 01:00:00,abc\n"
              "2019-01-01 01:15:00,inf\n"
              "not a time,1.0\n"
              "2019-01-01 01:30:00,1.5,extra\n"
              "2019-01-01 01:45:00,12.5\n")
    s = run_import(f, tmp_path / "d")
    assert (s["rows_read"], s["stored"], s["skipped"], s["duplicates"]) == (8, 2, 6, 0), s
    assert rows_of(servers(tmp_path / "d")) == [("2019-01-01T00:15:00Z", 55.09),
                                                ("2019-01-01T01:45:00Z", 12.5)]


def test_bom_crlf_quoted_fields_and_blank_lines(tmp_path, servers):
    f = write(tmp_path / "excel.csv", b"\xef\xbb\xbf" + (
        "time,meterusage\r\n"
        "\r\n"
        '"2019-01-01 00:15:00","55.09"\r\n'
        "\r\n"
        '2019-01-01 00:30:00,"54.64"\r\n'
        "   \r\n"
        '"2019-01-01 00:45:00",55.18').encode())
    s = run_import(f, tmp_path / "d")
    assert (s["rows_read"], s["stored"], s["skipped"]) == (3, 3, 0), s
    assert rows_of(servers(tmp_path / "d")) == ROWS


def test_uppercase_header_and_swapped_columns(tmp_path, servers):
    f = write(tmp_path / "swapped.csv", "MeterUsage,Time\n55.09,2019-01-01 00:15:00\n")
    assert run_import(f, tmp_path / "d")["stored"] == 1
    got = servers(tmp_path / "d").readings("meterusage")
    assert [(x["metric"], x["ts"], x["value"]) for x in got] == [
        ("meterusage", "2019-01-01T00:15:00Z", 55.09)]


def test_missing_file_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope.csv")
    p = run_import(missing, tmp_path / "d", expect_rc=1)
    assert "cannot open %s" % missing in p.stderr and "No such file" in p.stderr, p.stderr
    assert p.stdout.strip() == ""


def test_file_without_a_time_header_is_a_clear_error(tmp_path):
    f = write(tmp_path / "h.csv", "when,meterusage\n2019-01-01 00:15:00,1\n")
    p = run_import(f, tmp_path / "d", expect_rc=1)
    assert "missing column 'time'" in p.stderr, p.stderr


def test_import_help_works():
    p = run_meterd("import", "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Usage: meterd import FILE.csv") and "--device" in p.stdout
    p = run_meterd("import")
    assert p.returncode == 2 and "usage: meterd import" in p.stderr


@embedded_only("the data-dir lock is the WAL's")
def test_import_while_a_server_holds_the_data_dir_fails_clearly(tmp_path, servers):
    d = tmp_path / "d"
    srv = servers(d)
    f = write(tmp_path / "usage.csv", CSV)
    p = run_import(f, d, expect_rc=1)
    assert "in use by another meterd process" in p.stderr, p.stderr
    srv.drained()
    assert srv.get("/api/v1/devices/meterusage").status_code == 404
    assert srv.get("/health").status_code == 200


def peak_rss_kb(argv, env):
    """Runs argv; returns (CompletedProcess-like tuple, peak RSS in kB)."""
    if os.path.exists("/usr/bin/time"):
        p = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True,
                           env=env, timeout=240)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        assert m, p.stderr[-2000:]
        return p, int(m.group(1))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = 0
    while proc.poll() is None:
        try:
            with open("/proc/%d/status" % proc.pid) as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), peak


def is_asan_binary():
    with open(METERD_BIN, "rb") as f:
        return b"__asan_init" in f.read()


@embedded_only("imports into the data directory's WAL and SQLite store")
def test_200k_row_file_imports_in_bounded_memory(tmp_path, servers):
    n = 200_000
    f = tmp_path / "big.csv"
    base = 1546300800  # 2019-01-01T00:00:00Z
    with open(f, "w") as out:
        out.write("time,meterusage\n")
        for i in range(n):
            t = time.gmtime(base + i * 60)
            out.write("%s,%d.%02d\n" % (time.strftime("%Y-%m-%d %H:%M:%S", t), i % 1000, i % 100))
    env = dict(os.environ, ASAN_OPTIONS="abort_on_error=0:detect_leaks=1")
    p, rss_kb = peak_rss_kb([METERD_BIN, "import", str(f), "--data-dir", str(tmp_path / "d")],
                            env)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
    assert (s["rows_read"], s["stored"], s["skipped"], s["duplicates"]) == (n, n, 0, 0), s
    # Under ASan the 256 MB free quarantine and shadow memory make RSS meaningless: no bound.
    if not is_asan_binary():
        assert rss_kb < 64 * 1024, "import peak RSS %d kB over 64 MB" % rss_kb
    srv = servers(tmp_path / "d")
    m = srv.get("/metrics", headers={"Accept": "application/json"}).json()
    assert m["store"]["readings"] == n
    last = srv.get("/api/v1/devices/meterusage/live").json()["live"]
    t = time.gmtime(base + (n - 1) * 60)
    assert [(x["ts"], x["value"]) for x in last] == [
        (time.strftime("%Y-%m-%dT%H:%M:%SZ", t), float("%d.%02d" % ((n - 1) % 1000,
                                                                    (n - 1) % 100)))]


def test_seed_csv_seeds_at_start_and_is_idempotent_across_restarts(tmp_path, servers):
    f = write(tmp_path / "seed.csv", CSV + "2019-01-01 01:00:00,NaN\n")
    srv = servers(tmp_path / "d", extra_args=["--seed-csv", f])
    hits = srv.wait_log(lambda l: l.get("event") == "seed_done", timeout=20)
    assert hits, srv.stderr_text()
    assert (hits[0].get("rows"), hits[0].get("published"), hits[0].get("skipped")) == (4, 3, 1)
    srv.drained()
    assert rows_of(srv) == ROWS
    srv.restart()
    assert srv.wait_log(lambda l: l.get("event") == "seed_done", timeout=20), srv.stderr_text()
    srv.drained()
    assert rows_of(srv) == ROWS
    m = srv.get("/metrics", headers={"Accept": "application/json"}).json()
    assert m["store"]["readings"] == 3
    pm = srv.metrics()  # summed over the processes (the worker's in distributed mode)
    assert (pm.get("meterd_readings_duplicates_total"), pm.get("meterd_readings_stored_total", 0)
            ) == (3, 0)
