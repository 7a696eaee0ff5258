"""Real PostgreSQL, RabbitMQ and Redis for bench/distributed.sh, with the integration-test
harness (tests/integration/servers.py: free loopback ports, a temporary directory, the
su/ownership details of ../shared/TESTING.md).

    dist_servers.py start DIR   starts the three servers (in parallel) under DIR, writes
                                DIR/servers.env (shell variables) and DIR/servers.json
    dist_servers.py db DIR NAME creates an empty database NAME, prints its URL
    dist_servers.py stop DIR    stops whatever DIR/servers.json lists (safe to repeat)
    dist_servers.py purge DIR amqp QUEUE | redis STREAM
                                empties the ingest queue (meterd api may keep running)
    dist_servers.py measure DIR OUT.json --seconds S [--worker URL]... [--pid NAME=PID]...
                                one measurement window: CPU of the servers and of the named
                                processes, and with --worker the readings the workers stored
                                (meterd_readings_stored_total); ends early once the queue is empty

The servers outlive this process (PostgreSQL and RabbitMQ run under su as their own users):
`stop` always stops them with their own stop command.
"""
import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import servers  # noqa: E402


def state_path(d):
    return os.path.join(d, "servers.json")


def save(d, st):
    with open(state_path(d), "w") as f:
        json.dump(st, f)


