"""A poison batch in the queue reaches the dead letters with a reason; the worker keeps going;
`meterd dlq list|show|replay` inspects and replays them.

The poison record is written straight into the newest WAL segment while the server is stopped,
framed as src/queue/wal.c documents it (all little-endian):
    u32 len, u32 crc32(seq + time_us + payload), u64 seq, i64 time_us, payload[len]
dead.log uses the same framing with payload = u32 reason_len, reason, original payload.
"""
import base64
import json
import os
import struct
import time
import zlib

from conftest import SANITIZER_MARKERS, embedded_only, reading, run_meterd, uid

HDR = struct.Struct("<IIQq")
POISON = b"\xff" * 11 + b"this is not a protobuf batch"


def wal_records(path, payloads=False):
    """(offset, seq, len) of every valid record of a segment file (+ payload if asked)."""
    data = open(path, "rb").read()
    off, out = 0, []
    while off + HDR.size <= len(data):
        n, crc, seq, t = HDR.unpack_from(data, off)
        payload = data[off + HDR.size:off + HDR.size + n]
        if len(payload) != n or zlib.crc32(struct.pack("<Qq", seq, t) + payload) != crc:
            break
        out.append((off, seq, n, payload) if payloads else (off, seq, n))
        off += HDR.size + n
    assert off == len(data), "segment %s has %d bytes past its last record" % (path, len(data) - off)
    return out


def append_record(path, seq, payload):
    t_us = int(time.time() * 1e6)
    crc = zlib.crc32(struct.pack("<Qq", seq, t_us) + payload)
    with open(path, "ab") as f:
        f.write(HDR.pack(len(payload), crc, seq, t_us) + payload)
        f.flush()
        os.fsync(f.fileno())


def append_dead_letter(data_dir, seq, reason, payload):
    """Appends one dead letter to <data_dir>/queue/dead.log, as the worker's nack writes it."""
    qdir = os.path.join(data_dir, "queue")
    os.makedirs(qdir, exist_ok=True)
    r = reason.encode()
    append_record(os.path.join(qdir, "dead.log"), seq, struct.pack("<I", len(r)) + r + payload)


def dlq(*args):
    """Runs meterd dlq ARGS; fails on a sanitizer report. Returns CompletedProcess."""
    r = run_meterd("dlq", *args)
    assert not any(m in r.stderr for m in SANITIZER_MARKERS), r.stderr
    return r


def newest_segment(qdir):
    segs = sorted(n for n in os.listdir(qdir) if len(n) == 24 and n.endswith(".wal"))
    assert segs, os.listdir(qdir)
    return os.path.join(qdir, segs[-1]), int(segs[-1][:20])


def dlq_list(data_dir):
    r = dlq("list", "--data-dir", data_dir)
    assert r.returncode == 0, r.stderr
    out = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    assert r.stderr.startswith("%d dead letter" % len(out)), r.stderr
    return out


def dlq_show(data_dir, dead_id):
    r = dlq("show", dead_id, "--data-dir", data_dir)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def dlq_replay(data_dir, *ids):
    r = dlq("replay", *(ids or ("--all",)), "--data-dir", data_dir)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]


def valid_batch(meterd_factory, readings):
    """The protobuf bytes of a canonical batch, taken from the WAL of a server it was posted to."""
    src = meterd_factory(name="batch-source")
    src.post_readings(readings)
    src.drained()
    assert src.stop() == 0
    path, _ = newest_segment(os.path.join(src.data_dir, "queue"))
    recs = wal_records(path, payloads=True)
    assert len(recs) == 1, recs
    return recs[0][3]


