"""Distributed mode on RabbitMQ + PostgreSQL: `meterd api` and `meterd worker` with real clients.

Runs whatever METERD_TEST_BACKEND says: it starts its own api/worker pair against the session's
RabbitMQ and PostgreSQL (conftest_servers.py). Gateways publish with pika to the default names
(energy-metering.ingest.exchange, routing key meter.reading.ingested); this module is the only
user of those names on the session broker.
"""
import datetime
import json
import time
import uuid

import pika
import pytest
import requests

from conftest import DLQ_FIX_SQL as FIX_SQL, DLQ_REFUSE_SQL as REFUSE_SQL, dlq_cmd, dlq_lines, uid

INGEST_EXCHANGE = "energy-metering.ingest.exchange"
INGEST_QUEUE = "energy-metering.ingest.queue"
ROUTING_KEY = "meter.reading.ingested"
DLQ = "energy-metering.ingest.dlq"
EVENTS_EXCHANGE = "energy-metering.worker.events.exchange"


def default_names(mq):
    """The documented defaults, spelled out (the harness otherwise isolates by data dir)."""
    return {"RABBITMQ_URL": mq.url, "RABBITMQ_INGEST_EXCHANGE": INGEST_EXCHANGE,
            "RABBITMQ_INGEST_QUEUE": INGEST_QUEUE, "RABBITMQ_INGEST_ROUTING_KEY": ROUTING_KEY,
            "RABBITMQ_DLQ_QUEUE": DLQ, "RABBITMQ_WORKER_EXCHANGE": EVENTS_EXCHANGE}


@pytest.fixture(scope="module")
def cluster(rabbitmq_server, pg_server, tmp_path_factory):
    """One api + one worker on the default names, for the whole module."""
    import conftest
    ch = rabbitmq_server.connection()
    c = ch.channel()
    for q in (INGEST_QUEUE, DLQ):
        c.queue_delete(q)
    ch.close()
    srv = conftest.DistMeterd(tmp_path_factory.mktemp("amqp-cluster"), backend="amqp+pg",
                              env=default_names(rabbitmq_server))
    srv.start()
    yield srv
    conftest._finish(srv)


def now_dmy(offset_s=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.strftime("%d/%m/%Y %H:%M:%S"), t.strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(fp, pm, request_id=None):
    received = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"request_id": request_id or str(uuid.uuid4()), "client_fingerprint": fp,
            "ip_address": "192.168.1.100", "user_agent": "MeterDevice/1.0",
            "received_at": received, "payload": {"PM": pm}}


def publish(mq, body, content_type="application/json"):
    conn = mq.connection()
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(INGEST_EXCHANGE, ROUTING_KEY,
                         body if isinstance(body, bytes) else json.dumps(body).encode(),
                         pika.BasicProperties(content_type=content_type, delivery_mode=2),
                         mandatory=True)
    finally:
        conn.close()


class EventListener:
    """An exclusive queue bound to the events exchange with '#', read with basic_get. With
    batched=True bound to <events exchange>.batched instead, where every message holds the
    events of one commit, one JSON per line (what meterd api subscribes to)."""

    def __init__(self, mq, batched=False, exchange=EVENTS_EXCHANGE, routing_key="#"):
        self.conn = mq.connection()
        self.ch = self.conn.channel()
        self.batched = batched
        ex = exchange + ".batched" if batched else exchange
        self.ch.exchange_declare(ex, "fanout" if batched else "topic", passive=True)
        self.q = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.q, ex, routing_key=routing_key)
        self.messages = 0

    def collect(self, pred, n, timeout=20.0):
        """Events (routing_key, body, properties) matching pred until n of them arrived."""
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            m, props, body = self.ch.basic_get(self.q, auto_ack=True)
            if m is None:
                self.conn.process_data_events(0.05)
                continue
            self.messages += 1
            # one JSON per message on the per-reading exchange: a line break would fail here
            events = [json.loads(line) for line in body.split(b"\n")] if self.batched \
                else [json.loads(body)]
            out += [(m.routing_key, ev, props) for ev in events if pred(ev)]
        return out

    def close(self):
        self.conn.close()


