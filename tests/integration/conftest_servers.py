"""Distributed backends for the integration harness (imported by conftest.py).

METERD_TEST_BACKEND selects what a `Meterd` server object runs:

    embedded (default)  one `meterd serve` (WAL queue + SQLite), as before
    amqp+pg             one `meterd api` and one `meterd worker` on RabbitMQ + PostgreSQL
    redis+pg            one `meterd api` and one `meterd worker` on Redis Streams + PostgreSQL

so the same tests run unchanged against every backend. The real servers are started once per
session on first use (servers.py) and always stopped at the end. Isolation between server
objects: everything is keyed by the data directory, as the embedded store is: one PostgreSQL
database, one set of RabbitMQ exchange/queue names or one Redis stream per data directory (a
restart, or a second server object on the same directory, sees the same data).

Session fixtures for the test_3x files: pg_server, rabbitmq_server, redis_server.
"""
import atexit
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest
import requests

import servers

BACKENDS = ("embedded", "amqp+pg", "redis+pg")
BACKEND = os.environ.get("METERD_TEST_BACKEND", "embedded") or "embedded"
if BACKEND not in BACKENDS:
    raise RuntimeError("METERD_TEST_BACKEND=%r: expected one of %s" % (BACKEND, ", ".join(BACKENDS)))
DISTRIBUTED = BACKEND != "embedded"
QUEUE = {"amqp+pg": "amqp", "redis+pg": "redis"}.get(BACKEND, "wal")


def embedded_only(reason):
    """Marks a test that only makes sense with `meterd serve` (WAL queue, SQLite, data dir)."""
    return pytest.mark.skipif(DISTRIBUTED, reason="embedded only (METERD_TEST_BACKEND=%s): %s"
                              % (BACKEND, reason))


# -- session servers ---------------------------------------------------------------------------
class _Registry:
    """Real servers, started on first use, stopped at session end (and at exit, as a net)."""

    def __init__(self):
        self.base = None
        self.pg = self.rabbitmq = self.redis = None
        self.databases = set()

    def _base(self):
        if self.base is None:
            self.base = tempfile.mkdtemp(prefix="meterd-servers-")
            os.chmod(self.base, 0o755)
        return self.base

    def get_pg(self):
        if self.pg is None:
            pg = servers.Postgres(self._base())
            self.pg = pg
            pg.start()
        return self.pg

    def get_rabbitmq(self):
        if self.rabbitmq is None:
            mq = servers.RabbitMQ(self._base())
            self.rabbitmq = mq
            mq.start()
        return self.rabbitmq

    def get_redis(self):
        if self.redis is None:
            rd = servers.Redis(self._base())
            self.redis = rd
            rd.start()
        return self.redis

    def database(self, name):
        """URL of database name, created (empty) on first use in this session."""
        pg = self.get_pg()
        if name not in self.databases:
            pg.create_database(name)
            self.databases.add(name)
        return pg.url(name)

    def stop_all(self):
        for s in (self.rabbitmq, self.redis, self.pg):
            if s is not None:
                try:
                    s.stop()
                except Exception as e:  # keep stopping the others
                    print("stopping %r failed: %s" % (s, e))
        self.pg = self.rabbitmq = self.redis = None


REGISTRY = _Registry()
FAULTS = _Registry()  # servers the fault tests stop and restart: nobody else uses them


def _kill_leftovers():
    """A fixture that failed before its teardown leaves meterd processes behind: end them."""
    for srv in list(LIVE.values()):
        for p in srv._procs():
            if p.poll() is None:
                p.kill()
                p.wait()


atexit.register(REGISTRY.stop_all)
atexit.register(FAULTS.stop_all)


SERVER_TESTS = ("test_30_", "test_31_", "test_32_", "test_33_", "test_34_")


def pytest_collection_modifyitems(config, items):
    """The test_3x files start real servers and take minutes: they run when named on the
    command line or with METERD_TEST_SERVERS=1, not in a plain `pytest tests/integration`."""
    if os.environ.get("METERD_TEST_SERVERS") == "1":
        return
    named = " ".join(str(a) for a in config.args)
    skip = pytest.mark.skip(reason="real RabbitMQ/Redis/PostgreSQL tests: name the file or set "
                                   "METERD_TEST_SERVERS=1")
    for item in items:
        base = os.path.basename(str(item.fspath))
        if base.startswith(SERVER_TESTS) and base not in named:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    _kill_leftovers()
    REGISTRY.stop_all()
    FAULTS.stop_all()


