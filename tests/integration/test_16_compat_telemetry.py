"""AC meter and EV telemetry (/ingest/meter, /ingest/vehicle), vehicle-meter links and
GET /v1/analytics/performance/{vehicleId}."""
import datetime
import time

import pytest
import requests

from conftest import uid


def iso(epoch_s):
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


NOW = int(time.time())
RECENT = iso(NOW - 3600)  # within the default 24 h window
T10 = "2026-02-10T10:00:00Z"


def meter(mid, kwh=5.5, volt=220, ts=RECENT):
    return {"meterId": mid, "kwhConsumedAc": kwh, "voltage": volt, "timestamp": ts}


def vehicle(vid, kwh=4.6, temp=32, ts=RECENT, meter_id=None):
    d = {"vehicleId": vid, "kwhDeliveredDc": kwh, "batteryTemp": temp, "timestamp": ts}
    if meter_id is not None:
        d["meterId"] = meter_id
    return d


def post202(srv, path, body):
    r = srv.post(path, body)
    assert r.status_code == 202, (path, r.status_code, r.text)
    return r.json()


def perf(srv, vid, **params):
    r = srv.get("/v1/analytics/performance/%s" % vid, params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


ISSUE_KEYS = ("vehicleId", "acEnergyConsumed", "dcEnergyDelivered", "efficiency", "avgBatteryTemp")


def issue_view(body):
    return {k: body[k] for k in ISSUE_KEYS}


def test_ingest_meter_answers_202_with_batch_id(shared_meterd):
    b = post202(shared_meterd, "/ingest/meter", meter(uid("MTR")))
    assert isinstance(b["batch_id"], str) and len(b["batch_id"]) == 36 and b["accepted"] == 2


@pytest.mark.parametrize("with_meter", [False, True])
def test_ingest_vehicle_answers_202_with_and_without_meter_id(shared_meterd, with_meter):
    vid = uid("VEH")
    b = post202(shared_meterd, "/ingest/vehicle",
                vehicle(vid, meter_id=uid("MTR") if with_meter else None))
    assert b["accepted"] == 2 and isinstance(b["batch_id"], str)
    shared_meterd.drained()
    d = shared_meterd.get("/api/v1/devices/%s" % vid).json()
    assert d["kind"] == "vehicle"
    got = shared_meterd.readings(vid)
    assert sorted((x["metric"], x["value"]) for x in got) == [("battery_temp", 32.0),
                                                               ("kwh_delivered_dc", 4.6)]


def test_meter_readings_become_kwh_consumed_ac_and_voltage(shared_meterd):
    mid = uid("MTR")
    post202(shared_meterd, "/ingest/meter", meter(mid, 5.5, 220, T10))
    shared_meterd.drained()
    assert shared_meterd.get("/api/v1/devices/%s" % mid).json()["kind"] == "meter"
    got = shared_meterd.readings(mid)
    assert [(x["metric"], x["ts"], x["value"], x["status"]) for x in got] == [
        ("kwh_consumed_ac", T10, 5.5, "valid"), ("voltage", T10, 220.0, "valid")]


BAD_METER = [
    ("missing meterId", {"kwhConsumedAc": 1, "voltage": 2, "timestamp": T10}),
    ("empty meterId", {"meterId": "", "kwhConsumedAc": 1, "voltage": 2, "timestamp": T10}),
    ("meterId number", {"meterId": 7, "kwhConsumedAc": 1, "voltage": 2, "timestamp": T10}),
    ("kwh text", {"meterId": "M", "kwhConsumedAc": "x", "voltage": 2, "timestamp": T10}),
    ("kwh missing", {"meterId": "M", "voltage": 2, "timestamp": T10}),
    ("voltage bool", {"meterId": "M", "kwhConsumedAc": 1, "voltage": True, "timestamp": T10}),
    ("bad timestamp", {"meterId": "M", "kwhConsumedAc": 1, "voltage": 2, "timestamp": "soon"}),
    ("no timestamp", {"meterId": "M", "kwhConsumedAc": 1, "voltage": 2}),
]
BAD_VEHICLE = [
    ("missing vehicleId", {"kwhDeliveredDc": 1, "batteryTemp": 2, "timestamp": T10}),
    ("dc text", {"vehicleId": "V", "kwhDeliveredDc": "4.6", "batteryTemp": 2, "timestamp": T10}),
    ("temp missing", {"vehicleId": "V", "kwhDeliveredDc": 1, "timestamp": T10}),
    ("bad timestamp", {"vehicleId": "V", "kwhDeliveredDc": 1, "batteryTemp": 2,
                       "timestamp": "2026-02-30T10:00:00Z"}),
    ("meterId number", {"vehicleId": "V", "kwhDeliveredDc": 1, "batteryTemp": 2,
                        "timestamp": T10, "meterId": 5}),
]


@pytest.mark.parametrize("path,name,body",
                         [("/ingest/meter",) + c for c in BAD_METER] +
                         [("/ingest/vehicle",) + c for c in BAD_VEHICLE],
                         ids=["meter-" + c[0] for c in BAD_METER] +
                         ["vehicle-" + c[0] for c in BAD_VEHICLE])
def test_bad_telemetry_is_400_and_nothing_stored(shared_meterd, path, name, body):
    body = dict(body)
    dev = uid("bad")
    for k in ("meterId", "vehicleId"):
        if body.get(k) in ("M", "V"):
            body[k] = dev
    r = shared_meterd.post(path, body)
    assert r.status_code == 400, (name, r.status_code, r.text)
    j = r.json()
    assert j["statusCode"] == 400 and j["path"] == path and j["message"]
    shared_meterd.drained()
    assert shared_meterd.get("/api/v1/devices/%s" % dev).status_code == 404


@pytest.mark.parametrize("path", ["/ingest/meter", "/ingest/vehicle"])
@pytest.mark.parametrize("raw", ["{", "[1]", "null"])
def test_malformed_or_non_object_telemetry_is_400(shared_meterd, path, raw):
    r = shared_meterd.post(path, data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["statusCode"] == 400


def test_history_is_append_only_per_device_metric_ts_and_live_keeps_newest(shared_meterd):
    mid = uid("MTR")
    t1, t2, t0 = "2026-02-10T10:00:00Z", "2026-02-10T11:00:00Z", "2026-02-10T09:00:00Z"
    post202(shared_meterd, "/ingest/meter", meter(mid, 1.0, 220, t1))
    post202(shared_meterd, "/ingest/meter", meter(mid, 2.0, 221, t2))
    post202(shared_meterd, "/ingest/meter", meter(mid, 1.0, 220, t1))  # resubmission
    post202(shared_meterd, "/ingest/meter", meter(mid, 9.0, 299, t1))  # conflict: first wins
    post202(shared_meterd, "/ingest/meter", meter(mid, 0.5, 219, t0))  # late, older
    shared_meterd.drained()
    got = shared_meterd.readings(mid)
    assert [(x["ts"], x["metric"], x["value"]) for x in got] == [
        (t0, "kwh_consumed_ac", 0.5), (t0, "voltage", 219.0),
        (t1, "kwh_consumed_ac", 1.0), (t1, "voltage", 220.0),
        (t2, "kwh_consumed_ac", 2.0), (t2, "voltage", 221.0)]
    live = shared_meterd.get("/api/v1/devices/%s/live" % mid).json()["live"]
    assert sorted((x["metric"], x["ts"], x["value"]) for x in live) == [
        ("kwh_consumed_ac", t2, 2.0), ("voltage", t2, 221.0)]


def test_performance_matches_the_issue_example(shared_meterd):
    vid, mid = uid("VEH"), uid("MTR")
    post202(shared_meterd, "/ingest/meter", meter(mid, 5.5, 220, RECENT))
    post202(shared_meterd, "/ingest/vehicle", vehicle(vid, 4.6, 32, RECENT, meter_id=mid))
    shared_meterd.drained()
    body = perf(shared_meterd, vid)
    assert issue_view(body) == {"vehicleId": vid, "acEnergyConsumed": 5.5,
                                "dcEnergyDelivered": 4.6, "efficiency": 0.84,
                                "avgBatteryTemp": 32}


def test_performance_default_window_is_the_last_24_hours(shared_meterd):
    vid, mid = uid("VEH"), uid("MTR")
    old = iso(NOW - 25 * 3600)
    post202(shared_meterd, "/ingest/meter", meter(mid, 100.0, 220, old))
    post202(shared_meterd, "/ingest/vehicle", vehicle(vid, 50.0, 10, old, meter_id=mid))
    post202(shared_meterd, "/ingest/meter", meter(mid, 10.0, 220, RECENT))
    post202(shared_meterd, "/ingest/vehicle", vehicle(vid, 9.0, 30, RECENT))
    shared_meterd.drained()
    assert issue_view(perf(shared_meterd, vid)) == {
        "vehicleId": vid, "acEnergyConsumed": 10.0, "dcEnergyDelivered": 9.0,
        "efficiency": 0.9, "avgBatteryTemp": 30}


@pytest.fixture(scope="module")
def fleet(shared_meterd):
    """A vehicle linked to two meters, with hourly readings 10:00, 11:00, 12:00 on 2026-02-10."""
    vid, m1, m2 = uid("VEH"), uid("MTR"), uid("MTR")
    for h, (a1, a2, dc, temp) in zip((10, 11, 12), ((5.0, 1.0, 4.0, 30), (3.0, 2.0, 4.5, 34),
                                                   (1.0, 1.0, 1.5, 38))):
        ts = "2026-02-10T%02d:00:00Z" % h
        post202(shared_meterd, "/ingest/meter", meter(m1, a1, 220, ts))
        post202(shared_meterd, "/ingest/meter", meter(m2, a2, 230, ts))
        post202(shared_meterd, "/ingest/vehicle",
                vehicle(vid, dc, temp, ts, meter_id=m1 if h == 10 else None))
    r = requests.put(shared_meterd.base_url + "/api/v1/vehicles/%s/meter" % vid,
                     json={"meterId": m2}, timeout=10)
    assert r.status_code in (201, 202), r.text
    shared_meterd.drained()
    return vid, m1, m2


def test_performance_sums_ac_over_two_linked_meters(shared_meterd, fleet):
    vid, m1, m2 = fleet
    body = perf(shared_meterd, vid, **{"from": "2026-02-10T00:00:00Z",
                                       "to": "2026-02-11T00:00:00Z"})
    assert issue_view(body) == {"vehicleId": vid, "acEnergyConsumed": 13.0,
                                "dcEnergyDelivered": 10.0, "efficiency": 0.77,
                                "avgBatteryTemp": 34}
    assert sorted(body.get("meterIds", [m1, m2])) == sorted([m1, m2])


@pytest.mark.parametrize("frm,to,ac,dc,eff,temp", [
    ("2026-02-10T10:00:00Z", "2026-02-10T11:00:00Z", 6.0, 4.0, 0.67, 30),      # to exclusive
    ("2026-02-10T11:00:00Z", "2026-02-10T13:00:00Z", 7.0, 6.0, 0.86, 36),      # from inclusive
    ("2026-02-10T10:30:00Z", "2026-02-10T11:30:00Z", 5.0, 4.5, 0.9, 34),       # partial hours
    ("1770717600000", "1770721200000", 6.0, 4.0, 0.67, 30),                    # epoch ms
])
def test_performance_window_includes_and_excludes_readings(shared_meterd, fleet, frm, to, ac, dc,
                                                          eff, temp):
    vid = fleet[0]
    assert issue_view(perf(shared_meterd, vid, **{"from": frm, "to": to})) == {
        "vehicleId": vid, "acEnergyConsumed": ac, "dcEnergyDelivered": dc, "efficiency": eff,
        "avgBatteryTemp": temp}


def test_performance_of_an_empty_window_has_null_efficiency(shared_meterd, fleet):
    body = perf(shared_meterd, fleet[0], **{"from": "2025-01-01T00:00:00Z",
                                            "to": "2025-01-02T00:00:00Z"})
    assert body["acEnergyConsumed"] == 0 and body["dcEnergyDelivered"] == 0
    assert body["efficiency"] is None


def test_efficiency_is_null_when_the_vehicle_has_no_meter(shared_meterd):
    vid = uid("VEH")
    post202(shared_meterd, "/ingest/vehicle", vehicle(vid, 4.6, 32, RECENT))
    shared_meterd.drained()
    assert issue_view(perf(shared_meterd, vid)) == {
        "vehicleId": vid, "acEnergyConsumed": 0, "dcEnergyDelivered": 4.6, "efficiency": None,
        "avgBatteryTemp": 32}


def test_efficiency_is_null_when_linked_ac_is_zero(shared_meterd):
    vid, mid = uid("VEH"), uid("MTR")
    post202(shared_meterd, "/ingest/meter", meter(mid, 0.0, 220, RECENT))
    post202(shared_meterd, "/ingest/vehicle", vehicle(vid, 4.6, 32, RECENT, meter_id=mid))
    shared_meterd.drained()
    body = perf(shared_meterd, vid)
    assert body["acEnergyConsumed"] == 0 and body["efficiency"] is None


def test_put_vehicle_meter_links_and_rejects_bad_bodies(shared_meterd):
    vid, mid = uid("VEH"), uid("MTR")
    post202(shared_meterd, "/ingest/meter", meter(mid, 2.0, 220, RECENT))
    post202(shared_meterd, "/ingest/vehicle", vehicle(vid, 1.0, 20, RECENT))
    shared_meterd.drained()
    assert perf(shared_meterd, vid)["acEnergyConsumed"] == 0
    url = shared_meterd.base_url + "/api/v1/vehicles/%s/meter" % vid
    r = requests.put(url, json={"meterId": mid}, timeout=10)
    assert r.status_code in (201, 202), r.text
    shared_meterd.drained()
    assert issue_view(perf(shared_meterd, vid)) == {
        "vehicleId": vid, "acEnergyConsumed": 2.0, "dcEnergyDelivered": 1.0, "efficiency": 0.5,
        "avgBatteryTemp": 20}
    for body in ({}, {"meterId": ""}, {"meterId": 5}):
        r = requests.put(url, json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["statusCode"] == 400
    r = requests.put(url, data="{", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400


@pytest.mark.parametrize("who", ["UNKNOWN", "meter"])
def test_unknown_vehicle_is_404_vehicle_not_found(shared_meterd, who):
    vid = "UNKNOWN"
    if who == "meter":  # a meter id is not a vehicle
        vid = uid("MTR")
        post202(shared_meterd, "/ingest/meter", meter(vid))
        shared_meterd.drained()
    r = shared_meterd.get("/v1/analytics/performance/%s" % vid)
    assert r.status_code == 404, r.text
    j = r.json()
    assert j["statusCode"] == 404 and j["message"] == "Vehicle not found"
    assert j["path"] == "/v1/analytics/performance/%s" % vid
    assert isinstance(j["timestamp"], str) and j["timestamp"].endswith("Z")


def test_performance_bad_window_is_400(shared_meterd, fleet):
    for params in ({"from": "tomorrow"}, {"from": "2026-02-11T00:00:00Z",
                                          "to": "2026-02-10T00:00:00Z"}):
        r = shared_meterd.get("/v1/analytics/performance/%s" % fleet[0], params=params)
        assert r.status_code == 400, (params, r.text)