def start(d):
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    parent = os.path.dirname(os.path.abspath(d))
    while parent != "/":  # postgres and rabbitmq must reach their directories under d
        if not os.stat(parent).st_mode & 0o001:
            sys.stderr.write("%s is not traversable by the postgres and rabbitmq users: "
                             "chmod 755 it (mktemp -d makes 0700)\n" % parent)
            return 1
        parent = os.path.dirname(parent)
    pg, mq, rd = servers.Postgres(d), servers.RabbitMQ(d), servers.Redis(d)
    # Written before anything starts, so that `stop` finds a half-started set too.
    st = {"pg_data": pg.data, "pg_port": pg.port, "mq_node": mq.node, "mq_port": mq.port,
          "mq_dist_port": mq.dist_port, "mq_pid_file": mq.env()["RABBITMQ_PID_FILE"],
          "redis_port": rd.port}
    save(d, st)
    errors = []

    def run(s):
        try:
            s.start()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("%s: %s" % (type(s).__name__, e))

    threads = [threading.Thread(target=run, args=(s,)) for s in (pg, mq, rd)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.stderr.write("\n".join(errors) + "\n")
        stop(d)
        return 1
    st["redis_pid"] = rd.proc.pid
    save(d, st)
    with open(os.path.join(d, "servers.env"), "w") as f:
        f.write("PG_PORT=%d\nRABBITMQ_URL=%s\nRABBITMQ_NODE=%s\nREDIS_HOST=127.0.0.1\n"
                "REDIS_PORT=%d\nPG_BIN=%s\n" % (pg.port, mq.url, mq.node, rd.port, servers.PG_BIN))
    return 0


def db(d, name):
    with open(state_path(d)) as f:
        st = json.load(f)
    pg = servers.Postgres(d)
    pg.port = st["pg_port"]
    print(pg.create_database(name))
    return 0


def stop(d):
    try:
        with open(state_path(d)) as f:
            st = json.load(f)
    except FileNotFoundError:
        return 0
    rc = 0
    # Redis is our child only while `start` runs: stop it by SHUTDOWN on its port.
    rd = servers.Redis(d)
    rd.port = st["redis_port"]
    if servers.port_open(rd.port):
        try:
            rd.client().shutdown(nosave=True)
        except Exception:  # noqa: BLE001 - the connection drops as it exits
            pass
    mq = servers.RabbitMQ(d)
    mq.node, mq.port, mq.dist_port = st["mq_node"], st["mq_port"], st["mq_dist_port"]
    try:
        mq.stop()  # rabbitmqctl stop when its distribution port is open; removes crash dumps
    except Exception as e:  # noqa: BLE001 - keep stopping the others
        sys.stderr.write("stopping rabbitmq: %s\n" % e)
        rc = 1
    pg = servers.Postgres(d)
    pg.data = st["pg_data"]
    try:
        pg.stop()  # pg_ctl stop -m fast when postmaster.pid exists
    except Exception as e:  # noqa: BLE001
        sys.stderr.write("stopping postgres: %s\n" % e)
        rc = 1
    os.remove(state_path(d))
    return rc


def load(d):
    with open(state_path(d)) as f:
        return json.load(f)


def purge(d, kind, name):
    st = load(d)
    if kind == "amqp":
        import pika
        c = pika.BlockingConnection(pika.URLParameters(
            "amqp://guest:guest@127.0.0.1:%d/" % st["mq_port"]))
        try:
            c.channel().queue_purge(name)
        finally:
            c.close()
    else:  # entries nobody read yet: XTRIM keeps the stream and its consumer group
        rd = servers.Redis(d)
        rd.port = st["redis_port"]
        rd.client().xtrim(name, maxlen=0, approximate=False)
    return 0


# -- one measurement window -------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def proc_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12]), int(fields[1])  # utime+stime, ppid
    except (OSError, IndexError, ValueError):
        return None, None


def all_ppids():
    out = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            t, ppid = proc_ticks(int(e))
            if t is not None:
                out[int(e)] = (t, ppid)
    return out


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def groups(d, st, named):
    """name -> set of pids: the named processes, PostgreSQL (postmaster and its backends) and
    the brokers."""
    procs = all_ppids()
    g = {name: set(pids) for name, pids in named.items()}
    pm = read_pid(os.path.join(st["pg_data"], "postmaster.pid"))
    if pm:
        g["PostgreSQL"] = {pm} | {p for p, (_, pp) in procs.items() if pp == pm}
    mq = read_pid(st["mq_pid_file"])
    if mq:
        g["RabbitMQ"] = {mq}
    if st.get("redis_pid"):
        g["Redis"] = {st["redis_pid"]}
    return {k: {p: procs[p][0] for p in v if p in procs} for k, v in g.items()}


def machine_ticks():
    """(busy, total) jiffies of all cores (/proc/stat; idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user … steal (guest is in user)
    return sum(v) - v[3] - v[4], sum(v)


def metrics(url):
    out = {}
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
    return out


def worker_sample(urls):
    ms = [metrics(u) for u in urls]
    return {"stored": sum(m.get("meterd_readings_stored_total", 0) for m in ms),
            "depth": max(m.get("meterd_queue_depth", 0) for m in ms),
            "txn": sum(m.get("meterd_store_apply_seconds_count", 0) for m in ms),
            "txn_s": sum(m.get("meterd_store_apply_seconds_sum", 0) for m in ms)}


def measure(d, out, args):
    seconds, urls, named = 10.0, [], {}
    it = iter(args)
    for a in it:
        if a == "--seconds":
            seconds = float(next(it))
        elif a == "--worker":
            urls.append(next(it))
        elif a == "--pid":
            name, _, pids = next(it).partition("=")
            named.setdefault(name, set()).update(int(p) for p in pids.split(",") if p)
    st = load(d)
    g0, m0, t0 = groups(d, st, named), machine_ticks(), time.monotonic()
    w0 = worker_sample(urls) if urls else None
    # (time, stored) at each observed change: commits are what moves the count, so the rate
    # between the first and the last observed commit is not quantised by the window's ends
    changes, drained = [], False
    stored = w0["stored"] if w0 else 0
    while time.monotonic() - t0 < seconds:
        time.sleep(0.1)
        if not urls:
            continue
        w = worker_sample(urls)
        now = time.monotonic()
        if w["stored"] != stored:
            stored = w["stored"]
            changes.append((now, stored))
        elif w["depth"] == 0 and now - (changes[-1][0] if changes else t0) > 0.6:
            drained = True  # empty, and nothing stored for longer than the stats cache
            break
    g1, m1, t1 = groups(d, st, named), machine_ticks(), time.monotonic()
    w1 = worker_sample(urls) if urls else None
    cpu = {}
    for k, pids in g1.items():
        ticks = sum(t - g0.get(k, {}).get(p, 0) for p, t in pids.items())
        cpu[k] = round(100.0 * ticks / TICK / (t1 - t0), 1)
    busy, total = m1[0] - m0[0], max(1, m1[1] - m0[1])
    res = {"elapsed_s": t1 - t0, "cpu_pct": cpu, "drained": drained,
           "machine_busy_pct": round(100.0 * os.cpu_count() * busy / total, 1),
           "cores": os.cpu_count()}
    if urls:
        n = w1["stored"] - w0["stored"]
        txn = w1["txn"] - w0["txn"]
        if len(changes) >= 3:
            (ta, sa), (tb, sb) = changes[0], changes[-1]
            rate = (sb - sa) / (tb - ta)
        else:
            rate = n / max(1e-9, (changes[-1][0] if drained and changes else t1) - t0)
        if drained and changes:
            res["elapsed_s"] = changes[-1][0] - t0
        res.update(stored=n, readings_per_s=rate, workers=len(urls), depth_end=w1["depth"],
                   transactions=txn, txn_ms=1000.0 * (w1["txn_s"] - w0["txn_s"]) / max(txn, 1),
                   readings_per_txn=n / max(txn, 1))
    with open(out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    cmds = ("start", "stop", "db", "purge", "measure")
    if len(sys.argv) < 3 or sys.argv[1] not in cmds:
        sys.exit("usage: dist_servers.py start|stop DIR | db DIR NAME | purge DIR amqp|redis NAME"
                 " | measure DIR OUT.json --seconds S [--worker URL]... [--pid NAME=PID,...]...")
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "start":
        sys.exit(start(d))
    if cmd == "stop":
        sys.exit(stop(d))
    if cmd == "db":
        sys.exit(db(d, sys.argv[3]))
    if cmd == "purge":
        sys.exit(purge(d, sys.argv[3], sys.argv[4]))
    sys.exit(measure(d, sys.argv[3], sys.argv[4:]))
