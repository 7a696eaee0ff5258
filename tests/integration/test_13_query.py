"""Read side: devices, readings with paging and filters, live state, anomalies."""
import datetime
import time

import pytest
import requests

from conftest import reading, uid

T0 = 1773828900000  # 2026-03-18T10:15:00Z in epoch ms


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def now_iso(offset_s=0):
    return iso(int((time.time() + offset_s)) * 1000)


def assert_400(r, path_prefix="/api/v1/"):
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request" and body["message"]
    assert body["path"].startswith(path_prefix)


@pytest.fixture(scope="module")
def paged(shared_meterd):
    """One device with 250 energy readings (one a minute from T0) and 10 voltage readings."""
    dev = uid("paged")
    rs = [reading(dev, T0 + i * 60000, float(i)) for i in range(250)]
    rs += [reading(dev, T0 + i * 60000, 230.0 + i, metric="voltage") for i in range(10)]
    shared_meterd.post_readings(rs[::-1])  # order in the request does not matter
    shared_meterd.drained()
    return dev


def test_paging_250_readings_with_limit_100_gives_three_ordered_pages(shared_meterd, paged):
    url = "/api/v1/devices/%s/readings" % paged
    pages, cursor = [], None
    while True:
        params = {"limit": 100, "metric": "energy"}
        if cursor:
            params["cursor"] = cursor
        body = shared_meterd.get(url, params=params).json()
        assert body["device"] == paged and body["metric"] == "energy"
        pages.append(body["readings"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
        assert len(pages) < 10
    assert [len(p) for p in pages] == [100, 100, 50]
    flat = [x for p in pages for x in p]
    assert [x["ts"] for x in flat] == [iso(T0 + i * 60000) for i in range(250)]
    assert [x["value"] for x in flat] == [float(i) for i in range(250)]


def test_readings_without_metric_filter_are_ordered_by_ts_then_metric(shared_meterd, paged):
    got = shared_meterd.readings(paged, limit=7)
    assert len(got) == 260
    keys = [(x["ts"], x["metric"]) for x in got]
    assert keys == sorted(keys) and len(set(keys)) == 260
    assert [x["metric"] for x in got[:4]] == ["energy", "voltage", "energy", "voltage"]
    r = shared_meterd.get("/api/v1/devices/%s/readings" % paged, params={"limit": 5})
    assert "metric" not in r.json()


def test_metric_filter_returns_only_that_metric(shared_meterd, paged):
    got = shared_meterd.readings(paged, metric="voltage")
    assert [(x["metric"], x["value"]) for x in got] == [("voltage", 230.0 + i) for i in range(10)]
    assert shared_meterd.readings(paged, metric="no-such-metric") == []


def test_from_is_inclusive_and_to_is_exclusive_in_rfc3339_and_epoch_ms(shared_meterd, paged):
    want = [float(i) for i in range(10, 20)]
    a = shared_meterd.readings(paged, metric="energy", **{"from": iso(T0 + 10 * 60000),
                                                         "to": iso(T0 + 20 * 60000)})
    assert [x["value"] for x in a] == want
    b = shared_meterd.readings(paged, metric="energy", **{"from": T0 + 10 * 60000,
                                                         "to": T0 + 20 * 60000})
    assert [x["value"] for x in b] == want
    c = shared_meterd.readings(paged, metric="energy", **{"from": "2026-03-18T11:25:00+01:00",
                                                         "to": "2026-03-18T11:35:00+01:00"})
    assert [x["value"] for x in c] == want
    assert shared_meterd.readings(paged, **{"from": iso(T0 + 300 * 60000)}) == []


def test_from_to_and_paging_combine(shared_meterd, paged):
    got = shared_meterd.readings(paged, metric="energy", limit=3,
                                 **{"from": iso(T0 + 100 * 60000), "to": iso(T0 + 110 * 60000)})
    assert [x["value"] for x in got] == [float(i) for i in range(100, 110)]


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": -1}, {"limit": "x"}, {"limit": 10001}, {"limit": "1.5"},
    {"from": "yesterday"}, {"to": "2026-03-18T10:15:00"}, {"from": "2026-13-01T00:00:00Z"},
    {"cursor": "garbage!!"}, {"cursor": "eyJ4IjoxfQ"},
])
def test_bad_query_parameters_are_400(shared_meterd, paged, params):
    assert_400(shared_meterd.get("/api/v1/devices/%s/readings" % paged, params=params))


def test_limit_10000_is_allowed(shared_meterd, paged):
    r = shared_meterd.get("/api/v1/devices/%s/readings" % paged, params={"limit": 10000})
    assert r.status_code == 200 and len(r.json()["readings"]) == 260