@embedded_only('writes a poison record into the WAL and reads it back with meterd dlq list; amqp/redis dead letters: test_30/test_31')
def test_poison_batch_goes_to_dead_letters_and_worker_carries_on(meterd):
    before = uid("before")
    meterd.post_readings([reading(before, 1773828900000, 1.0)])
    meterd.drained()
    assert meterd.stop() == 0
    assert dlq_list(meterd.data_dir) == []

    qdir = os.path.join(meterd.data_dir, "queue")
    path, first = newest_segment(qdir)
    recs = wal_records(path)
    seq = recs[-1][1] + 1 if recs else first
    append_record(path, seq, POISON)
    assert wal_records(path)[-1][1] == seq  # our framing agrees with our own reader

    meterd.start()
    after = uid("after")
    meterd.post_readings([reading(after, 1773828900000, 2.0)])
    meterd.drained()
    assert [x["value"] for x in meterd.readings(after)] == [2.0]
    assert [x["value"] for x in meterd.readings(before)] == [1.0]

    h = meterd.get("/health").json()
    assert h["components"]["queue"]["dead_letters"] == 1, h
    assert h["components"]["worker"]["running"] is True
    assert any(l["event"] == "dead_letter" for l in meterd.logs())

    assert meterd.stop() == 0
    dead = dlq_list(meterd.data_dir)
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["id"] == str(seq) and d["seq"] == seq and d["bytes"] == len(POISON)
    assert isinstance(d["reason"], str) and d["reason"]
    assert d["dead_at"].endswith("Z")
    assert d["content_type"].startswith("application/x-protobuf")
    assert d["decode_error"], d  # not a batch: says why instead of a batch id

    # the poison batch is not delivered again after another restart
    meterd.start()
    meterd.drained()
    assert meterd.get("/health").json()["components"]["queue"]["dead_letters"] == 1
    assert meterd.stop() == 0
    assert len(dlq_list(meterd.data_dir)) == 1


@embedded_only("meterd dlq show/replay on the WAL's dead.log")
def test_show_prints_the_bytes_and_replay_of_a_poison_batch_brings_it_back(meterd):
    assert meterd.stop() == 0
    append_dead_letter(meterd.data_dir, 41, "batch: not a protobuf", POISON)
    full = dlq_show(meterd.data_dir, "41")
    assert full["id"] == "41" and full["reason"] == "batch: not a protobuf"
    assert base64.b64decode(full["body_base64"]) == POISON
    assert full["decode_error"]

    r = dlq("show", "999999", "--data-dir", meterd.data_dir)
    assert r.returncode == 1 and "no dead letter with id 999999" in r.stderr, r
    assert r.stdout == ""

    # replaying while serve runs on the directory is refused, and changes nothing
    meterd.start()
    dead_log = os.path.join(meterd.data_dir, "queue", "dead.log")
    before = open(dead_log, "rb").read()
    r = dlq("replay", "41", "--data-dir", meterd.data_dir)
    assert r.returncode == 1, r
    assert "in use by a running meterd" in r.stderr and "stop it" in r.stderr, r.stderr
    assert open(dead_log, "rb").read() == before
    assert [d["id"] for d in dlq_list(meterd.data_dir)] == ["41"]  # list works meanwhile
    assert meterd.stop() == 0

    # stopped: replayed into the queue and gone from the dead letters ...
    assert [d["id"] for d in dlq_replay(meterd.data_dir, "41")] == ["41"]
    assert dlq_list(meterd.data_dir) == []
    # ... and as it still is no batch, the worker dead-letters it again: never lost
    meterd.start()
    meterd.drained()
    assert meterd.get("/health").json()["components"]["queue"]["dead_letters"] == 1
    assert meterd.stop() == 0
    again = dlq_list(meterd.data_dir)
    assert len(again) == 1 and again[0]["id"] != "41" and again[0]["bytes"] == len(POISON), again
    assert base64.b64decode(dlq_show(meterd.data_dir, again[0]["id"])["body_base64"]) == POISON


