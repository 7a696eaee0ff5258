#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_grpc_messages (tests/fuzz/corpus/grpc_messages/): a method
byte (0 Write, 1 Query, 2 GetMetrics, 3 Health/Check) and the encoded request. The protobuf
wire format is written by hand so no protobuf package is needed; the seeds are committed and
this only reruns when the messages change:  tests/fuzz/grpc_messages_seeds.py"""
import os
import struct


def varint(n):
    n &= (1 << 64) - 1  # negative int64 as ten bytes, like protobuf
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    """int → varint, float → fixed64 double, str/bytes → length-delimited."""
    if isinstance(value, float):
        return varint(num << 3 | 1) + struct.pack("<d", value)
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | 2) + varint(len(data)) + data


def ts(seconds, nanos=0):
    return field(1, seconds) + (field(2, nanos) if nanos else b"")


def point(device, seconds, value, metric="energy", nanos=0, kind="", site=""):
    p = field(1, device) + field(2, metric) + field(3, ts(seconds, nanos)) + field(4, value)
    return p + (field(5, kind) if kind else b"") + (field(6, site) if site else b"")


def write(*points):
    return b"\x00" + b"".join(field(1, p) for p in points)


SEEDS = {
    "write_one_full": write(point("m-1", 1773829800, 1.5, nanos=123456789, kind="meter",
                                  site="s-1")),
    "write_three": write(point("lg-0", 1773829800, 200.0), point("lg-1", 1773829800, 200.5),
                         point("lg-0", 1773829801, 201.0, metric="voltage", kind="vehicle")),
    "write_bad_fields": write(point("a/b", 1773829800, 1.0), point("", 0, 2.0, kind="toaster"),
                              point("x", 253402300800, 3.0)),
    "write_nan_negative_ts": write(point("n", -62135596800, float("nan"), nanos=999999999),
                                   point("\u00e9t\u00e9", -1, float("inf"), kind="client")),
    "write_empty": b"\x00",
    "query_full": b"\x01" + field(1, "lg-0") + field(2, "energy") + field(3, ts(1700000000))
                  + field(4, ts(1800000000, 5)) + field(5, 10),
    "query_device_only": b"\x01" + field(1, "meterusage"),
    "query_reversed": b"\x01" + field(1, "d") + field(3, ts(20)) + field(4, ts(10)),
    "get_metrics_empty": b"\x02",
    "health_server": b"\x03",
    "health_meterd": b"\x03" + field(1, "meterd.v1.Meterd"),
    "health_unknown": b"\x03" + field(1, "no.such.Service"),
}

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "grpc_messages")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(SEEDS), out))
