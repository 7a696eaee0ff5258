"""gRPC service: MeterUsage/GetMetrics, Meterd/Write + Query, grpc.health.v1, with the real
Python client (python3-grpcio); stubs are generated at test time with grpc_tools.protoc."""
import importlib
import math
import os
import subprocess
import sys
import time

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

from conftest import REPO_ROOT, embedded_only, free_port, uid  # noqa: E402

PROTO_DIR = os.path.join(REPO_ROOT, "proto")

CSV = ("time,meterusage\n"
       "2019-01-01 00:15:00,55.09\n"
       "2019-01-01 00:30:00,54.64\n"
       "2019-01-01 00:45:00,NaN\n"
       "2019-01-01 01:00:00,55.18\n"
       "2019-01-01 01:15:00,-\n"
       "2019-01-01 01:30:00,56.5\n")
VALID_ROWS = [(1546301700, 55.09), (1546302600, 54.64), (1546304400, 55.18), (1546306200, 56.5)]


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """Generated modules: pb.usage, pb.usage_grpc, pb.meterd, pb.meterd_grpc, pb.health, pb.health_grpc."""
    out = str(tmp_path_factory.mktemp("stubs"))
    protoc = [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR, "-I", "/usr/include",
              "--python_out=" + out, "--grpc_python_out=" + out]
    subprocess.run(protoc + [os.path.join(PROTO_DIR, "meterusage.proto"),
                             os.path.join(PROTO_DIR, "meterd/v1/meterd.proto")], check=True)
    # health.proto from its own directory: a generated top-level package "grpc" would shadow grpcio
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc",
                    "-I", os.path.join(PROTO_DIR, "grpc/health/v1"), "-I", "/usr/include",
                    "--python_out=" + out, "--grpc_python_out=" + out,
                    os.path.join(PROTO_DIR, "grpc/health/v1/health.proto")], check=True)
    sys.path.insert(0, out)
    try:
        class M:
            usage = importlib.import_module("meterusage_pb2")
            usage_grpc = importlib.import_module("meterusage_pb2_grpc")
            meterd = importlib.import_module("meterd.v1.meterd_pb2")
            meterd_grpc = importlib.import_module("meterd.v1.meterd_pb2_grpc")
            health = importlib.import_module("health_pb2")
            health_grpc = importlib.import_module("health_pb2_grpc")
        yield M
    finally:
        sys.path.remove(out)


def start_grpc_server(meterd_factory, tmp_path, csv=None, extra=()):
    port = free_port()
    args = ["--grpc-addr", "127.0.0.1:%d" % port, *extra]
    if csv is not None:
        path = tmp_path / "usage.csv"
        path.write_text(csv)
        args += ["--seed-csv", str(path)]
    srv = meterd_factory(extra_args=args)
    srv.grpc_target = "127.0.0.1:%d" % port
    return srv


@pytest.fixture
def channel_of():
    chans = []

    def make(srv):
        ch = grpc.insecure_channel(srv.grpc_target)
        grpc.channel_ready_future(ch).result(timeout=10)
        chans.append(ch)
        return ch

    yield make
    for ch in chans:
        ch.close()


def ts(pb, seconds, nanos=0):
    t = pb.meterd.google_dot_protobuf_dot_timestamp__pb2.Timestamp()
    t.seconds, t.nanos = seconds, nanos
    return t


def point(pb, device, seconds, value, metric="energy", **kw):
    return pb.meterd.Point(device=device, metric=metric, ts=ts(pb, seconds), value=value, **kw)


