"""The web side without a browser: content negotiation on /, the embedded spec and Swagger UI,
live events over SSE (one per stored reading, ?device filter), /api/metrics of the seeded
meter, chart series downsampled to at most `points` points, and the device prefix search."""
import datetime
import json
import os
import queue
import socket
import threading
import time

import pytest
import requests
import yaml

from conftest import REPO_ROOT, Meterd, _finish, reading, uid

YEAR_ROWS = 365 * 96  # a year of 15-minute readings
FIRST = datetime.datetime(2019, 1, 1, 0, 15)


def seed_value(i):
    return 55.09 if i == 0 else round(50 + 10 * ((i * 7) % 96) / 96.0, 2)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """One server seeded with a year of 15-minute meterusage readings through --seed-csv."""
    d = tmp_path_factory.mktemp("web")
    csv = d / "usage.csv"
    with open(csv, "w") as f:
        f.write("time,meterusage\n")
        for i in range(YEAR_ROWS):
            t = FIRST + datetime.timedelta(minutes=15 * i)
            f.write("%s,%.2f\n" % (t.strftime("%Y-%m-%d %H:%M:%S"), seed_value(i)))
    srv = Meterd(d, extra_args=["--seed-csv", str(csv)])
    srv.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(srv.get("/api/metrics").json()["metrics"]) == YEAR_ROWS:
            break
        time.sleep(0.2)
    yield srv
    _finish(srv)


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


def test_root_serves_dashboard_to_browsers_and_json_to_others(web):
    r = web.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.headers
    assert "<title>meterd dashboard</title>" in r.text
    assert "/assets/uPlot.iife.min.js" in r.text and "/assets/app.js" in r.text
    assert "Accept" in r.headers.get("Vary", "")
    for accept in (None, "*/*", "application/json", "application/json, text/html",
                   "text/html;q=0, application/json"):
        headers = {"Accept": accept} if accept else {}
        r = web.get("/", headers=headers)
        assert r.headers["Content-Type"].startswith("application/json"), (accept, r.headers)
        assert r.json()["service"] == "Energy Ingestion Engine", accept


def test_dashboard_assets_are_embedded(web):
    page = web.get("/", headers={"Accept": BROWSER_ACCEPT}).text
    for path, ctype in (("/assets/app.js", "text/javascript"), ("/assets/style.css", "text/css"),
                        ("/assets/uPlot.iife.min.js", "text/javascript"),
                        ("/assets/uPlot.min.css", "text/css"),
                        ("/assets/uPlot.LICENSE.txt", "text/plain")):
        r = web.get(path)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(ctype), path
        assert len(r.content) > 100, path
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    r = web.get("/assets/no-such-file.js", headers={"X-Request-Id": "asset-404"})
    assert r.status_code == 404 and "not found" in r.json()["message"]
    assert r.json()["request_id"] == "asset-404"


def test_openapi_yaml_is_served_and_parses(web):
    r = web.get("/openapi.yaml")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/yaml")
    spec = yaml.safe_load(r.text)
    with open(os.path.join(REPO_ROOT, "docs", "api", "openapi.yaml"), encoding="utf-8") as f:
        assert spec == yaml.safe_load(f)
    for path in ("/api/v1/events", "/api/metrics", "/api/v1/devices/{id}/series", "/swagger"):
        assert path in spec["paths"], path


