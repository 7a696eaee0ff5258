"""Harness for the black-box integration tests: starts the real meterd binary.

The binary comes from $METERD_BIN (default: build/meterd under the repo root). Every server gets a
free loopback port and its own data directory; stderr (JSON log lines) goes to a file. A server is
always stopped at teardown, and a sanitizer report in its stderr fails the test that started it.

METERD_TEST_BACKEND=amqp+pg|redis+pg runs the same tests against `meterd api` + `meterd worker` on
real RabbitMQ|Redis and PostgreSQL (conftest_servers.py, servers.py); tests that only make sense
with `meterd serve` are marked @embedded_only. The test_3x files always use the real servers.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests

import conftest_servers
from conftest_servers import (  # noqa: F401 (fixtures and hooks for pytest)
    BACKEND, DISTRIBUTED, dist_factory, embedded_only, fault_servers, pg_server,
    pytest_collection_modifyitems, pytest_sessionfinish, rabbitmq_server, redis_server)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
METERD_BIN = os.environ.get("METERD_BIN") or os.path.join(REPO_ROOT, "build", "meterd")

READY_TIMEOUT = 15.0
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer")


_HANDED_OUT = set()


def free_port():
    """A port nothing listens on and this session has not handed out before: a server object
    picks its ports before any of its processes binds them (api + workers), and the kernel may
    offer a just-closed port again."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def uid(prefix="d"):
    """A device id no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def run_meterd(*args, env=None, timeout=30):
    """Runs a short meterd command (help, dlq list, ...); returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(conftest_servers.run_env(args))
    e.update(env or {})
    return subprocess.run([METERD_BIN, *args], capture_output=True, text=True, env=e,
                          timeout=timeout)


# -- meterd dlq in the distributed tests (test_30, test_31) ----------------------------------
# The worker refuses batches of devices named dlqrefuse-* while this trigger exists: a store
# that keeps refusing a batch (3 attempts) dead-letters it, as a real failure would.
DLQ_REFUSE_SQL = """
CREATE OR REPLACE FUNCTION dlq_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'test refuses device %', NEW.ext_id; END $$;
CREATE TRIGGER dlq_test_refuse BEFORE INSERT ON devices FOR EACH ROW
    WHEN (NEW.ext_id LIKE 'dlqrefuse-%') EXECUTE FUNCTION dlq_test_refuse();
"""
DLQ_FIX_SQL = "DROP TRIGGER dlq_test_refuse ON devices"


def dlq_cmd(env, *args):
    """meterd dlq ARGS with env; fails the test on a sanitizer report."""
    res = run_meterd("dlq", *args, env=env, timeout=60)
    assert not any(m in res.stderr for m in SANITIZER_MARKERS), res.stderr
    return res


def dlq_lines(env, *args):
    res = dlq_cmd(env, *args)
    assert res.returncode == 0, res.stderr
    return [json.loads(l) for l in res.stdout.splitlines() if l.strip()]


