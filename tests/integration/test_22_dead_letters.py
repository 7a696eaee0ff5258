"""A poison batch in the queue reaches the dead letters with a reason; the worker keeps going.

The poison record is written straight into the newest WAL segment while the server is stopped,
framed as src/queue/wal.c documents it (all little-endian):
    u32 len, u32 crc32(seq + time_us + payload), u64 seq, i64 time_us, payload[len]
"""
import json
import os
import struct
import time
import zlib

from conftest import embedded_only, reading, run_meterd, uid

HDR = struct.Struct("<IIQq")
POISON = b"\xff" * 11 + b"this is not a protobuf batch"


def wal_records(path):
    """(offset, seq, len) of every valid record of a segment file."""
    data = open(path, "rb").read()
    off, out = 0, []
    while off + HDR.size <= len(data):
        n, crc, seq, t = HDR.unpack_from(data, off)
        payload = data[off + HDR.size:off + HDR.size + n]
        if len(payload) != n or zlib.crc32(struct.pack("<Qq", seq, t) + payload) != crc:
            break
        out.append((off, seq, n))
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


def newest_segment(qdir):
    segs = sorted(n for n in os.listdir(qdir) if len(n) == 24 and n.endswith(".wal"))
    assert segs, os.listdir(qdir)
    return os.path.join(qdir, segs[-1]), int(segs[-1][:20])


def dlq_list(data_dir):
    r = run_meterd("dlq", "list", "--data-dir", data_dir)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]


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
    assert d["seq"] == seq and d["bytes"] == len(POISON)
    assert isinstance(d["reason"], str) and d["reason"]
    assert d["dead_at"].endswith("Z")

    # the poison batch is not delivered again after another restart
    meterd.start()
    meterd.drained()
    assert meterd.get("/health").json()["components"]["queue"]["dead_letters"] == 1
    assert meterd.stop() == 0
    assert len(dlq_list(meterd.data_dir)) == 1


@embedded_only("meterd dlq list reads the WAL's dead.log")
def test_dlq_list_of_an_empty_data_dir_prints_nothing(tmp_path):
    assert dlq_list(str(tmp_path)) == []
