"""Distributed mode on Redis Streams + PostgreSQL: `meterd api` and `meterd worker` with redis-py.

Runs whatever METERD_TEST_BACKEND says, against the session's Redis and PostgreSQL. The module's
cluster uses the documented defaults (stream energy_readings, group processing_group, dead
letters in energy_readings:dlq); no other test uses those names on the session server.
"""
import json
import os
import signal
import time
import uuid

import pytest
import requests

from conftest import DLQ_FIX_SQL as FIX_SQL, DLQ_REFUSE_SQL as REFUSE_SQL, dlq_cmd, dlq_lines, uid

STREAM = "energy_readings"
GROUP = "processing_group"
DLQ = STREAM + ":dlq"
CLAIM_IDLE_S = 8  # REDIS_CLAIM_IDLE_MS of the dead_consumer cluster (default 60 s)
CLAIM_EVERY_S = 5


def wait_for(fn, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    return last


def site_reading(device, value=1500.5, ts="2024-01-15T10:30:00Z", site="site-001"):
    return {"site_id": site, "device_id": device, "power_reading": value, "timestamp": ts}


@pytest.fixture(scope="module")
def r(redis_server):
    c = redis_server.client()
    c.delete(STREAM, DLQ)
    return c


@pytest.fixture(scope="module")
def cluster(r, redis_server, pg_server, tmp_path_factory):
    import conftest
    srv = conftest.DistMeterd(tmp_path_factory.mktemp("redis-cluster"), backend="redis+pg",
                              env={"REDIS_STREAM": STREAM, "CONSUMER_GROUP": GROUP})
    srv.start()
    yield srv
    conftest._finish(srv)


@pytest.fixture(scope="module")
def dead_consumer(r, redis_server, pg_server, tmp_path_factory):
    """Set up first, checked last (the claim idle time is 8 s): two workers on their own
    stream; worker 0 is frozen, takes 30 entries (XREADGROUP as its consumer), and is killed
    with them unacknowledged; worker 1 is not running yet."""
    import conftest
    srv = conftest.DistMeterd(tmp_path_factory.mktemp("redis-claim"), backend="redis+pg",
                              workers=2, env={"REDIS_CLAIM_IDLE_MS": str(CLAIM_IDLE_S * 1000)})
    srv.start()
    stream = srv.backend_env()["REDIS_STREAM"]
    srv.stop_worker(1)
    w0 = srv.wprocs[0]
    w0.send_signal(signal.SIGSTOP)
    dev = uid("claim")
    srv.post_readings([{"device": dev, "metric": "energy", "ts": 1773829800000 + i * 1000,
                        "value": float(i)} for i in range(30)])
    consumer = "%s-w0" % srv.key
    # A frozen worker blocked in XREADGROUP still gets the entry (Redis answers the blocked
    # read); otherwise read it as that consumer, as the worker would have.
    time.sleep(0.2)
    r.xreadgroup(GROUP, consumer, {stream: ">"}, count=100)
    pend = r.xpending_range(stream, GROUP, min="-", max="+", count=100)
    assert len(pend) == 1 and pend[0]["consumer"].decode() == consumer, pend  # one batch of 30
    ids = [p["message_id"].decode() for p in pend]
    w0.kill()
    w0.wait()
    killed_at = time.monotonic()
    yield srv, stream, dev, ids, killed_at
    conftest._finish(srv)


def test_claim_scenario_is_set_up_first(dead_consumer):
    """Starts the 60 s idle clock of test_entries_of_a_killed_worker_are_claimed_by_another."""
    srv, stream, dev, ids, _ = dead_consumer
    assert srv.wprocs[0].poll() == -signal.SIGKILL


def test_post_readings_201_stream_id_is_the_redis_entry_id(cluster, r):
    dev = uid("site")
    resp = cluster.post("/readings", site_reading(dev))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "accepted"
    sid = body["stream_id"]
    entries = r.xrange(STREAM, sid, sid)
    assert [e[0].decode() for e in entries] == [sid], (sid, entries)
    fields = {k.decode(): v for k, v in entries[0][1].items()}
    assert "batch" in fields, fields.keys()
    cluster.drained()
    got = cluster.get("/sites/site-001/readings", params={"limit": 10000}).json()
    assert any(x.get("device_id") == dev for x in got.get("readings", got)), got
    # two requests, two increasing ids
    a = cluster.post("/readings", site_reading(dev, ts="2024-01-15T10:31:00Z")).json()
    b = cluster.post("/readings", site_reading(dev, ts="2024-01-15T10:32:00Z")).json()
    assert tuple(map(int, a["stream_id"].split("-"))) < tuple(map(int, b["stream_id"].split("-")))


def _metrics_json(srv):
    time.sleep(0.3)  # past the 250 ms stats cache
    resp = srv.get("/metrics", headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp.json()


def _group(r):
    for g in r.xinfo_groups(STREAM):
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == GROUP:
            return g
    raise AssertionError("no group %s on %s" % (GROUP, STREAM))


def test_metrics_json_reports_stream_length_group_and_pending_from_redis(cluster, r):
    cluster.post("/readings", site_reading(uid("m")))
    cluster.drained()
    cluster.stop_worker(0)
    try:
        # one entry delivered to a probe consumer and not acked, one not delivered at all
        cluster.post("/readings", site_reading(uid("m")))
        probe = r.xreadgroup(GROUP, "probe", {STREAM: ">"}, count=1)
        assert probe, "nothing to read"
        cluster.post("/readings", site_reading(uid("m")))
        m = _metrics_json(cluster)
        g = _group(r)
        assert m["queue_backend"] == "redis", m
        assert m["stream_length"] == r.xlen(STREAM), (m, r.xlen(STREAM))
        assert g["pending"] == 1
        assert m["pending_count"] == 1, m
        groups = {x["name"]: x for x in m["consumer_groups"]}
        assert GROUP in groups, m["consumer_groups"]
        assert groups[GROUP]["pending"] == 1, groups
        assert groups[GROUP]["consumers"] == g["consumers"], (groups, g)
        assert m["queue"]["depth"] == 2, m  # pending + never delivered
    finally:
        for e in r.xreadgroup(GROUP, "probe", {STREAM: "0"}, count=100)[0][1]:
            r.xack(STREAM, GROUP, e[0])
        cluster.start_worker(0)
    cluster.drained()
    m = _metrics_json(cluster)
    assert m["pending_count"] == 0 and m["queue"]["depth"] == 0, m


def test_malformed_entries_xadded_by_hand_end_in_the_dead_letter_stream(cluster, r):
    marker = uuid.uuid4().hex
    bad_json = r.xadd(STREAM, {"payload": '{"request_id":"%s","payload":{"PM":[' % marker,
                               "ct": "application/json"}).decode()
    bad_batch = r.xadd(STREAM, {"batch": b"\xff\xfe not protobuf " + marker.encode()}).decode()

    def dead():
        out = {}
        for eid, f in r.xrange(DLQ):
            f = {k.decode(): v for k, v in f.items()}
            if f.get("id", b"").decode() in (bad_json, bad_batch):
                out[f["id"].decode()] = f
        return out if len(out) == 2 else None

    got = wait_for(dead, timeout=20, step=0.1)
    assert got, "not in %s: %r; worker stderr:\n%s" % (DLQ, r.xrange(DLQ), cluster.stderr_text())
    assert marker.encode() in got[bad_json]["payload"]
    assert marker.encode() in got[bad_batch]["batch"]
    for f in got.values():
        assert f["reason"], f
    # acked in the group (not pending any more) and the worker keeps going
    pend = r.xpending_range(STREAM, GROUP, min=bad_json, max=bad_batch, count=10)
    assert pend == [], pend
    dev = uid("after")
    assert cluster.post("/readings", site_reading(dev)).status_code == 201
    cluster.drained()
    assert cluster.sql("SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id "
                       "WHERE d.ext_id = %s", (dev,)) == [(1,)]
    assert cluster.wprocs[0].poll() is None


def test_an_entry_delivered_more_than_max_deliveries_is_dead_lettered(cluster, r):
    cluster.stop_worker(0)
    dev = uid("redeliver")
    resp = cluster.post("/readings", site_reading(dev))
    sid = resp.json()["stream_id"]
    consumer = "%s-w0" % cluster.key
    got = r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=10)
    assert [e[0].decode() for e in got[0][1]] == [sid]
    # as if a worker had been handed it 5 times already and died each time (the first hand-out
    # is not recorded, the 4 after it are in <stream>:attempts; METERD_MAX_DELIVERIES is 5)
    r.execute_command("XCLAIM", STREAM, GROUP, consumer, 0, sid, "RETRYCOUNT", 5)
    r.hset(STREAM + ":attempts", sid, 4)
    cluster.start_worker(0)  # re-reads its own pending entries at start: the 6th hand-out

    def dead():
        for eid, f in r.xrange(DLQ):
            f = {k.decode(): v for k, v in f.items()}
            if f.get("id", b"").decode() == sid:
                return f
        return None

    f = wait_for(dead, timeout=20, step=0.1)
    assert f, "entry %s not dead-lettered; stderr:\n%s" % (sid, cluster.stderr_text())
    assert b"METERD_MAX_DELIVERIES" in f["reason"], f
    cluster.drained()
    assert cluster.sql("SELECT count(*) FROM devices WHERE ext_id = %s", (dev,)) == [(0,)]
    assert r.xpending_range(STREAM, GROUP, min=sid, max=sid, count=1) == []
    assert r.hget(STREAM + ":attempts", sid) is None  # the count goes with the ack


def test_entries_of_a_killed_worker_are_claimed_by_another(dead_consumer, r):
    srv, stream, dev, ids, killed_at = dead_consumer
    srv.start_worker(1)
    deadline = killed_at + CLAIM_IDLE_S + 2 * CLAIM_EVERY_S + 10

    def stored():
        return srv.sql("SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id "
                       "WHERE d.ext_id = %s", (dev,))[0][0] == 30

    assert wait_for(stored, timeout=max(1.0, deadline - time.monotonic()), step=0.5), (
        "30 readings left pending on a killed consumer were not claimed within %d s; "
        "XPENDING %r; worker 1 stderr:\n%s"
        % (CLAIM_IDLE_S + 2 * CLAIM_EVERY_S + 10, r.xpending(stream, GROUP),
           srv.stderr_text()))
    srv.drained()
    assert r.xpending(stream, GROUP)["pending"] == 0
    assert srv.sql("SELECT count(*), count(DISTINCT ts_us) FROM readings r JOIN devices d ON "
                   "d.id = r.device_id WHERE d.ext_id = %s", (dev,)) == [(30, 30)]
    assert srv.wait_log(lambda l: l.get("event") == "redis_consumer" and
                        "claimed" in l.get("msg", ""), timeout=1, workers=True)


# -- meterd dlq list | show | replay ---------------------------------------------------------
def test_dlq_list_show_and_replay_a_batch_the_store_refused(dist_factory, redis_server):
    srv = dist_factory("redis+pg")
    env = srv.backend_env()
    dlq = env["REDIS_STREAM"] + ":dlq"
    rc = redis_server.client()
    srv.sql(REFUSE_SQL)
    dev = "dlqrefuse-" + uuid.uuid4().hex[:10]
    resp = srv.post("/readings", site_reading(dev))
    assert resp.status_code == 201, resp.text
    sid = resp.json()["stream_id"]
    dead = wait_for(lambda: dlq_lines(env, "list"), timeout=30, step=0.3)
    assert dead and len(dead) == 1, "not dead-lettered: %r; stderr:\n%s" % (dead, srv.stderr_text())
    d = dead[0]
    assert d["id"] == rc.xrange(dlq)[0][0].decode() and d["source_id"] == sid, (d, sid)
    assert "store refused the batch 3 times" in d["reason"] and dev in d["reason"], d
    assert d["content_type"].startswith("application/x-protobuf") and d["readings"] == 1, d
    assert d["dead_at"].endswith("Z") and len(d["batch_id"]) == 36, d
    assert dlq_lines(env, "list") == dead and rc.xlen(dlq) == 1  # listing removes nothing

    res = dlq_cmd(env, "show", d["id"])
    assert res.returncode == 0, res.stderr
    full = json.loads(res.stdout)
    assert [(x["device"], x["site"], x["metric"], x["value"], x["ts"])
            for x in full["batch"]["readings"]] == [
        (dev, "site-001", "power", 1500.5, "2024-01-15T10:30:00Z")]
    for unknown in ("1-1", "not-an-id"):
        res = dlq_cmd(env, "show", unknown)
        assert res.returncode == 1 and "no dead letter with id %s" % unknown in res.stderr, res

    # a copy of the entry (dead-lettered twice): its own id in the stream
    _, fields = rc.xrange(dlq)[0]
    copy_id = rc.xadd(dlq, fields).decode()

    srv.sql(FIX_SQL)  # the cause is fixed
    assert [x["id"] for x in dlq_lines(env, "replay", d["id"])] == [d["id"]]
    assert [e[0].decode() for e in rc.xrange(dlq)] == [copy_id]  # only what was asked
    srv.drained()
    assert [(x["value"], x["status"]) for x in srv.readings(dev)] == [(1500.5, "valid")]
    res = dlq_cmd(env, "replay", d["id"])
    assert res.returncode == 1 and "no dead letter with id" in res.stderr, res

    # replaying the copy of a batch already applied changes nothing
    res = dlq_cmd(env, "replay", "--all")
    assert res.returncode == 0 and "1 dead letter replayed" in res.stderr, res
    srv.drained()
    assert [x["value"] for x in srv.readings(dev)] == [1500.5]
    assert srv.sql("SELECT count(*) FROM readings r JOIN devices v ON v.id = r.device_id "
                   "WHERE v.ext_id = %s", (dev,)) == [(1,)]
    assert rc.xlen(dlq) == 0 and dlq_lines(env, "list") == []


def test_dlq_previews_a_malformed_envelope_and_replay_hands_it_back_to_the_worker(cluster, r):
    env = cluster.backend_env()
    marker = uuid.uuid4().hex
    bad = '{"request_id":"%s","payload":{"PM":[' % marker
    r.xadd(STREAM, {"payload": bad, "ct": "application/json"})

    def mine():
        return [x for x in dlq_lines(env, "list") if marker in x.get("preview", "")]

    got = wait_for(mine, timeout=20, step=0.2)
    assert got and len(got) == 1, "not in %s; stderr:\n%s" % (DLQ, cluster.stderr_text())
    d = got[0]
    assert d["content_type"] == "application/json" and d["bytes"] == len(bad) and d["reason"]
    full = json.loads(dlq_cmd(env, "show", d["id"]).stdout)
    assert full["body"] == bad and full["parse_error"], full

    assert [x["id"] for x in dlq_lines(env, "replay", d["id"])] == [d["id"]]
    # still malformed: the worker dead-letters it again (a new entry); never lost
    again = wait_for(mine, timeout=20, step=0.2)
    assert again and again[0]["id"] != d["id"], again
    assert r.xrange(DLQ, d["id"], d["id"]) == []
    r.xdel(DLQ, again[0]["id"])