def parse_metrics(text):
    """Prometheus text → {"name{labels}": value} (labels kept verbatim)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def metric_sum(metrics, name):
    """Sum of a metric over all its label sets (0 when absent)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def get_metrics(base_url):
    r = requests.get(base_url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return parse_metrics(r.text)


def wait_drained(base_url, timeout=30.0):
    """Polls /metrics until meterd_queue_depth is 0 (the worker applies 202'd batches later)."""
    if conftest_servers.dist_wait_drained(base_url, get_metrics, timeout):
        return
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get_metrics(base_url).get("meterd_queue_depth")
            if last == 0:
                return
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise AssertionError("queue not drained after %.0f s (meterd_queue_depth=%r)" % (timeout, last))


def all_readings(base_url, device, limit=1000, **params):
    """Pages through GET /api/v1/devices/{device}/readings via next_cursor; returns all readings."""
    out, cursor, pages = [], None, 0
    while True:
        q = dict(params, limit=limit)
        if cursor is not None:
            q["cursor"] = cursor
        r = requests.get("%s/api/v1/devices/%s/readings" % (base_url, device), params=q, timeout=30)
        assert r.status_code == 200, (r.status_code, r.text)
        body = r.json()
        out.extend(body["readings"])
        cursor = body["next_cursor"]
        pages += 1
        if cursor is None:
            return out
        assert pages < 100000, "next_cursor never ends"


def reading(device, ts, value, metric="energy", **extra):
    d = {"device": device, "metric": metric, "ts": ts, "value": value}
    d.update(extra)
    return d


class Meterd:
    """One meterd serve process on a fixed port and data directory (kept across restarts)."""

    def __init__(self, tmp_path, extra_args=(), env=None, port=None, data_dir=None):
        self.port = port or free_port()
        self.base_url = "http://127.0.0.1:%d" % self.port
        self.data_dir = str(data_dir or (tmp_path / "data"))
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_dir = tmp_path
        self.proc = None
        self.starts = 0
        self.stderr_paths = []

    # -- process control --------------------------------------------------------------------
    def args(self):
        # gRPC off unless a test asks for it: servers sharing :50051 (SO_REUSEPORT) would
        # answer each other's clients
        return [METERD_BIN, "serve", "--http-addr", "127.0.0.1:%d" % self.port,
                "--data-dir", self.data_dir, "--grpc-addr", "", *self.extra_args]

    def start(self, wait=True, argv=None):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        path = os.path.join(str(self.log_dir), "meterd-stderr-%d.log" % self.starts)
        self.stderr_paths.append(path)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        env.update(self.env)
        self._stderr = open(path, "wb")
        self.proc = subprocess.Popen(argv or self.args(), stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("meterd exited with %d before ready; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            try:
                if requests.get(self.base_url + "/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise AssertionError("meterd not ready after %.0f s; stderr:\n%s"
                             % (timeout, self.stderr_text()))

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Sends sig and waits; returns the exit code (kill -9 after timeout, then raises)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._stderr.close()
                raise AssertionError("meterd did not exit within %.0f s of signal %d"
                                     % (timeout, sig))
        self._stderr.close()
        if self.proc.returncode not in (0, None) and self.proc.returncode != -signal.SIGKILL:
            # pytest shows this under "Captured stderr" when the test then fails
            sys.stderr.write("meterd exited with %d; its stderr ends with:\n%s\n"
                             % (self.proc.returncode, self.stderr_text()[-4000:]))
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    def restart(self, wait=True):
        """Stops (SIGTERM) if still running and starts again on the same port and data dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start(wait=wait)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- logs ----------------------------------------------------------------------------------
    def stderr_text(self, all_runs=False):
        paths = self.stderr_paths if all_runs else self.stderr_paths[-1:]
        text = ""
        for p in paths:
            try:
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                pass
        return text

    def logs(self, all_runs=False):
        """stderr lines that parse as JSON objects (sanitizer output and other noise skipped)."""
        out = []
        for line in self.stderr_text(all_runs).splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_log(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [l for l in self.logs() if pred(l)]
            if hits:
                return hits
            time.sleep(0.05)
        return []

    def sanitizer_report(self):
        text = self.stderr_text(all_runs=True)
        for marker in SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200):i + 3000]
        return None

    # -- HTTP helpers ----------------------------------------------------------------------
    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        return requests.get(self.base_url + path, **kw)

    def post(self, path, body=None, **kw):
        kw.setdefault("timeout", 30)
        if body is not None:
            kw["json"] = body
        return requests.post(self.base_url + path, **kw)

    def post_readings(self, readings, expect=202):
        r = self.post("/api/v1/readings", {"readings": readings})
        if expect is not None:
            assert r.status_code == expect, (r.status_code, r.text)
        return r

    def metrics(self):
        return get_metrics(self.base_url)

    def drained(self, timeout=30.0):
        wait_drained(self.base_url, timeout)

    def readings(self, device, **params):
        return all_readings(self.base_url, device, **params)


def _finish(srv):
    try:
        if hasattr(srv, "cleanup"):
            srv.cleanup()
        if srv.running():
            try:
                srv.stop(timeout=30)
            except AssertionError:
                pass
        elif srv.proc is not None:
            srv._stderr.close()
    finally:
        report = srv.sanitizer_report()
        if report:
            pytest.fail("sanitizer report in meterd stderr:\n" + report, pytrace=False)


# `meterd api` + `meterd worker` on RabbitMQ|Redis + PostgreSQL (conftest_servers.py); with
# METERD_TEST_BACKEND=amqp+pg|redis+pg every test's server object is one of these.
EmbeddedMeterd = Meterd
DistMeterd = conftest_servers.distributed_meterd(EmbeddedMeterd, METERD_BIN, get_metrics, free_port)
if DISTRIBUTED:
    Meterd = DistMeterd


@pytest.fixture
def meterd_factory(tmp_path):
    """Starts servers: meterd_factory(extra_args=[...], env={...}, start=True). All stopped later."""
    servers = []

    def make(extra_args=(), env=None, start=True, name=None):
        d = tmp_path / (name or "srv%d" % len(servers))
        d.mkdir()
        srv = Meterd(d, extra_args=extra_args, env=env)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in servers:
        _finish(srv)


@pytest.fixture
def meterd(meterd_factory):
    """A fresh server with default options, for tests that count or restart."""
    return meterd_factory()


@pytest.fixture(scope="module")
def shared_meterd(tmp_path_factory):
    """One server per test module; tests using it use their own device ids (see uid())."""
    srv = Meterd(tmp_path_factory.mktemp("shared"))
    srv.start()
    yield srv
    _finish(srv)
