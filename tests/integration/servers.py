"""Real PostgreSQL 15, RabbitMQ 3.10 and Redis 7 for the distributed-mode tests.

Each server runs on a free loopback port in its own temporary directory (see ../shared/TESTING.md
for why it is done this way on Debian 12 as root): PostgreSQL and RabbitMQ drop to their own
users, so the directory is 0755 and each server gets a subdirectory it owns. Servers started
through `su` are not our children: they are always stopped with their own stop command
(pg_ctl stop -m fast, rabbitmqctl stop, redis SHUTDOWN NOSAVE), also when a test fails.

    pg = Postgres(tmpdir).start();   pg.create_database("x") -> "postgres://postgres@127.0.0.1:P/x"
    mq = RabbitMQ(tmpdir).start();   mq.url -> "amqp://guest:guest@127.0.0.1:P/", mq.node
    rd = Redis(tmpdir).start();      rd.host, rd.port, rd.client()

Every server can be stop()ped and start()ed again on the same port and data (fault tests).
"""
import os
import shlex
import shutil
import socket
import subprocess
import time

PG_BIN = "/usr/lib/postgresql/15/bin"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/sbin/rabbitmqctl"  # the Debian wrapper runs it as rabbitmq (cookie)
REDIS_SERVER = "/usr/bin/redis-server"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(pred, timeout, what, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    tail = ""
    if log and os.path.exists(log):
        with open(log, "rb") as f:
            tail = f.read()[-4000:].decode("utf-8", "replace")
    raise RuntimeError("%s not ready after %.0f s\n%s" % (what, timeout, tail))


def owned_dir(path, user):
    os.makedirs(path, exist_ok=True)
    shutil.chown(path, user, user)
    os.chmod(path, 0o700 if user == "postgres" else 0o755)
    return path


def open_base(path):
    """The temp dir itself must be traversable by the server users."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def as_user(user, cmd, **kw):
    """Runs a shell command line as user (su); returns CompletedProcess."""
    return subprocess.run(["su", user, "-s", "/bin/sh", "-c", cmd], capture_output=True,
                          text=True, **kw)


class Postgres:
    """initdb + postgres as user postgres, trust auth, on 127.0.0.1:port."""

    def __init__(self, base):
        self.base = open_base(str(base))
        self.dir = os.path.join(self.base, "pg")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        self.proc = None
        self._initdb_done = False

    def url(self, db="postgres"):
        return "postgres://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def start(self, timeout=30):
        if not self._initdb_done:
            owned_dir(self.dir, "postgres")
            r = as_user("postgres", "%s/initdb -D %s -A trust -U postgres >%s 2>&1"
                        % (PG_BIN, shlex.quote(self.data), shlex.quote(self.dir + "/initdb.log")),
                        timeout=120)
            if r.returncode != 0:
                raise RuntimeError("initdb failed: %s %s" % (r.stdout, r.stderr))
            self._initdb_done = True
        cmd = ("exec %s/postgres -D %s -p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on "
               "-c max_connections=200 >>%s 2>&1"
               % (PG_BIN, shlex.quote(self.data), self.port, shlex.quote(self.dir),
                  shlex.quote(self.log)))
        self.proc = subprocess.Popen(["su", "postgres", "-s", "/bin/sh", "-c", cmd],
                                     stdin=subprocess.DEVNULL)
        wait_for(self.ready, timeout, "postgres on port %d" % self.port, self.log)
        return self

    def ready(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("postgres exited with %s" % self.proc.returncode)
        return subprocess.run([PG_BIN + "/pg_isready", "-q", "-h", "127.0.0.1", "-p",
                               str(self.port)]).returncode == 0

    def running(self):
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def stop(self):
        if self.running():
            as_user("postgres", "%s/pg_ctl -D %s stop -m fast -w -t 60"
                    % (PG_BIN, shlex.quote(self.data)), timeout=90)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def connect(self, db="postgres", autocommit=True):
        import psycopg2
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db,
                             connect_timeout=10)
        c.autocommit = autocommit
        return c

    def create_database(self, name):
        """A fresh empty database; returns its URL."""
        c = self.connect()
        try:
            with c.cursor() as cur:
                cur.execute('DROP DATABASE IF EXISTS "%s"' % name)
                cur.execute('CREATE DATABASE "%s"' % name)
        finally:
            c.close()
        return self.url(name)


class RabbitMQ:
    """rabbitmq-server as user rabbitmq, node name@localhost, no plugins."""

    def __init__(self, base, name=None):
        self.base = open_base(str(base))
        self.dir = os.path.join(self.base, "rabbitmq")
        self.port = free_port()
        self.dist_port = free_port()
        self.node = "%s@localhost" % (name or "meterdtest%d" % self.port)
        self.url = "amqp://guest:guest@127.0.0.1:%d/" % self.port
        self.log = os.path.join(self.dir, "startup.log")
        self.proc = None

    def env(self):
        d = self.dir
        return {
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": d + "/mnesia",
            "RABBITMQ_LOG_BASE": d + "/log",
            "RABBITMQ_FEATURE_FLAGS_FILE": d + "/feature_flags",
            "RABBITMQ_PID_FILE": d + "/rabbitmq.pid",
            "RABBITMQ_ENABLED_PLUGINS_FILE": d + "/enabled_plugins",
            "RABBITMQ_CONFIG_FILE": d + "/rabbitmq.conf",
            "HOME": "/var/lib/rabbitmq",
        }

    def start(self, timeout=60):
        owned_dir(self.dir, "rabbitmq")
        for sub in ("mnesia", "log"):
            owned_dir(os.path.join(self.dir, sub), "rabbitmq")
        plugins = os.path.join(self.dir, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            # the tests fill queues quickly; do not let the disk alarm block publishers
            f.write("disk_free_limit.absolute = 50MB\nloopback_users = none\n")
        for p in (plugins, os.path.join(self.dir, "rabbitmq.conf")):
            shutil.chown(p, "rabbitmq", "rabbitmq")
        env = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in self.env().items())
        cmd = "cd %s && exec env %s %s >>%s 2>&1" % (
            shlex.quote(self.dir), env, RABBITMQ_SERVER, shlex.quote(self.log))
        self.proc = subprocess.Popen(["su", "rabbitmq", "-s", "/bin/sh", "-c", cmd],
                                     stdin=subprocess.DEVNULL)
        try:
            wait_for(self.ready, timeout, "rabbitmq %s on port %d" % (self.node, self.port),
                     self.log)
        except Exception:
            self.stop()
            raise
        return self

    def ready(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("rabbitmq-server exited with %s; log:\n%s"
                               % (self.proc.returncode, self._log_tail()))
        if not port_open(self.port):
            return False
        try:
            import pika
            c = pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1"))
            c.close()
            return True
        except Exception:
            return False

    def _log_tail(self):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def ctl(self, *args, timeout=60):
        return subprocess.run([RABBITMQCTL, "-n", self.node, *args], capture_output=True,
                              text=True, timeout=timeout)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None or port_open(self.dist_port):
            try:
                self.ctl("stop", timeout=60)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        for d in (self.dir, "/var/lib/rabbitmq"):
            dump = os.path.join(d, "erl_crash.dump")
            try:
                if os.path.exists(dump) and os.path.getmtime(dump) > time.time() - 3600 * 3:
                    os.remove(dump)
            except OSError:
                pass

    def restart(self):
        self.stop()
        return self.start()

    def connection(self):
        import pika
        return pika.BlockingConnection(pika.URLParameters(self.url))


class Redis:
    """redis-server with AOF (appendfsync always: a 201 from meterd means on disk)."""

    def __init__(self, base):
        self.base = open_base(str(base))
        self.dir = os.path.join(self.base, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log = os.path.join(self.dir, "redis.log")
        self.proc = None

    def start(self, timeout=20):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir,
             "--logfile", self.log], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_for(self.ready, timeout, "redis on port %d" % self.port, self.log)
        return self

    def ready(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
        try:
            return self.client().ping()
        except Exception:
            return False

    def client(self, **kw):
        import redis
        kw.setdefault("socket_timeout", 10)
        return redis.Redis(host=self.host, port=self.port, **kw)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.client().shutdown(nosave=True)
            except Exception:
                pass  # the connection drops as it exits
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()