@embedded_only("meterd dlq replay on the WAL's dead.log")
def test_replayed_batch_is_stored_exactly_once_and_replaying_again_is_harmless(meterd_factory):
    dev = uid("replay")
    rows = [reading(dev, 1773828900000 + i * 60000, 10.5 + i) for i in range(3)]
    payload = valid_batch(meterd_factory, rows)
    srv = meterd_factory(start=False)
    append_dead_letter(srv.data_dir, 7, "store refused the batch 3 times: disk full", payload)
    append_dead_letter(srv.data_dir, 8, "batch: not a protobuf", POISON)

    dead = dlq_list(srv.data_dir)
    assert [d["id"] for d in dead] == ["7", "8"], dead
    assert dead[0]["readings"] == 3 and len(dead[0]["batch_id"]) == 36, dead[0]
    assert dead[0]["reason"] == "store refused the batch 3 times: disk full"
    full = dlq_show(srv.data_dir, "7")
    assert full["batch"]["id"] == dead[0]["batch_id"]
    assert [(x["device"], x["metric"], x["value"]) for x in full["batch"]["readings"]] == [
        (dev, "energy", 10.5), (dev, "energy", 11.5), (dev, "energy", 12.5)]
    assert full["batch"]["readings"][0]["ts"] == "2026-03-18T10:15:00Z"

    # an unknown id among the ids: nothing is replayed
    r = dlq("replay", "7", "12345", "--data-dir", srv.data_dir)
    assert r.returncode == 1 and "12345" in r.stderr, r
    assert len(dlq_list(srv.data_dir)) == 2

    replayed = dlq_replay(srv.data_dir, "7")
    assert [(d["id"], d["batch_id"]) for d in replayed] == [("7", dead[0]["batch_id"])]
    assert [d["id"] for d in dlq_list(srv.data_dir)] == ["8"]  # the other one stays
    r = dlq("replay", "7", "--data-dir", srv.data_dir)
    assert r.returncode == 1 and "no dead letter with id 7" in r.stderr, r

    srv.start()
    srv.drained()
    assert [x["value"] for x in srv.readings(dev)] == [10.5, 11.5, 12.5]
    assert srv.stop() == 0

    # the same batch dead-lettered twice more (two copies of one record): replayed once, both
    # removed, and the store already has the batch: nothing changes
    append_dead_letter(srv.data_dir, 7, "again", payload)
    append_dead_letter(srv.data_dir, 7, "again", payload)
    assert [d["id"] for d in dlq_replay(srv.data_dir, "7")] == ["7", "7"]
    assert [d["id"] for d in dlq_list(srv.data_dir)] == ["8"]
    srv.start()
    srv.drained()
    assert [x["value"] for x in srv.readings(dev)] == [10.5, 11.5, 12.5]
    assert srv.metrics().get("meterd_batches_redelivered_total") == 1  # skipped by batch id
    assert srv.get("/health").json()["components"]["queue"]["dead_letters"] == 1
    assert srv.stop() == 0

    # --all empties the dead letters (the poison one comes back from the worker later)
    assert [d["id"] for d in dlq_replay(srv.data_dir)] == ["8"]
    assert dlq_list(srv.data_dir) == []
    assert dlq_replay(srv.data_dir) == []  # nothing left: nothing to do, exit 0


@embedded_only("meterd dlq list reads the WAL's dead.log")
def test_dlq_list_of_an_empty_data_dir_prints_nothing(tmp_path):
    assert dlq_list(str(tmp_path)) == []


def test_dlq_help_and_usage_errors():
    r = run_meterd("dlq", "--help")
    assert r.returncode == 0
    for words in ("meterd dlq list", "meterd dlq show ID", "meterd dlq replay ID",
                  "meterd dlq replay --all", "RABBITMQ_DLQ_QUEUE", "<REDIS_STREAM>:dlq"):
        assert words in r.stdout, (words, r.stdout)
    h = run_meterd("help")
    assert h.returncode == 0 and "dlq list | show ID | replay" in h.stdout, h.stdout
    for args in (("frobnicate",), (), ("show",), ("replay",), ("replay", "1", "--all"),
                 ("list", "extra"), ("list", "--no-such-option", "x"),
                 ("list", "--queue", "kafka")):
        r = run_meterd("dlq", *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stdout == "" and r.stderr, args
    assert "unknown subcommand 'frobnicate'" in run_meterd("dlq", "frobnicate").stderr
