"""Rejected requests: exact JSON error shape, status codes, and nothing reaches the store."""
import datetime
import json
import re

import pytest
import requests

from conftest import reading, uid

TS = "2026-03-18T10:15:00Z"
PATH = "/api/v1/readings"
REASONS = {400: ("Bad Request",), 404: ("Not Found",), 405: ("Method Not Allowed",),
           413: ("Payload Too Large", "Content Too Large"), 415: ("Unsupported Media Type",)}


def assert_error(r, status, path=PATH, message_re=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["statusCode"] == status
    assert body["error"] in REASONS[status]
    assert body["path"] == path
    assert isinstance(body["message"], str) and body["message"]
    datetime.datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert body["request_id"] and body["request_id"] == r.headers["X-Request-Id"]
    if message_re:
        assert re.search(message_re, body["message"]), body["message"]
    return body


def post_raw(srv, data, content_type="application/json", path=PATH):
    headers = {"Content-Type": content_type} if content_type else {}
    if isinstance(data, str):
        data = data.encode()
    return requests.post(srv.base_url + path, data=data, headers=headers, timeout=30)


def assert_not_stored(srv, dev):
    srv.drained()
    r = srv.get("/api/v1/devices/" + dev)
    assert r.status_code == 404, r.text
    r = srv.get("/api/v1/devices/%s/readings" % dev)
    assert r.status_code == 404, r.text


def test_malformed_json_is_400_with_the_position(shared_meterd):
    dev = uid()
    r = post_raw(shared_meterd, '{"readings":[{"device":"%s","metric":"energy",' % dev)
    body = assert_error(r, 400)
    assert re.search(r"\d", body["message"]) and re.search(
        r"line|column|position|offset|byte", body["message"]), body["message"]
    assert_not_stored(shared_meterd, dev)


def test_third_bad_reading_rejects_the_whole_batch(shared_meterd):
    dev = uid()
    batch = [reading(dev, TS, 1.0), reading(dev, "2026-03-18T10:30:00Z", 2.0),
             reading(dev, "2026-03-18T10:45:00Z", 3.0),
             reading(dev, "not a time", 4.0)]
    r = shared_meterd.post(PATH, {"readings": batch})
    assert_error(r, 400, message_re=r"^readings\[3\]\.ts: ")
    assert_not_stored(shared_meterd, dev)


@pytest.mark.parametrize("field,value,pattern", [
    ("value", "1.5", r"^readings\[1\]\.value: "),
    ("value", None, r"^readings\[1\]\.value: "),
    ("value", True, r"^readings\[1\]\.value: "),
    ("device", 17, r"^readings\[1\]\.device: "),
    ("device", "", r"^readings\[1\]\.device: "),
    ("metric", ["energy"], r"^readings\[1\]\.metric: "),
    ("metric", "", r"^readings\[1\]\.metric: "),
    ("ts", True, r"^readings\[1\]\.ts: "),
    ("ts", "2026-03-18T10:15:00", r"^readings\[1\]\.ts: "),   # no offset: ambiguous
    ("ts", "2026-13-18T10:15:00Z", r"^readings\[1\]\.ts: "),
    ("ts", "2026-02-30T10:15:00Z", r"^readings\[1\]\.ts: "),
    ("ts", "18/03/2026 10:15", r"^readings\[1\]\.ts: "),
    ("kind", "spaceship", r"^readings\[1\]\.kind: "),
])
def test_wrong_field_type_or_value_is_400_naming_the_field(shared_meterd, field, value, pattern):
    dev = uid()
    bad = reading(dev, TS, 1.0)
    bad[field] = value
    r = shared_meterd.post(PATH, {"readings": [reading(dev, "2026-03-18T09:00:00Z", 1.0), bad]})
    assert_error(r, 400, message_re=pattern)
    assert_not_stored(shared_meterd, dev)


@pytest.mark.parametrize("missing", ["device", "metric", "ts", "value"])
def test_missing_required_field_is_400_naming_it(shared_meterd, missing):
    dev = uid()
    rd = reading(dev, TS, 1.0)
    del rd[missing]
    r = shared_meterd.post(PATH, {"readings": [reading(dev, "2026-03-18T09:00:00Z", 1.0), rd]})
    body = assert_error(r, 400, message_re=r"^readings\[1\]")
    assert missing in body["message"]
    assert_not_stored(shared_meterd, dev)


@pytest.mark.parametrize("body", [
    '{"readings": []}', '{}', '[]', '{"readings": {}}', '{"readings": null}', '"x"', '',
    '{"readings": [1]}',
])
def test_empty_or_misshapen_body_is_400(shared_meterd, body):
    assert_error(post_raw(shared_meterd, body), 400)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_or_out_of_range_numbers_are_400(shared_meterd, literal):
    dev = uid()
    body = '{"readings":[{"device":"%s","metric":"energy","ts":"%s","value":%s}]}' % (
        dev, TS, literal)
    assert_error(post_raw(shared_meterd, body), 400)
    assert_not_stored(shared_meterd, dev)


def test_out_of_range_epoch_milliseconds_is_400(shared_meterd):
    dev = uid()
    body = '{"readings":[{"device":"%s","metric":"energy","ts":99999999999999999999999,"value":1}]}' % dev
    assert_error(post_raw(shared_meterd, body), 400)
    assert_not_stored(shared_meterd, dev)


def test_wrong_content_type_is_415(shared_meterd):
    dev = uid()
    body = json.dumps({"readings": [reading(dev, TS, 1.0)]})
    assert_error(post_raw(shared_meterd, body, content_type="text/plain"), 415)
    assert_not_stored(shared_meterd, dev)


def test_missing_content_type_is_accepted_as_json(shared_meterd):
    dev = uid()
    body = json.dumps({"readings": [reading(dev, TS, 1.0)]})
    r = post_raw(shared_meterd, body, content_type=None)
    assert "Content-Type" not in r.request.headers
    assert r.status_code == 202, r.text
    r = post_raw(shared_meterd, json.dumps({"readings": [reading(dev, "2026-03-18T10:16:00Z", 2.0)]}),
                 content_type="application/json; charset=utf-8")
    assert r.status_code == 202, r.text
    shared_meterd.drained()
    assert len(shared_meterd.readings(dev)) == 2


def test_unknown_route_is_404_json(shared_meterd):
    r = shared_meterd.get("/api/v1/nothing-here")
    assert_error(r, 404, path="/api/v1/nothing-here")
    r = shared_meterd.post("/api/v2/readings", {"readings": []})
    assert_error(r, 404, path="/api/v2/readings")


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_wrong_method_is_405_with_allow_post(shared_meterd, method):
    r = requests.request(method, shared_meterd.base_url + PATH, timeout=30)
    assert_error(r, 405)
    allow = [m.strip() for m in r.headers.get("Allow", "").split(",")]
    assert "POST" in allow, r.headers


@pytest.fixture(scope="module")
def small_limits(tmp_path_factory):
    from conftest import Meterd, _finish
    srv = Meterd(tmp_path_factory.mktemp("limits"),
                 extra_args=["--max-body-bytes", "1k", "--max-readings", "5"])
    srv.start()
    yield srv
    _finish(srv)


def test_body_over_max_body_bytes_is_413(small_limits):
    dev = uid()
    body = json.dumps({"readings": [reading(dev, TS, 1.0, site="x" * 1100)]})
    assert len(body) > 1024
    assert_error(post_raw(small_limits, body), 413)
    assert_not_stored(small_limits, dev)
    # just under the limit still works
    ok = json.dumps({"readings": [reading(dev, TS, 1.0)]})
    assert post_raw(small_limits, ok).status_code == 202


def test_more_readings_than_max_readings_is_413(small_limits):
    dev = uid()
    six = [reading(dev, 1773828900000 + i, 1.0) for i in range(6)]
    assert len(json.dumps({"readings": six})) < 1024
    assert_error(small_limits.post(PATH, {"readings": six}), 413)
    assert_not_stored(small_limits, dev)
    assert small_limits.post(PATH, {"readings": six[:5]}).status_code == 202
    small_limits.drained()
    assert len(small_limits.readings(dev)) == 5


def test_server_keeps_serving_after_a_rejected_request_on_the_same_connection(shared_meterd):
    s = requests.Session()
    url = shared_meterd.base_url + PATH
    assert s.post(url, data=b"{nope", headers={"Content-Type": "application/json"},
                  timeout=30).status_code == 400
    dev = uid()
    assert s.post(url, json={"readings": [reading(dev, TS, 1.0)]}, timeout=30).status_code == 202


def test_chunked_body_over_max_body_bytes_is_413(small_limits):
    dev = uid()
    body = json.dumps({"readings": [reading(dev, TS, 1.0, site="y" * 4000)]}).encode()

    def gen():
        for i in range(0, len(body), 500):
            yield body[i:i + 500]

    r = requests.post(small_limits.base_url + PATH, data=gen(),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(r, 413)
    assert_not_stored(small_limits, dev)


def test_large_body_far_over_the_limit_gets_413_not_a_reset(small_limits):
    body = b'{"readings":[' + b" " * (2 * 1024 * 1024) + b"]}"
    r = post_raw(small_limits, body)
    assert_error(r, 413)
    assert small_limits.get("/ready").status_code == 200


def test_read_routes_reject_post_with_405_allow_get(shared_meterd):
    for path in ("/api/v1/devices", "/api/v1/anomalies", "/health"):
        r = shared_meterd.post(path, {})
        assert_error(r, 405, path=path)
        assert "GET" in [m.strip() for m in r.headers.get("Allow", "").split(",")], r.headers