def test_unknown_device_is_404_json(shared_meterd):
    for path in ("/api/v1/devices/nobody-%s" % uid(), "/api/v1/devices/nobody-%s/readings" % uid(),
                 "/api/v1/devices/nobody-%s/live" % uid()):
        r = shared_meterd.get(path)
        assert r.status_code == 404, (path, r.text)
        body = r.json()
        assert body["statusCode"] == 404 and body["error"] == "Not Found" and body["path"] == path


def test_device_object_has_kind_and_seen_times_and_site_only_when_set(shared_meterd):
    a, b = uid("a"), uid("b")
    shared_meterd.post_readings([reading(a, T0, 1.0, kind="meter"),
                                 reading(a, T0 + 60000, 1.0, kind="meter"),
                                 reading(b, T0, 1.0, kind="device", site="site-9")])
    shared_meterd.drained()
    da = shared_meterd.get("/api/v1/devices/" + a).json()
    assert set(da) == {"id", "kind", "first_seen_at", "last_seen_at"}
    assert da["id"] == a and da["kind"] == "meter"
    for k in ("first_seen_at", "last_seen_at"):
        datetime.datetime.fromisoformat(da[k].replace("Z", "+00:00"))
    assert da["first_seen_at"] <= da["last_seen_at"]
    db = shared_meterd.get("/api/v1/devices/" + b).json()
    assert db["site"] == "site-9" and db["kind"] == "device"