def test_swagger_ui_is_served(web):
    r = web.get("/swagger")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "/assets/swagger-ui-bundle.js" in r.text and "/assets/swagger-ui.css" in r.text
    init = web.get("/assets/swagger-init.js")
    assert init.status_code == 200 and '"/openapi.yaml"' in init.text
    bundle = web.get("/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 500_000
    assert web.get("/assets/swagger-ui.css").headers["Content-Type"].startswith("text/css")


class EventStream:
    """Reads an SSE stream in a thread; events (parsed JSON) land in self.q."""

    def __init__(self, url):
        self.q = queue.Queue()
        self.comments = []
        self.resp = requests.get(url, stream=True, timeout=(5, 60))
        assert self.resp.status_code == 200, self.resp.text
        assert self.resp.headers["Content-Type"].startswith("text/event-stream")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for line in self.resp.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    self.q.put(json.loads(line[6:]))
                elif line.startswith(":"):
                    self.comments.append(line)
        except Exception:  # closed by the test
            pass

    def take(self, n, pred=lambda e: True, timeout=15.0):
        got, deadline = [], time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                e = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if pred(e):
                got.append(e)
        return got

    def close(self):
        # the reader thread holds the response's buffer lock inside recv(): shut the socket
        # down first, or close() waits for the next heartbeat
        try:
            self.resp.raw._connection.sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self.resp.close()


def test_sse_sends_one_event_per_stored_reading_with_device_filter(web):
    a, b = uid("sse-a"), uid("sse-b")
    mine = lambda e: e["device"] in (a, b)  # noqa: E731 (other tests share the server)
    only_a = EventStream(web.base_url + "/api/v1/events?device=" + a)
    every = EventStream(web.base_url + "/api/v1/events")
    try:
        time.sleep(0.2)
        web.post_readings([reading(a, "2026-03-18T10:00:00Z", 1.5),
                           reading(b, "2026-03-18T10:00:00Z", 2.5),
                           reading(a, "2026-03-18T10:15:00Z", -3.0)])
        got_a = only_a.take(2)
        got_all = every.take(3, mine)
        assert [(e["device"], e["metric_value"], e["validation_status"]) for e in got_a] == [
            (a, 1.5, "valid"), (a, -3.0, "invalid")], got_a
        assert got_a[1]["anomaly_reason"] == "negative value detected"
        assert sorted((e["device"], e["metric_value"]) for e in got_all) == sorted(
            [(a, 1.5), (b, 2.5), (a, -3.0)])
        assert set(got_a[0]) >= {"client_id", "device", "device_kind", "metric_name",
                                 "metric_value", "reading_timestamp", "validation_status",
                                 "batch_id"}
        # a duplicate is not stored, so it sends nothing: the next event is the marker
        web.post_readings([reading(a, "2026-03-18T10:00:00Z", 1.5)])
        web.post_readings([reading(a, "2026-03-18T10:30:00Z", 7.0)])
        nxt = only_a.take(1)
        assert [e["metric_value"] for e in nxt] == [7.0], nxt
        assert only_a.take(1, timeout=0.5) == []
        assert not [e for e in got_all if e["device"] not in (a, b)]
    finally:
        only_a.close()
        every.close()


def test_sse_stream_starts_at_once_and_survives_clients_leaving(web):
    for _ in range(20):  # clients that leave are released at their next write
        s = requests.get(web.base_url + "/api/v1/events", stream=True, timeout=(5, 5))
        first = next(s.iter_lines(decode_unicode=True))
        assert first.startswith("retry:") or first.startswith(":"), first
        s.close()
    d = uid("sse-c")
    st = EventStream(web.base_url + "/api/v1/events?device=" + d)
    try:
        web.post_readings([reading(d, "2026-03-18T11:00:00Z", 2.0)])
        assert [e["metric_value"] for e in st.take(1)] == [2.0]
    finally:
        st.close()


def test_api_metrics_returns_the_seeded_meter_in_time_order(web):
    r = web.get("/api/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    metrics = r.json()["metrics"]
    assert len(metrics) == YEAR_ROWS
    assert metrics[0] == {"time": "2019-01-01T00:15:00Z", "meterusage": 55.09}
    assert metrics[1] == {"time": "2019-01-01T00:30:00Z", "meterusage": seed_value(1)}
    assert all(set(m) == {"time", "meterusage"} for m in metrics)
    times = [m["time"] for m in metrics]
    assert times == sorted(times) and len(set(times)) == len(times)


def series(web, device="meterusage", **params):
    params.setdefault("metric", "meterusage")
    r = web.get("/api/v1/devices/%s/series" % device, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    n = body["points"]
    assert len(body["t"]) == len(body["value"]) == len(body["min"]) == len(body["max"]) == n
    assert body["t"] == sorted(body["t"])
    for lo, v, hi in zip(body["min"], body["value"], body["max"]):
        assert lo <= v + 1e-9 and v <= hi + 1e-9
    return body


def test_series_of_a_year_is_downsampled_to_the_chart_width(web):
    for points in (50, 500, 1000, 3000):
        body = series(web, points=points)
        assert body["resolution"] == "hour", body["resolution"]
        assert 0.5 * points <= body["points"] <= points, (points, body["points"])
        assert body["count"] == YEAR_ROWS
        assert body["slot_seconds"] % 3600 == 0 and body["slot_seconds"] > 0
        assert body["from"] == "2019-01-01T00:15:00Z"
    whole = series(web, points=1000)
    assert min(whole["min"]) == 50.0 and max(whole["max"]) == max(seed_value(i) for i in range(96))


def test_series_of_a_small_range_is_raw(web):
    body = series(web, points=1000, **{"from": "2019-03-01T00:00:00Z", "to": "2019-03-02T00:00:00Z"})
    assert body["resolution"] == "raw" and body["points"] == 96 and body["count"] == 96
    assert body["slot_seconds"] == 0
    assert body["t"][0] == datetime.datetime(2019, 3, 1, tzinfo=datetime.timezone.utc).timestamp()
    assert body["value"] == body["min"] == body["max"]
    # more readings than points: rollups even for a day
    body = series(web, points=10, **{"from": "2019-03-01T00:00:00Z", "to": "2019-03-02T00:00:00Z"})
    assert body["resolution"] == "hour" and 1 <= body["points"] <= 10


def test_series_over_years_uses_daily_rollups(web):
    d = uid("years")
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    web.post_readings([reading(d, (start + datetime.timedelta(days=40 * i)).isoformat(), 10.0 + i % 3)
                       for i in range(30)])
    web.drained()
    body = series(web, device=d, metric="energy", points=6)
    assert body["resolution"] == "day" and 1 <= body["points"] <= 6 and body["count"] == 30
    body = series(web, device=d, metric="energy", points=100)
    assert body["resolution"] == "raw" and body["points"] == 30


def test_series_bad_requests(web):
    base = "/api/v1/devices/meterusage/series"
    assert web.get(base).status_code == 400  # metric is required
    assert web.get(base, params={"metric": "meterusage", "points": 0}).status_code == 400
    assert web.get(base, params={"metric": "meterusage", "points": 10001}).status_code == 400
    assert web.get(base, params={"metric": "meterusage", "from": "yesterday"}).status_code == 400
    r = web.get("/api/v1/devices/%s/series" % uid("none"), params={"metric": "x"})
    assert r.status_code == 404 and "not found" in r.json()["message"]
    body = series(web, metric="no-such-metric")
    assert body["points"] == 0 and body["count"] == 0


def test_device_search_by_prefix_pages(web):
    p = uid("srch") + "-"
    web.post_readings([reading("%s%03d" % (p, i), "2026-03-18T10:00:00Z", 1.0) for i in range(12)])
    web.drained()
    ids, cursor, pages = [], None, 0
    while True:
        params = {"prefix": p, "limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = web.get("/api/v1/search/devices", params=params).json()
        ids += [d["id"] for d in body["devices"]]
        cursor, pages = body["next_cursor"], pages + 1
        if not cursor:
            break
    assert ids == ["%s%03d" % (p, i) for i in range(12)] and pages == 3
    body = web.get("/api/v1/search/devices", params={"prefix": p + "01"}).json()
    assert [d["id"] for d in body["devices"]] == [p + "010", p + "011"]
    assert web.get("/api/v1/search/devices", params={"prefix": p + "x"}).json()["devices"] == []
    assert web.get("/api/v1/search/devices", params={"limit": 0}).status_code == 400
