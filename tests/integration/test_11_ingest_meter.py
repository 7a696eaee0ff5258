"""The meter formats: POST /api/readings (JSON map) and /api/readings/raw (protobuf MeterData)."""
import base64
import random

from conftest import metric_sum

# MeterData with exactly the two readings of METER_JSON below.
RAW_VECTOR = "ChEKBgik9unNBhEK16NwPUqTQAoRCgYIoO/pzQYR16NwPQpKk0A="
READINGS = {"2026-03-18T10:15:00Z": 1234.56, "2026-03-18T10:00:00Z": 1234.51}
EXPECTED = [("energy", "2026-03-18T10:00:00Z", 1234.51), ("energy", "2026-03-18T10:15:00Z", 1234.56)]


def meter_no():
    return random.randint(10 ** 8, 10 ** 9)


def stored(srv, dev):
    return [(x["metric"], x["ts"], x["value"]) for x in srv.readings(dev)]


def test_meter_json_is_stored_as_energy_readings_of_a_meter_device(shared_meterd):
    n = meter_no()
    r = shared_meterd.post("/api/readings", {"meter_number": n, "readings": READINGS})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2 and body["batch_id"] and body["position"]
    shared_meterd.drained()
    assert stored(shared_meterd, str(n)) == EXPECTED
    d = shared_meterd.get("/api/v1/devices/%d" % n).json()
    assert d["id"] == str(n) and d["kind"] == "meter"


def test_raw_protobuf_vector_is_stored_as_its_two_readings(shared_meterd):
    n = meter_no()
    r = shared_meterd.post("/api/readings/raw", {"meter_number": n, "data": RAW_VECTOR})
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 2
    shared_meterd.drained()
    assert stored(shared_meterd, str(n)) == EXPECTED
    assert shared_meterd.get("/api/v1/devices/%d" % n).json()["kind"] == "meter"


def test_json_then_raw_vector_of_the_same_readings_leaves_two_readings(meterd):
    n = 12345
    r = meterd.post("/api/readings", {"meter_number": n, "readings": READINGS})
    assert r.status_code == 202, r.text
    meterd.drained()
    dup0 = metric_sum(meterd.metrics(), "meterd_readings_duplicates_total")
    r = meterd.post("/api/readings/raw", {"meter_number": n, "data": RAW_VECTOR})
    assert r.status_code == 202, r.text
    meterd.drained()
    assert stored(meterd, "12345") == EXPECTED
    assert metric_sum(meterd.metrics(), "meterd_readings_duplicates_total") - dup0 == 2


def _assert_400(r, path):
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert body["path"] == path and body["message"]


def test_raw_with_invalid_base64_is_rejected(shared_meterd):
    n = meter_no()
    r = shared_meterd.post("/api/readings/raw", {"meter_number": n, "data": "not base64!!"})
    _assert_400(r, "/api/readings/raw")
    shared_meterd.drained()
    assert shared_meterd.get("/api/v1/devices/%d" % n).status_code == 404


def test_raw_with_bytes_that_are_not_meterdata_is_rejected(shared_meterd):
    n = meter_no()
    junk = base64.b64encode(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").decode()
    r = shared_meterd.post("/api/readings/raw", {"meter_number": n, "data": junk})
    _assert_400(r, "/api/readings/raw")
    shared_meterd.drained()
    assert shared_meterd.get("/api/v1/devices/%d" % n).status_code == 404


def test_raw_with_invalid_meter_number_is_rejected(shared_meterd):
    for bad in ("abc", None, 1.5, -3, [1]):
        r = shared_meterd.post("/api/readings/raw", {"meter_number": bad, "data": RAW_VECTOR})
        _assert_400(r, "/api/readings/raw")
    r = shared_meterd.post("/api/readings/raw", {"data": RAW_VECTOR})
    _assert_400(r, "/api/readings/raw")


def test_meter_json_with_bad_timestamp_key_stores_nothing(shared_meterd):
    n = meter_no()
    r = shared_meterd.post("/api/readings", {"meter_number": n, "readings": {
        "2026-03-18T10:15:00Z": 1.0, "yesterday": 2.0}})
    _assert_400(r, "/api/readings")
    shared_meterd.drained()
    assert shared_meterd.get("/api/v1/devices/%d" % n).status_code == 404


def test_meter_json_with_non_numeric_value_is_rejected(shared_meterd):
    n = meter_no()
    r = shared_meterd.post("/api/readings", {"meter_number": n, "readings": {
        "2026-03-18T10:15:00Z": "1.0"}})
    assert 400 <= r.status_code < 500 and r.status_code in (400, 422), r.text
    shared_meterd.drained()
    assert shared_meterd.get("/api/v1/devices/%d" % n).status_code == 404