def test_device_list_is_ordered_by_id_and_pages_with_cursor(meterd):
    ids = ["dev-%02d" % i for i in range(25)]
    meterd.post_readings([reading(d, T0, 1.0) for d in reversed(ids)])
    meterd.drained()
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        r = meterd.get("/api/v1/devices", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["devices"]) <= 10
        for d in body["devices"]:
            assert {"id", "kind", "first_seen_at", "last_seen_at"} <= set(d)
        seen += [d["id"] for d in body["devices"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == ids
    assert pages == 3
    assert_400(meterd.get("/api/v1/devices", params={"limit": 0}))
    assert_400(meterd.get("/api/v1/devices", params={"cursor": "%%%"}))


def test_live_state_keeps_newest_reading_per_metric_when_an_older_one_arrives_late(shared_meterd):
    dev = uid("live")
    shared_meterd.post_readings([reading(dev, T0 + 120000, 20.0),
                                 reading(dev, T0, 5.0, metric="voltage")])
    shared_meterd.drained()
    shared_meterd.post_readings([reading(dev, T0 + 60000, 10.0)])  # late and older
    shared_meterd.drained()
    body = shared_meterd.get("/api/v1/devices/%s/live" % dev).json()
    assert body["device"] == dev
    live = {x["metric"]: x for x in body["live"]}
    assert set(live) == {"energy", "voltage"}
    assert (live["energy"]["ts"], live["energy"]["value"]) == (iso(T0 + 120000), 20.0)
    assert live["energy"]["status"] == "valid"
    assert (live["voltage"]["ts"], live["voltage"]["value"]) == (iso(T0), 5.0)
    shared_meterd.post_readings([reading(dev, T0 + 180000, 30.0)])  # newer replaces
    shared_meterd.drained()
    live = {x["metric"]: x for x in shared_meterd.get("/api/v1/devices/%s/live" % dev).json()["live"]}
    assert (live["energy"]["ts"], live["energy"]["value"]) == (iso(T0 + 180000), 30.0)
    assert len(shared_meterd.readings(dev, metric="energy")) == 3


def anomalies(srv, **params):
    out, cursor = [], None
    while True:
        q = dict(params)
        if cursor:
            q["cursor"] = cursor
        r = srv.get("/api/v1/anomalies", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["anomalies"]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def test_negative_value_is_stored_invalid_and_listed_as_anomaly(shared_meterd):
    dev = uid("neg")
    shared_meterd.post_readings([reading(dev, T0, 5.0), reading(dev, T0 + 60000, -2.5)])
    shared_meterd.drained()
    got = shared_meterd.readings(dev)
    assert [(x["value"], x["status"]) for x in got] == [(5.0, "valid"), (-2.5, "invalid")]
    assert got[1]["reason"] == "negative value detected"
    assert "reason" not in got[0]
    an = anomalies(shared_meterd, device=dev)
    assert len(an) == 1
    a = an[0]
    assert (a["device"], a["metric"], a["ts"], a["value"], a["status"], a["reason"]) == (
        dev, "energy", iso(T0 + 60000), -2.5, "invalid", "negative value detected")


def test_value_over_three_times_rolling_average_is_a_spike(shared_meterd):
    dev = uid("spike")
    shared_meterd.post_readings([reading(dev, T0 + i * 60000, 100.0) for i in range(10)])
    shared_meterd.drained()
    shared_meterd.post_readings([reading(dev, T0 + 10 * 60000, 250.0),   # 2.5x: fine
                                 reading(dev, T0 + 11 * 60000, 1000.0)])  # ~8.9x: spike
    shared_meterd.drained()
    got = shared_meterd.readings(dev)
    assert [x["status"] for x in got] == ["valid"] * 11 + ["invalid"]
    assert got[11]["value"] == 1000.0
    assert got[11]["reason"].startswith("sudden spike detected"), got[11]["reason"]
    an = anomalies(shared_meterd, device=dev)
    assert [(a["ts"], a["value"]) for a in an] == [(iso(T0 + 11 * 60000), 1000.0)]
    assert an[0]["reason"].startswith("sudden spike detected")


def test_no_spike_check_before_ten_values(shared_meterd):
    dev = uid("few")
    shared_meterd.post_readings([reading(dev, T0 + i * 60000, 1.0) for i in range(5)])
    shared_meterd.drained()
    shared_meterd.post_readings([reading(dev, T0 + 5 * 60000, 1000.0)])
    shared_meterd.drained()
    assert [x["status"] for x in shared_meterd.readings(dev)] == ["valid"] * 6


def test_reading_far_in_the_future_is_invalid(shared_meterd):
    dev = uid("fut")
    shared_meterd.post_readings([reading(dev, now_iso(3600), 1.0),
                                 reading(dev, now_iso(60), 2.0, metric="near")])
    shared_meterd.drained()
    got = {x["metric"]: x for x in shared_meterd.readings(dev)}
    assert got["energy"]["status"] == "invalid"
    assert "future" in got["energy"]["reason"]
    assert got["near"]["status"] == "valid"
    an = anomalies(shared_meterd, device=dev)
    assert [a["metric"] for a in an] == ["energy"]


def test_anomalies_filter_by_time_and_page_with_cursor(shared_meterd):
    dev = uid("anp")
    shared_meterd.post_readings([reading(dev, T0 + i * 60000, -1.0 - i) for i in range(5)])
    shared_meterd.drained()
    allv = anomalies(shared_meterd, device=dev, limit=2)
    assert [a["value"] for a in allv] == [-1.0, -2.0, -3.0, -4.0, -5.0]
    for a in allv:
        assert {"device", "metric", "ts", "value", "status", "reason"} <= set(a)
    some = anomalies(shared_meterd, device=dev, **{"from": iso(T0 + 60000), "to": T0 + 3 * 60000})
    assert [a["value"] for a in some] == [-2.0, -3.0]
    assert_400(shared_meterd.get("/api/v1/anomalies", params={"from": "soon"}))
    assert_400(shared_meterd.get("/api/v1/anomalies", params={"limit": 0}))


def test_device_ids_with_spaces_and_unicode_round_trip(shared_meterd):
    suffix = uid("")
    ids = ["site 1 meter" + suffix, "zähler-ü" + suffix, "x?y=1&z#%41" + suffix]
    shared_meterd.post_readings([reading(d, T0, 1.0) for d in ids])
    shared_meterd.drained()
    for d in ids:
        enc = requests.utils.quote(d, safe="")
        r = shared_meterd.get("/api/v1/devices/" + enc)
        assert r.status_code == 200, (d, r.status_code, r.text)
        assert r.json()["id"] == d
        r = shared_meterd.get("/api/v1/devices/%s/readings" % enc)
        assert r.status_code == 200, (d, r.text)
        assert r.json()["device"] == d and len(r.json()["readings"]) == 1


def test_device_id_with_a_slash_is_either_rejected_or_readable(shared_meterd):
    """A device the ingest API accepts must be reachable through the read API."""
    d = "feeder/7-" + uid()
    r = shared_meterd.post("/api/v1/readings", {"readings": [reading(d, T0, 1.0)]})
    if r.status_code == 400:
        return
    assert r.status_code == 202, r.text
    shared_meterd.drained()
    enc = requests.utils.quote(d, safe="")
    r = shared_meterd.get("/api/v1/devices/" + enc)
    assert r.status_code == 200, (enc, r.status_code, r.text)
    assert r.json()["id"] == d
    r = shared_meterd.get("/api/v1/devices/%s/readings" % enc)
    assert r.status_code == 200 and len(r.json()["readings"]) == 1, r.text
    ids = [x["id"] for x in shared_meterd.get("/api/v1/devices", params={"limit": 10000}).json()["devices"]]
    assert d in ids


def test_anomaly_pages_across_devices_with_equal_times_lose_nothing(meterd):
    # three devices, the same metric and timestamps: the order (and cursor) must include the device
    devs = [uid("anx%d" % i) for i in range(3)]
    meterd.post_readings([reading(d, T0 + i * 1000, -1.0 - i) for d in devs for i in range(4)])
    meterd.drained()
    seen = anomalies(meterd, limit=5)
    keys = [(a["ts"], a["device"], a["metric"]) for a in seen]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert keys == sorted(keys)