def wait_for(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    return pred()


def test_get_metrics_returns_every_valid_seeded_row_in_time_order(pb, meterd_factory, tmp_path,
                                                                  channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path, csv=CSV)
    stub = pb.usage_grpc.MeterUsageStub(channel_of(srv))
    resp = wait_for(lambda: (lambda r: r if len(r.metrics) >= len(VALID_ROWS) else None)(
        stub.GetMetrics(pb.usage.Empty(), timeout=10)))
    assert resp is not None, "seeded rows never appeared"
    got = [(m.time.seconds, m.meterusage) for m in resp.metrics]
    assert got == VALID_ROWS  # NaN and unparsable rows were skipped at import
    assert all(m.time.nanos == 0 for m in resp.metrics)
    # the same data as the HTTP read API
    http = [(x["ts"], x["value"]) for x in srv.readings("meterusage", metric="meterusage")]
    assert [v for _, v in http] == [v for _, v in VALID_ROWS]


def test_get_metrics_of_an_unseeded_server_is_empty(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    resp = pb.usage_grpc.MeterUsageStub(channel_of(srv)).GetMetrics(pb.usage.Empty(), timeout=10)
    assert list(resp.metrics) == []


def test_write_acknowledges_then_query_streams_the_readings_back(pb, meterd_factory, tmp_path,
                                                                 channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("g")
    base = 1773829800  # 2026-03-18T10:30:00Z
    pts = [point(pb, dev, base + 60 * i, 100.0 + i) for i in range(5)]
    pts.append(point(pb, dev, base + 30, 7.5, metric="voltage", kind="meter", site="s-1"))
    resp = stub.Write(pb.meterd.WriteRequest(readings=pts), timeout=10)
    assert resp.accepted == 6
    assert len(resp.batch_id) == 36 and resp.position
    srv.drained()

    got = list(stub.Query(pb.meterd.QueryRequest(device=dev), timeout=10))
    assert [(r.ts.seconds, r.metric, r.value) for r in got] == sorted(
        [(base + 60 * i, "energy", 100.0 + i) for i in range(5)] + [(base + 30, "voltage", 7.5)])
    assert all(r.device == dev and r.valid and r.reason == "" for r in got)
    assert {r.site for r in got} == {"s-1"}
    # also visible through HTTP: one canonical pipeline
    assert len(srv.readings(dev)) == 6

    # metric filter, [from, to) and limit
    q = pb.meterd.QueryRequest(device=dev, metric="energy", limit=2)
    q.__getattribute__("from").CopyFrom(ts(pb, base + 60))
    q.to.CopyFrom(ts(pb, base + 240))
    got = list(stub.Query(q, timeout=10))
    assert [(r.ts.seconds, r.value) for r in got] == [(base + 60, 101.0), (base + 120, 102.0)]


def test_query_streams_more_than_one_page_in_order(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("big")
    n = 1500
    stub.Write(pb.meterd.WriteRequest(
        readings=[point(pb, dev, 1700000000 + i, float(i % 7)) for i in range(n)]), timeout=30)
    srv.drained()
    got = [(r.ts.seconds, r.value) for r in stub.Query(pb.meterd.QueryRequest(device=dev),
                                                       timeout=30)]
    assert got == [(1700000000 + i, float(i % 7)) for i in range(n)]


def test_write_keeps_microseconds_and_stores_non_finite_values_as_invalid(pb, meterd_factory,
                                                                           tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("us")
    p1 = point(pb, dev, 1700000000, 1.0)
    p1.ts.nanos = 123456789
    p2 = point(pb, dev, 1700000001, float("nan"))
    stub.Write(pb.meterd.WriteRequest(readings=[p1, p2]), timeout=10)
    srv.drained()
    got = list(stub.Query(pb.meterd.QueryRequest(device=dev), timeout=10))
    assert got[0].ts.nanos == 123456000 and got[0].valid
    assert not got[1].valid and got[1].reason and math.isnan(got[1].value)


@pytest.mark.parametrize("mutate,message", [
    (lambda pts: pts[2].ClearField("device") or pts, "readings[2].device: must not be empty"),
    (lambda pts: pts[1].ClearField("metric") or pts, "readings[1].metric: must not be empty"),
    (lambda pts: pts[0].ClearField("ts") or pts, "readings[0].ts: missing"),
    (lambda pts: setattr(pts[1].ts, "seconds", 253402300800) or pts,
     "readings[1].ts: outside years 0001..9999"),
    (lambda pts: setattr(pts[0], "kind", "toaster") or pts,
     "readings[0].kind: must be one of meter, device, vehicle, client"),
    (lambda pts: setattr(pts[2], "device", "a/b") or pts,
     "readings[2].device: must not contain '/'"),
    (lambda pts: setattr(pts[0], "device", "x" * 257) or pts,
     "readings[0].device: 257 bytes exceed the limit of 256"),
    (lambda pts: [], "readings: must not be empty"),
])
def test_write_rejects_bad_input_with_invalid_argument_naming_the_field(
        pb, meterd_factory, tmp_path, channel_of, mutate, message):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("bad")
    pts = mutate([point(pb, dev, 1700000000 + i, 1.0) for i in range(3)])
    with pytest.raises(grpc.RpcError) as ei:
        stub.Write(pb.meterd.WriteRequest(readings=pts), timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == message
    # all or nothing: the valid readings of the rejected request were not stored
    assert srv.get("/api/v1/devices/%s" % dev).status_code == 404
    assert srv.running()


def test_write_over_max_readings_is_invalid_argument(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path, extra=["--max-readings", "2"])
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    pts = [point(pb, uid(), 1700000000 + i, 1.0) for i in range(3)]
    with pytest.raises(grpc.RpcError) as ei:
        stub.Write(pb.meterd.WriteRequest(readings=pts), timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "readings: 3 readings exceed the limit of 2"


@pytest.mark.parametrize("extra, says", [
    (["--max-backlog-bytes", "64k"], "backlog"),
    (["--max-body-bytes", "64k", "--max-inflight-bytes", "64k"], "--max-inflight-bytes"),
], ids=["backlog", "memory"])
def test_write_over_a_budget_is_resource_exhausted_and_stores_nothing(
        pb, meterd_factory, tmp_path, channel_of, extra, says):
    srv = start_grpc_server(meterd_factory, tmp_path, extra=extra)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("toobig") + "-" + "x" * 40
    pts = [point(pb, dev, 1700000000 + i, float(i)) for i in range(3000)]  # > 64 KiB encoded
    with pytest.raises(grpc.RpcError) as ei:
        stub.Write(pb.meterd.WriteRequest(readings=pts), timeout=10)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert says in ei.value.details()
    assert srv.get("/api/v1/devices/%s" % dev).status_code == 404
    stub.Write(pb.meterd.WriteRequest(readings=pts[:10]), timeout=10)  # a small one fits
    # given back when the call is freed, which may come just after the client has its reply
    assert wait_for(lambda: srv.metrics()["meterd_request_memory_bytes"] == 0)


def test_malformed_request_bytes_are_invalid_argument(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    raw = channel_of(srv).unary_unary("/meterd.v1.Meterd/Write")  # no serializer: bytes as is
    with pytest.raises(grpc.RpcError) as ei:
        raw(b"\xff\xff\xff\xff\x0f", timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "WriteRequest" in ei.value.details()
    assert srv.running()


def test_query_of_an_unknown_device_is_not_found(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("nobody")
    with pytest.raises(grpc.RpcError) as ei:
        list(stub.Query(pb.meterd.QueryRequest(device=dev), timeout=10))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert dev in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        list(stub.Query(pb.meterd.QueryRequest(), timeout=10))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "device: must not be empty"


def test_query_past_its_deadline_stops_and_the_server_keeps_serving(pb, meterd_factory, tmp_path,
                                                                    channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("slow")
    n = 20000
    stub.Write(pb.meterd.WriteRequest(
        readings=[point(pb, dev, 1600000000 + i, 1.0) for i in range(n)]), timeout=60)
    srv.drained(60)
    received = 0
    with pytest.raises(grpc.RpcError) as ei:
        for _ in stub.Query(pb.meterd.QueryRequest(device=dev), timeout=0.5):
            received += 1
            if received % 200 == 0:
                time.sleep(0.1)  # a slow reader: the stream cannot finish in time
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0 < received < n
    # the abandoned stream does not wedge anything
    got = sum(1 for _ in stub.Query(pb.meterd.QueryRequest(device=dev, limit=10), timeout=10))
    assert got == 10
    health = pb.health_grpc.HealthStub(channel_of(srv))
    assert health.Check(pb.health.HealthCheckRequest(), timeout=10).status == \
        pb.health.HealthCheckResponse.SERVING


def test_health_check_is_serving(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.health_grpc.HealthStub(channel_of(srv))
    for service in ("", "meterd.v1.Meterd", "meterusage.v1.MeterUsage"):
        r = stub.Check(pb.health.HealthCheckRequest(service=service), timeout=10)
        assert r.status == pb.health.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as ei:
        stub.Check(pb.health.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_methods_are_unimplemented(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    ch = channel_of(srv)
    with pytest.raises(grpc.RpcError) as ei:
        ch.unary_unary("/meterd.v1.Meterd/Delete")(b"", timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as ei:
        list(pb.health_grpc.HealthStub(ch).Watch(pb.health.HealthCheckRequest(), timeout=10))
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_sigterm_with_grpc_clients_stops_cleanly(pb, meterd_factory, tmp_path, channel_of):
    srv = start_grpc_server(meterd_factory, tmp_path)
    stub = pb.meterd_grpc.MeterdStub(channel_of(srv))
    dev = uid("stop")
    stub.Write(pb.meterd.WriteRequest(readings=[point(pb, dev, 1700000000, 1.0)]), timeout=10)
    assert srv.stop(timeout=20) == 0
    assert any(l.get("event") == "grpc_stopped" for l in srv.logs())


def test_empty_grpc_addr_disables_grpc(meterd_factory, tmp_path):
    port = free_port()
    srv = meterd_factory(extra_args=["--grpc-addr", ""], env={"METERD_GRPC_ADDR": "127.0.0.1:%d" % port})
    assert not any(l.get("event") == "grpc_started" for l in srv.logs())
    env_off = meterd_factory(env={"METERD_GRPC_ADDR": ""})
    assert not any(l.get("event") == "grpc_started" for l in env_off.logs())