@pytest.fixture(scope="session")
def pg_server():
    return REGISTRY.get_pg()


@pytest.fixture(scope="session")
def rabbitmq_server():
    return REGISTRY.get_rabbitmq()


@pytest.fixture(scope="session")
def redis_server():
    return REGISTRY.get_redis()


@pytest.fixture(scope="session")
def fault_servers():
    """A second set of servers (get_pg(), get_rabbitmq(), get_redis(), database(name)) for
    tests that stop and restart them."""
    return FAULTS


# -- per data directory backend configuration -----------------------------------------------
def key_for(data_dir):
    return "t" + hashlib.sha1(os.path.realpath(str(data_dir)).encode()).hexdigest()[:12]


def amqp_env(mq, key):
    return {"METERD_QUEUE": "amqp", "RABBITMQ_URL": mq.url,
            "RABBITMQ_INGEST_EXCHANGE": key + ".ingest.exchange",
            "RABBITMQ_INGEST_QUEUE": key + ".ingest.queue",
            "RABBITMQ_INGEST_ROUTING_KEY": "meter.reading.ingested",
            "RABBITMQ_DLQ_QUEUE": key + ".ingest.dlq",
            "RABBITMQ_WORKER_EXCHANGE": key + ".worker.events.exchange"}


def redis_env(rd, key):
    return {"METERD_QUEUE": "redis", "REDIS_HOST": rd.host, "REDIS_PORT": str(rd.port),
            "REDIS_STREAM": key + "_readings", "CONSUMER_GROUP": "processing_group"}


def backend_env(data_dir, backend=BACKEND):
    """Environment selecting the distributed backend for the server on data_dir."""
    if backend == "embedded":
        return {}
    key = key_for(data_dir)
    env = {"DATABASE_URL": REGISTRY.database(key)}
    if backend == "amqp+pg":
        env.update(amqp_env(REGISTRY.get_rabbitmq(), key))
    else:
        env.update(redis_env(REGISTRY.get_redis(), key))
    return env


def run_env(args):
    """Extra environment for a short `meterd import … --data-dir D` under a distributed backend."""
    if not DISTRIBUTED or not args or args[0] != "import":
        return {}
    args = list(args)
    for i, a in enumerate(args):
        if a == "--data-dir" and i + 1 < len(args):
            return backend_env(args[i + 1])
        if a.startswith("--data-dir="):
            return backend_env(a.split("=", 1)[1])
    return {}


# -- metrics of several processes ------------------------------------------------------------
def _summed(name):
    base = name.split("{", 1)[0]
    return base.endswith(("_total", "_bucket", "_sum", "_count"))


def merge_metrics(parts):
    """Counters and histograms are summed over processes; gauges take the largest value."""
    out = {}
    for m in parts:
        for k, v in m.items():
            if k not in out:
                out[k] = v
            elif _summed(k):
                out[k] += v
            else:
                out[k] = max(out[k], v)
    return out


_DRAIN_COUNTERS = ("meterd_batches_applied_total", "meterd_batches_redelivered_total",
                   "meterd_batches_dead_lettered_total", "meterd_readings_stored_total",
                   "meterd_readings_duplicates_total")
STATS_CACHE_S = 0.3  # the amqp/redis backends cache broker counts for 250 ms


def wait_quiet(urls, worker_urls, get_metrics, timeout=30.0):
    """Drained in distributed mode: every process reports queue depth 0 in two samples taken more
    than the backends' stats cache apart, with no worker progress in between (a message the
    broker already pushed to a worker but that it has not taken yet shows in neither count)."""
    deadline = time.monotonic() + timeout
    prev = None
    last = None
    while time.monotonic() < deadline:
        try:
            ms = [get_metrics(u) for u in urls]
            depth = max(m.get("meterd_queue_depth", 0) for m in ms)
            wm = merge_metrics([get_metrics(u) for u in worker_urls]) if worker_urls else {}
            progress = tuple(wm.get(c, 0) for c in _DRAIN_COUNTERS)
            last = depth
        except requests.RequestException as e:
            last = repr(e)
            prev = None
            time.sleep(0.05)
            continue
        if depth == 0:
            now = time.monotonic()
            if prev is not None and prev[1] == progress and now - prev[0] >= STATS_CACHE_S:
                return
            if prev is None or prev[1] != progress:
                prev = (now, progress)
            time.sleep(STATS_CACHE_S)
        else:
            prev = None
            time.sleep(0.05)
    raise AssertionError("queue not drained after %.0f s (meterd_queue_depth=%r)" % (timeout, last))


