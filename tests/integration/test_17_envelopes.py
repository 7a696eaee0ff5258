"""Gateway envelopes: POST /api/v1/envelopes, client devices, GET /api/v1/clients/{fp}/readings."""
import datetime
import uuid

import pytest

from conftest import uid

RECEIVED = "2025-12-29T10:30:00Z"
RECEIVED_DT = datetime.datetime(2025, 12, 29, 10, 30, tzinfo=datetime.timezone.utc)


def dmy(dt):
    return dt.strftime("%d/%m/%Y %H:%M:%S")


def at(seconds):
    return RECEIVED_DT + datetime.timedelta(seconds=seconds)


def z(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(fp, pm, received_at=RECEIVED, request_id=None):
    return {"request_id": request_id or str(uuid.uuid4()), "client_fingerprint": fp,
            "ip_address": "192.168.1.100", "user_agent": "MeterDevice/1.0",
            "received_at": received_at, "payload": {"PM": pm}}


def pm(date, data, name="power_consumption"):
    return {"date": date, "data": data, "name": name}


def post(srv, body, expect=202):
    r = srv.post("/api/v1/envelopes", body)
    assert r.status_code == expect, (r.status_code, r.text)
    return r.json()


def client_rows(srv, fp, **params):
    r = srv.get("/api/v1/clients/%s/readings" % fp, params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["next_cursor"] is None
    return [(x["metric"], x["ts"], x["value"], x["status"], x.get("reason"))
            for x in body["readings"]]


def test_issue_example_is_accepted_and_creates_the_client(shared_meterd):
    fp = "sha256_" + uuid.uuid4().hex
    body = envelope(fp, [pm("29/12/2025 10:29:55", "245.5"),
                         pm("29/12/2025 10:29:56", "230.1", "voltage")],
                    request_id="550e8400-e29b-41d4-a716-" + uuid.uuid4().hex[:12])
    b = post(shared_meterd, body)
    assert b["accepted"] == 2 and isinstance(b["batch_id"], str)
    shared_meterd.drained()
    d = shared_meterd.get("/api/v1/devices/%s" % fp).json()
    assert d["id"] == fp and d["kind"] == "client"
    assert client_rows(shared_meterd, fp) == [
        ("power_consumption", "2025-12-29T10:29:55Z", 245.5, "valid", None),
        ("voltage", "2025-12-29T10:29:56Z", 230.1, "valid", None)]


def test_last_seen_at_moves_forward_on_a_second_message(shared_meterd):
    fp = "sha256_" + uuid.uuid4().hex
    post(shared_meterd, envelope(fp, [pm(dmy(at(-5)), "1.5")]))
    shared_meterd.drained()
    d1 = shared_meterd.get("/api/v1/devices/%s" % fp).json()
    later = RECEIVED_DT + datetime.timedelta(hours=1)
    post(shared_meterd, envelope(fp, [pm(dmy(later), "2.5")], received_at=z(later)))
    shared_meterd.drained()
    d2 = shared_meterd.get("/api/v1/devices/%s" % fp).json()
    assert d2["first_seen_at"] == d1["first_seen_at"]
    assert d2["last_seen_at"] > d1["last_seen_at"], (d1, d2)
    assert d2["kind"] == "client"
    assert len(client_rows(shared_meterd, fp)) == 2


def test_three_date_formats_are_parsed(shared_meterd):
    fp = uid("fp")
    post(shared_meterd, envelope(fp, [pm("29/12/2025 10:29:55", "1", "a"),
                                      pm("29 10:29:56/12/2025", "2", "b"),
                                      pm("2025-12-29T10:29:57Z", "3", "c"),
                                      pm("2025-12-29T11:29:58+01:00", "4", "d")]))
    shared_meterd.drained()
    assert client_rows(shared_meterd, fp) == [
        ("a", "2025-12-29T10:29:55Z", 1.0, "valid", None),
        ("b", "2025-12-29T10:29:56Z", 2.0, "valid", None),
        ("c", "2025-12-29T10:29:57Z", 3.0, "valid", None),
        ("d", "2025-12-29T10:29:58Z", 4.0, "valid", None)]


OUTSIDE = "timestamp outside \u00b1300 s of received_at"


@pytest.mark.parametrize("offset,status,reason", [
    (-301, "invalid", OUTSIDE), (301, "invalid", OUTSIDE),
    (-3600, "invalid", OUTSIDE), (86400, "invalid", OUTSIDE),
    (-300, "valid", None), (300, "valid", None), (0, "valid", None)])
def test_window_of_300_s_around_received_at(shared_meterd, offset, status, reason):
    fp = uid("fp")
    post(shared_meterd, envelope(fp, [pm(dmy(at(offset)), "10.25")]))
    shared_meterd.drained()
    rows = client_rows(shared_meterd, fp)
    assert len(rows) == 1
    metric, ts, value, st, why = rows[0]
    assert (st, why) == (status, reason), rows
    assert value == 10.25 and metric == "power_consumption"


@pytest.mark.parametrize("data,value,reason", [
    ("abc", None, "data is not a number: 'abc'"),
    ("", None, "data is not a number: ''"),
    ("0x10", None, "data is not a number: '0x10'"),
    ("12.5kW", None, "data is not a number: '12.5kW'"),
    (None, None, "data is missing"),
    ("-3.5", -3.5, "negative value detected"),
    (-2, -2.0, "negative value detected"),
    (7, 7.0, None),
    ("0", 0.0, None),
])
def test_data_is_checked_per_reading(shared_meterd, data, value, reason):
    fp = uid("fp")
    post(shared_meterd, envelope(fp, [pm(dmy(at(0)), data), pm(dmy(at(1)), "1.0", "other")]))
    shared_meterd.drained()
    rows = client_rows(shared_meterd, fp)
    assert rows[0][:3] == ("power_consumption", z(at(0)), value)
    assert rows[0][3:] == ("invalid" if reason else "valid", reason), rows
    assert rows[1] == ("other", z(at(1)), 1.0, "valid", None)


def test_empty_name_is_stored_invalid(shared_meterd):
    fp = uid("fp")
    post(shared_meterd, envelope(fp, [pm(dmy(at(0)), "5", "")]))
    shared_meterd.drained()
    assert client_rows(shared_meterd, fp) == [("", z(at(0)), 5.0, "invalid",
                                               "metric name is empty")]


def test_bad_date_is_stored_invalid_with_the_reason(shared_meterd):
    fp = uid("fp")
    post(shared_meterd, envelope(fp, [pm("31/02/2025 10:00:00", "5"), pm("yesterday", "6", "x")]))
    shared_meterd.drained()
    rows = client_rows(shared_meterd, fp)
    assert len(rows) == 2 and all(r[3] == "invalid" for r in rows), rows
    assert sorted(r[4] for r in rows) == ["invalid date format: '31/02/2025 10:00:00'",
                                          "invalid date format: 'yesterday'"]


UNDECODABLE = [
    ("malformed JSON", '{"client_fingerprint": "FP", "payload": {'),
    ("not an object", '["FP"]'),
    ("missing client_fingerprint", '{"received_at": "%s", "payload": {"PM": []}}' % RECEIVED),
    ("missing payload", '{"client_fingerprint": "FP", "received_at": "%s"}' % RECEIVED),
    ("missing payload.PM", '{"client_fingerprint": "FP", "received_at": "%s", "payload": {}}'
     % RECEIVED),
    ("PM not an array", '{"client_fingerprint": "FP", "received_at": "%s", '
     '"payload": {"PM": {"date": "29/12/2025 10:29:55", "data": "1", "name": "p"}}}' % RECEIVED),
    ("PM entry not an object", '{"client_fingerprint": "FP", "received_at": "%s", '
     '"payload": {"PM": [{"date": "29/12/2025 10:29:55", "data": "1", "name": "p"}, 5]}}'
     % RECEIVED),
]


@pytest.mark.parametrize("name,raw", UNDECODABLE, ids=[u[0] for u in UNDECODABLE])
def test_undecodable_envelope_is_400_and_nothing_is_stored(shared_meterd, name, raw):
    fp = uid("fp")
    r = shared_meterd.post("/api/v1/envelopes", data=raw.replace("FP", fp).encode(),
                           headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (name, r.status_code, r.text)
    j = r.json()
    assert j["statusCode"] == 400 and j["path"] == "/api/v1/envelopes" and j["message"]
    shared_meterd.drained()
    assert shared_meterd.get("/api/v1/devices/%s" % fp).status_code == 404
    assert shared_meterd.get("/api/v1/clients/%s/readings" % fp).status_code == 404


def test_client_readings_of_a_non_client_device_is_404(shared_meterd):
    dev = uid("dev")
    r = shared_meterd.post("/api/v1/readings", {"readings": [
        {"device": dev, "metric": "energy", "ts": "2026-03-18T10:15:00Z", "value": 1.0}]})
    assert r.status_code == 202
    shared_meterd.drained()
    r = shared_meterd.get("/api/v1/clients/%s/readings" % dev)
    assert r.status_code == 404
    assert r.json()["message"] == "client '%s' not found" % dev
    r = shared_meterd.get("/api/v1/clients/%s/readings" % uid("nobody"))
    assert r.status_code == 404


def test_client_readings_page_and_filter_by_metric(shared_meterd):
    fp = uid("fp")
    post(shared_meterd, envelope(fp, [pm(dmy(at(i)), str(i), "m%d" % (i % 2))
                                      for i in range(-100, 100, 20)]))
    shared_meterd.drained()
    r = shared_meterd.get("/api/v1/clients/%s/readings" % fp, params={"limit": 3}).json()
    assert len(r["readings"]) == 3 and r["next_cursor"]
    seen, cursor = [], None
    while True:
        params = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = shared_meterd.get("/api/v1/clients/%s/readings" % fp, params=params).json()
        seen += [x["value"] for x in body["readings"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [float(i) for i in range(-100, 100, 20)]
    m1 = client_rows(shared_meterd, fp, metric="m1")
    assert m1 == []  # all offsets are even
    m0 = client_rows(shared_meterd, fp, metric="m0")
    assert [r[2] for r in m0] == [float(i) for i in range(-100, 100, 20)]
    assert [r[3] for r in m0] == ["invalid"] * 5 + ["valid"] * 5


def test_envelope_window_option_changes_the_window(meterd_factory):
    srv = meterd_factory(extra_args=["--envelope-window", "60"])
    fp = uid("fp")
    post(srv, envelope(fp, [pm(dmy(at(-61)), "1", "a"), pm(dmy(at(-59)), "2", "b"),
                            pm(dmy(at(59)), "3", "c"), pm(dmy(at(61)), "4", "d")]))
    srv.drained()
    why = "timestamp outside \u00b160 s of received_at"
    assert [(r[0], r[3], r[4]) for r in client_rows(srv, fp)] == [
        ("a", "invalid", why), ("b", "valid", None), ("c", "valid", None), ("d", "invalid", why)]