def wait_for(fn, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    return last


def client_readings(srv, fp):
    r = srv.get("/api/v1/clients/%s/readings" % fp)
    if r.status_code == 404:
        return []
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["readings"]


def test_api_and_worker_report_their_backends(cluster):
    h = cluster.get("/health").json()
    assert h["components"]["queue"]["backend"] == "amqp", h
    assert h["components"]["store"]["backend"] == "pg", h
    w = requests.get(cluster.worker_urls[0] + "/health", timeout=10)
    assert w.status_code == 200, w.text
    assert w.json()["components"]["worker"]["running"] is True, w.text


def test_posted_readings_are_rows_in_postgresql_views(cluster):
    meter = 700000 + int(uuid.uuid4().int % 100000)
    r = cluster.post("/api/readings", {"meter_number": meter, "readings": {
        "2026-03-18T10:15:00Z": 1234.56, "2026-03-18T10:00:00Z": 1234.51}})
    assert r.status_code == 202, r.text
    dev = uid("pgrow")
    cluster.post_readings([{"device": dev, "metric": "energy", "ts": 1773829800000 + i * 1000,
                            "value": float(i)} for i in range(50)])
    cluster.drained()
    rows = cluster.sql("SELECT m.meter_number, r.value_at, r.value FROM meter_readings r "
                       "JOIN meters m ON m.id = r.meter_id WHERE m.meter_number = %s "
                       "ORDER BY r.value_at", (str(meter),))
    assert [(n, t.isoformat(), v) for n, t, v in rows] == [
        (str(meter), "2026-03-18T10:00:00+00:00", 1234.51),
        (str(meter), "2026-03-18T10:15:00+00:00", 1234.56)]
    n = cluster.sql("SELECT count(*), count(DISTINCT reading_timestamp) FROM meter_readings_raw "
                    "WHERE device_id = %s", (dev,))
    assert n == [(50, 50)]
    # and the read API of the api process answers from the same database
    assert len(cluster.readings(dev)) == 50


def test_gateway_envelopes_published_to_the_exchange_are_stored_with_events(cluster,
                                                                           rabbitmq_server):
    listener = EventListener(rabbitmq_server)
    try:
        fp = "sha256_" + uuid.uuid4().hex
        d1, z1 = now_dmy(-5)
        d2, z2 = now_dmy(-4)
        d3, z3 = now_dmy(-3)
        publish(rabbitmq_server, envelope(fp, [{"date": d1, "data": "245.5", "name": "power"},
                                               {"date": d2, "data": "230.1", "name": "voltage"}]))
        publish(rabbitmq_server, envelope(fp, [{"date": d3, "data": "-3.5", "name": "power"}]))
        rows = wait_for(lambda: len(client_readings(cluster, fp)) == 3 and
                        client_readings(cluster, fp))
        assert rows, "3 readings of %s never stored; stderr:\n%s" % (fp, cluster.stderr_text())
        got = sorted((x["metric"], x["ts"], x["value"], x["status"]) for x in rows)
        assert got == sorted([("power", z1, 245.5, "valid"), ("voltage", z2, 230.1, "valid"),
                              ("power", z3, -3.5, "invalid")]), rows
        events = listener.collect(lambda e: e.get("client_id") == fp, 3)
        assert len(events) == 3, events
        by = {(e["metric_name"], e["reading_timestamp"]): (rk, e) for rk, e, _ in events}
        rk, e = by[("power", z1)]
        assert rk == "reading.valid" and e["validation_status"] == "valid"
        assert e["metric_value"] == 245.5
        rk, e = by[("voltage", z2)]
        assert rk == "reading.valid" and e["validation_status"] == "valid"
        rk, e = by[("power", z3)]
        assert rk == "reading.invalid" and e["validation_status"] == "invalid"
        assert e["anomaly_reason"] == "negative value detected", e
        assert all(p.content_type == "application/json" for _, _, p in events)
        # nothing more: one event per stored reading
        assert listener.collect(lambda e: e.get("client_id") == fp, 1, timeout=1.0) == []
        raw = cluster.sql("SELECT metric_name, validation_status, anomaly_reason, source "
                          "FROM meter_readings_raw WHERE client_id = %s ORDER BY 1, 2", (fp,))
        assert [r[:3] for r in raw] == [("power", "invalid", "negative value detected"),
                                        ("power", "valid", None), ("voltage", "valid", None)]
    finally:
        listener.close()


def test_posted_readings_produce_one_event_each(cluster, rabbitmq_server):
    listener = EventListener(rabbitmq_server)
    try:
        dev = uid("ev")
        ts0 = int(time.time() * 1000) - 60000
        cluster.post_readings([{"device": dev, "metric": "energy", "ts": ts0 + i, "value": 1.0}
                               for i in range(20)])
        cluster.post_readings([{"device": dev, "metric": "energy", "ts": ts0, "value": 1.0}])
        events = listener.collect(lambda e: e.get("device") == dev, 20, timeout=15)
        cluster.drained()
        events += listener.collect(lambda e: e.get("device") == dev, 1, timeout=1.0)
        assert len(events) == 20, "20 stored readings, 1 duplicate: %d events" % len(events)
        assert {rk for rk, _, _ in events} == {"reading.valid"}
    finally:
        listener.close()


def test_the_events_of_a_commit_also_go_out_as_one_message_of_lines(cluster, rabbitmq_server):
    each, lines = EventListener(rabbitmq_server), EventListener(rabbitmq_server, batched=True)
    try:
        dev = uid("evl")
        ts0 = int(time.time() * 1000) - 60000
        cluster.post_readings([{"device": dev, "metric": "energy", "ts": ts0 + i, "value": 2.0}
                               for i in range(30)])
        got = lines.collect(lambda e: e.get("device") == dev, 30, timeout=15)
        one_by_one = each.collect(lambda e: e.get("device") == dev, 30, timeout=15)
        assert len(got) == 30 and len(one_by_one) == 30
        # the same events, in the same order; far fewer messages (one per commit)
        assert [e for _, e, _ in got] == [e for _, e, _ in one_by_one]
        assert lines.messages < 30, lines.messages
        assert {p.content_type for _, _, p in got} == {"application/x-ndjson"}
    finally:
        each.close()
        lines.close()


def test_reading_events_off_sends_only_the_per_commit_messages(rabbitmq_server, pg_server,
                                                                tmp_path):
    """RABBITMQ_READING_EVENTS=0: nothing on the per-reading exchange, every event on .batched,
    and the api's live events still come through."""
    import conftest
    exchange = uid("quiet.events")
    srv = conftest.DistMeterd(tmp_path / "quiet", backend="amqp+pg",
                              env={"RABBITMQ_WORKER_EXCHANGE": exchange,
                                   "RABBITMQ_READING_EVENTS": "0"})
    srv.start()
    each = lines = None
    try:
        each = EventListener(rabbitmq_server, exchange=exchange)
        lines = EventListener(rabbitmq_server, batched=True, exchange=exchange)
        dev = uid("quiet")
        ts0 = int(time.time() * 1000) - 60000
        with requests.get(srv.base_url + "/api/v1/events", params={"device": dev}, stream=True,
                          timeout=(5, 20)) as live:
            assert live.status_code == 200
            time.sleep(0.5)
            srv.post_readings([{"device": dev, "metric": "energy", "ts": ts0 + i,
                                "value": 100.0 + i} for i in range(20)])
            got = lines.collect(lambda e: e.get("device") == dev, 20, timeout=15)
            assert len(got) == 20
            seen = []
            for line in live.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if len(seen) == 20:
                        break
            assert [e["metric_value"] for e in seen] == [100.0 + i for i in range(20)]
            assert [e for _, e, _ in got] == seen
        # the per-reading messages of a commit go out before its .batched one: none came
        assert each.collect(lambda e: e.get("device") == dev, 1, timeout=2) == []
        assert each.messages == 0
    finally:
        for listener in (each, lines):
            if listener:
                listener.close()
        conftest._finish(srv)


def test_per_reading_events_are_sent_only_while_a_queue_is_bound(rabbitmq_server, pg_server,
                                                                 tmp_path):
    """Decision 34: with no queue bound for a routing key the worker sends a probe every 10 ms
    instead of one message per reading; a queue bound later gets every event from then on, in
    order; a queue bound to reading.invalid alone gets all the invalid events and nothing else."""
    import conftest
    exchange = uid("probe.events")
    srv = conftest.DistMeterd(tmp_path / "probe", backend="amqp+pg",
                              env={"RABBITMQ_WORKER_EXCHANGE": exchange})
    srv.start()
    listeners = []

    def unrouted():
        return conftest.metric_sum(srv.metrics(), "meterd_events_unrouted_total")

    try:
        # .batched always gets every event: it tells when the per-reading ones are out
        lines = EventListener(rabbitmq_server, batched=True, exchange=exchange)
        listeners.append(lines)
        ts0 = int(time.time() * 1000) - 600000
        dev = uid("unbound")
        n = 2000
        srv.post_readings([{"device": dev, "metric": "energy", "ts": ts0 + i, "value": 1.0}
                           for i in range(n)])
        assert len(lines.collect(lambda e: e.get("device") == dev, n, timeout=30)) == n
        # nothing was bound: a few probes, the other events never went to the broker
        assert wait_for(lambda: unrouted() >= n * 0.9, timeout=10), unrouted()
        time.sleep(0.2)  # settled: the count is added after each round of the publisher
        before = unrouted()
        assert n * 0.9 <= before <= n - 1, (before, srv.stderr_text())
        assert srv.wait_log(lambda l: l.get("event") == "amqp_events" and
                            "no queue is bound" in l.get("msg", ""), workers=True)

        each = EventListener(rabbitmq_server, exchange=exchange)
        listeners.append(each)
        dev2 = uid("bound")
        srv.post_readings([{"device": dev2, "metric": "energy", "ts": ts0 + i, "value": float(i)}
                           for i in range(300)])
        got = each.collect(lambda e: e.get("device") == dev2, 300, timeout=30)
        assert [e["metric_value"] for _, e, _ in got] == [float(i) for i in range(300)]
        assert unrouted() == before  # the probe found the queue: every event was sent

        # the '#' queue goes; one bound to the invalid events only
        each.close()
        listeners.remove(each)
        inv = EventListener(rabbitmq_server, exchange=exchange, routing_key="reading.invalid")
        listeners.append(inv)
        dev3 = uid("mixed")
        for part in range(2):
            srv.post_readings([{"device": dev3, "metric": "power", "ts": ts0 + part * 1000 + i,
                                "value": -1.0 - i if i % 2 else 1.0 + i} for i in range(200)])
            assert len(lines.collect(lambda e: e.get("device") == dev3, 200, timeout=30)) == 200
            time.sleep(0.05)  # past the 10 ms between checks of a key
        got = inv.collect(lambda e: e.get("device") == dev3, 200, timeout=30)
        got += inv.collect(lambda e: e.get("device") == dev3, 1, timeout=1.0)
        assert len(got) == 200 and {rk for rk, _, _ in got} == {"reading.invalid"}
        assert [e["metric_value"] for _, e, _ in got] == \
            [-1.0 - i for part in range(2) for i in range(200) if i % 2]
        # the valid ones of the second request found no queue and stayed home
        assert wait_for(lambda: unrouted() >= before + 90, timeout=10), unrouted() - before
    finally:
        for listener in listeners:
            listener.close()
        conftest._finish(srv)


def test_malformed_json_goes_to_the_dlq_with_a_reason_and_the_worker_keeps_going(
        cluster, rabbitmq_server):
    marker = uuid.uuid4().hex
    bad = ('{"request_id": "%s", "client_fingerprint": "x", "payload": {"PM": [' % marker).encode()
    publish(rabbitmq_server, bad)
    conn = rabbitmq_server.connection()
    try:
        ch = conn.channel()

        def dead():
            while True:
                m, props, body = ch.basic_get(DLQ, auto_ack=False)
                if m is None:
                    return None
                if marker.encode() in body:
                    ch.basic_ack(m.delivery_tag)
                    return props, body
                ch.basic_nack(m.delivery_tag, requeue=True)
                return None

        got = wait_for(dead, timeout=20, step=0.1)
        assert got, "malformed message not in %s; worker stderr:\n%s" % (DLQ, cluster.stderr_text())
        props, body = got
        assert body == bad
        reason = (props.headers or {}).get("x-meterd-reason")
        if isinstance(reason, bytes):
            reason = reason.decode()
        assert reason and isinstance(reason, str), props.headers
    finally:
        conn.close()
    # the worker is alive and still consumes
    fp = "sha256_" + uuid.uuid4().hex
    d, z = now_dmy(-1)
    publish(rabbitmq_server, envelope(fp, [{"date": d, "data": "1.5", "name": "power"}]))
    rows = wait_for(lambda: client_readings(cluster, fp))
    assert [(x["ts"], x["value"], x["status"]) for x in rows] == [(z, 1.5, "valid")]
    assert cluster.wprocs[0].poll() is None


def test_same_envelope_published_twice_is_stored_once(cluster, rabbitmq_server):
    fp = "sha256_" + uuid.uuid4().hex
    d, _ = now_dmy(-2)
    env = envelope(fp, [{"date": d, "data": "7.25", "name": "power"}])
    publish(rabbitmq_server, env)
    publish(rabbitmq_server, env)
    cluster.drained()
    assert wait_for(lambda: client_readings(cluster, fp))
    cluster.drained()
    assert len(client_readings(cluster, fp)) == 1


def test_api_answers_503_while_rabbitmq_is_down_and_recovers(dist_factory, fault_servers):
    mq = fault_servers.get_rabbitmq()
    srv = dist_factory("amqp+pg", env={"RABBITMQ_URL": mq.url})
    dev = uid("outage")
    srv.post_readings([{"device": dev, "metric": "energy", "ts": 1773829800000, "value": 1.0}])
    mq.stop()
    try:
        r = srv.post("/api/v1/readings", {"readings": [
            {"device": dev, "metric": "energy", "ts": 1773829801000, "value": 2.0}]}, timeout=60)
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.json()["statusCode"] == 503
    finally:
        mq.start()

    def ok():
        r = srv.post("/api/v1/readings", {"readings": [
            {"device": dev, "metric": "energy", "ts": 1773829802000, "value": 3.0}]})
        return r.status_code == 202

    assert wait_for(ok, timeout=30, step=0.2), "api never recovered; stderr:\n" + srv.stderr_text()
    srv.drained(timeout=60)
    got = sorted(x["value"] for x in srv.readings(dev))
    assert got == [1.0, 3.0], got


# -- meterd dlq list | show | replay ---------------------------------------------------------
def dlq_list(env):
    return dlq_lines(env, "list")


def take_from_dlq(mq, queue, pred):
    """Removes the messages of queue whose body matches pred (as an operator's tool would);
    returns their (properties, body). The others stay, in their places."""
    conn = mq.connection()
    try:
        ch = conn.channel()
        out, tags = [], []
        while True:
            m, props, body = ch.basic_get(queue, auto_ack=False)
            if m is None:
                break
            if pred(body):
                ch.basic_ack(m.delivery_tag)
                out.append((props, body))
            else:
                tags.append(m.delivery_tag)
        if tags:
            ch.basic_nack(0, multiple=True, requeue=True)
        return out
    finally:
        conn.close()


def put_in_dlq(mq, queue, props, body):
    conn = mq.connection()
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", queue, body, props, mandatory=True)
    finally:
        conn.close()


def test_dlq_list_show_and_replay_a_batch_the_store_refused(dist_factory, rabbitmq_server):
    srv = dist_factory("amqp+pg")
    env = srv.backend_env()
    dlq_queue = env["RABBITMQ_DLQ_QUEUE"]
    srv.sql(REFUSE_SQL)
    dev = "dlqrefuse-" + uuid.uuid4().hex[:10]
    srv.post_readings([{"device": dev, "metric": "energy", "ts": 1773829800000 + i * 1000,
                        "value": 1.5 + i} for i in range(2)])
    dead = wait_for(lambda: dlq_list(env), timeout=30, step=0.3)
    assert dead and len(dead) == 1, "not dead-lettered: %r; stderr:\n%s" % (dead, srv.stderr_text())
    d = dead[0]
    assert "store refused the batch 3 times" in d["reason"] and dev in d["reason"], d
    assert d["content_type"].startswith("application/x-protobuf"), d
    assert d["readings"] == 2 and len(d["batch_id"]) == 36 and d["dead_at"].endswith("Z"), d
    assert len(d["id"]) == 16
    assert dlq_list(env) == dead  # listing removes nothing

    r = dlq_cmd(env, "show", d["id"])
    assert r.returncode == 0, r.stderr
    full = json.loads(r.stdout)
    assert full["batch"]["id"] == d["batch_id"]
    assert [(x["device"], x["metric"], x["value"]) for x in full["batch"]["readings"]] == [
        (dev, "energy", 1.5), (dev, "energy", 2.5)]
    r = dlq_cmd(env, "show", "0123456789abcdef")
    assert r.returncode == 1 and "no dead letter with id 0123456789abcdef" in r.stderr, r
    assert srv.sql("SELECT count(*) FROM devices WHERE ext_id = %s", (dev,)) == [(0,)]

    # a second copy of the same message (dead-lettered twice): same id, replayed once
    (props, body), = take_from_dlq(rabbitmq_server, dlq_queue, lambda b: True)
    put_in_dlq(rabbitmq_server, dlq_queue, props, body)
    put_in_dlq(rabbitmq_server, dlq_queue, props, body)
    assert [x["id"] for x in dlq_list(env)] == [d["id"], d["id"]]

    srv.sql(FIX_SQL)  # the cause is fixed
    r = dlq_cmd(env, "replay", d["id"])
    assert r.returncode == 0, r.stderr
    assert [json.loads(l)["id"] for l in r.stdout.splitlines()] == [d["id"], d["id"]]
    assert "2 dead letters replayed" in r.stderr, r.stderr
    srv.drained()
    assert [x["value"] for x in srv.readings(dev)] == [1.5, 2.5]
    assert dlq_list(env) == []
    r = dlq_cmd(env, "replay", d["id"])
    assert r.returncode == 1 and "no dead letter with id" in r.stderr, r

    # the applied batch dead-lettered once more: replaying it changes nothing
    put_in_dlq(rabbitmq_server, dlq_queue, props, body)
    assert [x["id"] for x in dlq_lines(env, "replay", "--all")] == [d["id"]]
    srv.drained()
    assert [x["value"] for x in srv.readings(dev)] == [1.5, 2.5]
    assert srv.sql("SELECT count(*) FROM readings r JOIN devices v ON v.id = r.device_id "
                   "WHERE v.ext_id = %s", (dev,)) == [(2,)]
    assert dlq_list(env) == []


def test_dlq_previews_a_malformed_envelope_and_replay_hands_it_back_to_the_worker(
        cluster, rabbitmq_server):
    env = cluster.backend_env()
    marker = uuid.uuid4().hex
    bad = ('{"request_id": "%s", "client_fingerprint": "x", "payload": {"PM": [' % marker).encode()
    publish(rabbitmq_server, bad)

    def mine():
        return [x for x in dlq_list(env) if marker in x.get("preview", "")]

    got = wait_for(mine, timeout=20, step=0.2)
    assert got and len(got) == 1, "not in the DLQ; stderr:\n" + cluster.stderr_text()
    d = got[0]
    assert d["content_type"] == "application/json" and d["bytes"] == len(bad) and d["reason"]
    full = json.loads(dlq_cmd(env, "show", d["id"]).stdout)
    assert full["body"] == bad.decode() and full["parse_error"], full

    dead0 = cluster.metrics().get("meterd_batches_dead_lettered_total", 0)
    replayed = dlq_lines(env, "replay", d["id"])
    assert [x["id"] for x in replayed] == [d["id"]]
    # still malformed: the worker dead-letters it again, same content, same id; never lost
    assert wait_for(lambda: cluster.metrics().get("meterd_batches_dead_lettered_total", 0) > dead0)
    assert [x["id"] for x in wait_for(mine, timeout=20, step=0.2)] == [d["id"]]
    assert len(take_from_dlq(rabbitmq_server, DLQ, lambda b: marker.encode() in b)) == 1
    assert mine() == []