# -- the distributed server object ------------------------------------------------------------
LIVE = {}  # base_url -> DistMeterd, for conftest.wait_drained(base_url)


def distributed_meterd(Base, bin_path, get_metrics, free_port):
    """A Meterd subclass running `meterd api` + `meterd worker` instead of `meterd serve`."""

    class DistMeterd(Base):
        """`meterd api` on self.port plus `workers` × `meterd worker` on the backend of
        METERD_TEST_BACKEND; same interface as the embedded server object."""

        def __init__(self, tmp_path, extra_args=(), env=None, port=None, data_dir=None,
                     workers=1, backend=None):
            super().__init__(tmp_path, extra_args=extra_args, env=env, port=port,
                             data_dir=data_dir)
            self.backend = backend or (BACKEND if DISTRIBUTED else "amqp+pg")
            self.queue = {"amqp+pg": "amqp", "redis+pg": "redis"}[self.backend]
            self.worker_ports = [free_port() for _ in range(workers)]
            self.worker_urls = ["http://127.0.0.1:%d" % p for p in self.worker_ports]
            self.wprocs = [None] * workers
            self.wstderr = [None] * workers
            self.worker_stderr_paths = [[] for _ in range(workers)]
            self.key = key_for(self.data_dir)
            LIVE[self.base_url] = self

        def args(self, role="api", port=None):
            return [bin_path, role, "--http-addr", "127.0.0.1:%d" % (port or self.port),
                    "--data-dir", self.data_dir, "--grpc-addr", "", *self.extra_args]

        def _env(self, i=None):
            env = dict(os.environ)
            env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
            env.update(backend_env(self.data_dir, self.backend))
            if self.queue == "redis" and i is not None:
                env["CONSUMER_NAME"] = "%s-w%d" % (self.key, i)
            env.update(self.env)
            return env

        def start(self, wait=True, argv=None):
            assert not self.running(), "already running"
            self.starts += 1
            os.makedirs(self.data_dir, exist_ok=True)
            for i in range(len(self.wprocs)):
                self.start_worker(i, wait=False)
            path = os.path.join(str(self.log_dir), "meterd-api-stderr-%d.log" % self.starts)
            self.stderr_paths.append(path)
            self._stderr = open(path, "wb")
            if argv:  # a test's own command line for `serve`: the api side of it
                argv = [a if a != "serve" else "api" for a in argv]
            self.proc = subprocess.Popen(argv or self.args("api"), stdout=subprocess.DEVNULL,
                                         stderr=self._stderr, env=self._env())
            if wait:
                self.wait_ready()
            return self

        def start_worker(self, i, wait=True):
            if self.wprocs[i] is not None and self.wprocs[i].poll() is None:
                return
            n = len(self.worker_stderr_paths[i]) + 1
            path = os.path.join(str(self.log_dir), "meterd-worker%d-stderr-%d.log" % (i, n))
            self.worker_stderr_paths[i].append(path)
            if self.wstderr[i]:
                self.wstderr[i].close()
            self.wstderr[i] = open(path, "wb")
            self.wprocs[i] = subprocess.Popen(self.args("worker", self.worker_ports[i]),
                                              stdout=subprocess.DEVNULL,
                                              stderr=self.wstderr[i], env=self._env(i))
            if wait:
                self._wait_one(self.wprocs[i], self.worker_urls[i], self.READY_TIMEOUT)

        READY_TIMEOUT = 30.0

        def _wait_one(self, proc, url, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError("meterd %s exited with %d before ready; stderr:\n%s"
                                         % (proc.args[1], proc.returncode, self.stderr_text()))
                try:
                    if requests.get(url + "/ready", timeout=1).status_code == 200:
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.02)
            raise AssertionError("meterd %s not ready after %.0f s; stderr:\n%s"
                                 % (proc.args[1], timeout, self.stderr_text()))

        def wait_ready(self, timeout=READY_TIMEOUT):
            self._wait_one(self.proc, self.base_url, timeout)
            for p, u in zip(self.wprocs, self.worker_urls):
                if p is not None:
                    self._wait_one(p, u, timeout)

        def _procs(self):
            return [p for p in [self.proc, *self.wprocs] if p is not None]

        def stop(self, sig=signal.SIGTERM, timeout=30.0):
            """Signals the api and the workers; returns the api's exit code, or a worker's
            when the api exited 0 and a worker did not."""
            if self.proc is None:
                return None
            # The api first (no new publishes), then the workers drain what it published: a
            # rolling shutdown, and what `serve` does inside one process.
            procs = [p for p in self._procs() if p.poll() is None]
            hung = []
            deadline = time.monotonic() + timeout
            for p in procs:
                p.send_signal(sig)
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    hung.append(p.args[1])
            self._close_logs()
            if hung:
                raise AssertionError("meterd %s did not exit within %.0f s of signal %d"
                                     % (", ".join(hung), timeout, sig))
            rc = self.proc.returncode
            if rc == 0:
                for p in self.wprocs:
                    if p is not None and p.returncode != 0:
                        return p.returncode
            return rc

        def stop_worker(self, i, sig=signal.SIGTERM, timeout=30.0):
            p = self.wprocs[i]
            if p is not None and p.poll() is None:
                p.send_signal(sig)
                p.wait(timeout)
            return p.returncode if p is not None else None

        def _close_logs(self):
            if getattr(self, "_stderr", None):
                self._stderr.close()
            for f in self.wstderr:
                if f:
                    f.close()

        def kill9(self):
            for p in self._procs():
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self._close_logs()

        def running(self):
            return self.proc is not None and self.proc.poll() is None

        def cleanup(self):
            """Teardown: whatever still runs (a worker whose api was killed) is stopped."""
            if any(p.poll() is None for p in self._procs()):
                try:
                    self.stop(timeout=30)
                except AssertionError:
                    pass
            LIVE.pop(self.base_url, None)

        def stderr_text(self, all_runs=False):
            paths = self.stderr_paths if all_runs else self.stderr_paths[-1:]
            for wp in self.worker_stderr_paths:
                paths = paths + (wp if all_runs else wp[-1:])
            text = ""
            for p in paths:
                try:
                    with open(p, "rb") as f:
                        text += f.read().decode("utf-8", "replace")
                except FileNotFoundError:
                    pass
            return text

        def logs(self, all_runs=False, workers=False):
            """JSON log lines of the api (like the one process of `serve`); workers=True adds
            the workers' lines."""
            paths = self.stderr_paths if all_runs else self.stderr_paths[-1:]
            if workers:
                for wp in self.worker_stderr_paths:
                    paths = paths + (wp if all_runs else wp[-1:])
            return [l for p in paths for l in log_lines(p)]

        def wait_log(self, pred, timeout=10.0, workers=False):
            deadline = time.monotonic() + timeout
            while True:
                hits = [l for l in self.logs(workers=workers) if pred(l)]
                if hits or time.monotonic() >= deadline:
                    return hits
                time.sleep(0.05)

        def metrics(self):
            return merge_metrics([get_metrics(u) for u in [self.base_url, *self.live_workers()]])

        def live_workers(self):
            return [u for p, u in zip(self.wprocs, self.worker_urls)
                    if p is not None and p.poll() is None]

        def drained(self, timeout=30.0):
            wait_quiet([self.base_url, *self.live_workers()], self.live_workers(), get_metrics,
                       timeout)

        def backend_env(self):
            """The environment this server's processes get (backend part and test overrides)."""
            env = backend_env(self.data_dir, self.backend)
            env.update(self.env)
            return env

        def sql(self, query, args=None):
            """Runs a query on this server's PostgreSQL database; returns all rows."""
            import psycopg2
            c = psycopg2.connect(self.backend_env()["DATABASE_URL"], connect_timeout=10)
            c.autocommit = True
            try:
                with c.cursor() as cur:
                    cur.execute(query, args)
                    return cur.fetchall() if cur.description else None
            finally:
                c.close()

    return DistMeterd


@pytest.fixture
def dist_factory(tmp_path):
    """Starts distributed servers for the test_3x files, whatever METERD_TEST_BACKEND says:
    dist_factory("amqp+pg", workers=3, env={...}, data_dir=..., start=True). Two objects on one
    data_dir share the database and the queue (e.g. a second api with workers=0)."""
    import conftest
    made = []

    def make(backend, workers=1, env=None, extra_args=(), data_dir=None, start=True, name=None):
        d = tmp_path / (name or "dist%d" % len(made))
        d.mkdir()
        srv = conftest.DistMeterd(d, extra_args=extra_args, env=env, workers=workers,
                                  backend=backend, data_dir=data_dir)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        conftest._finish(srv)


def dist_wait_drained(base_url, get_metrics, timeout):
    srv = LIVE.get(base_url)
    if srv is None:
        return False
    srv.drained(timeout)
    return True


def log_lines(path):
    out = []
    try:
        with open(path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return out
