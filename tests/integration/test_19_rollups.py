"""Rollups: GET /api/v1/devices/{id}/aggregates, exact under reordering, duplicates, conflicts and
invalid readings."""
import datetime
import time

import pytest

from conftest import reading, uid

D1 = "2026-03-18T"
D2 = "2026-03-19T"
FUTURE = datetime.datetime.fromtimestamp(int(time.time()) + 86400 * 3, datetime.timezone.utc
                                         ).strftime("%Y-%m-%dT%H:%M:%SZ")

# Three requests, applied in this order; values stay close together so the spike rule never fires.
REQUESTS = [
    [("energy", D1 + "10:45:00Z", 11.0), ("energy", D1 + "11:59:59Z", 16.0),
     ("energy", D2 + "00:10:00Z", 17.0), ("voltage", D1 + "11:10:00Z", 231.0)],
    [("energy", D1 + "10:05:00Z", 12.0), ("energy", D1 + "11:00:00Z", 13.0),
     ("energy", D1 + "10:45:00Z", 11.0),    # duplicate
     ("energy", D1 + "11:59:59Z", 99.0),    # conflict: the first value stays
     ("voltage", D1 + "10:10:00Z", 230.0)],
    [("energy", D1 + "10:30:00Z", 14.0), ("energy", D1 + "10:15:00Z", 15.0),
     ("energy", D2 + "23:50:00Z", 10.0),
     ("energy", D1 + "10:50:00Z", -5.0),    # invalid: negative
     ("energy", FUTURE, 12.0)],             # invalid: in the future
]


def agg(metric, bucket, values):
    """Expected aggregate of [(ts, value)] in one bucket."""
    values = sorted(values)
    vs = [v for _, v in values]
    return {"metric": metric, "bucket": bucket, "count": len(vs), "sum": sum(vs), "min": min(vs),
            "max": max(vs), "mean": sum(vs) / len(vs),
            "first": {"ts": values[0][0], "value": values[0][1]},
            "last": {"ts": values[-1][0], "value": values[-1][1]}}


HOURS = [
    agg("energy", D1 + "10:00:00Z", [(D1 + "10:05:00Z", 12.0), (D1 + "10:15:00Z", 15.0),
                                     (D1 + "10:30:00Z", 14.0), (D1 + "10:45:00Z", 11.0)]),
    agg("voltage", D1 + "10:00:00Z", [(D1 + "10:10:00Z", 230.0)]),
    agg("energy", D1 + "11:00:00Z", [(D1 + "11:00:00Z", 13.0), (D1 + "11:59:59Z", 16.0)]),
    agg("voltage", D1 + "11:00:00Z", [(D1 + "11:10:00Z", 231.0)]),
    agg("energy", D2 + "00:00:00Z", [(D2 + "00:10:00Z", 17.0)]),
    agg("energy", D2 + "23:00:00Z", [(D2 + "23:50:00Z", 10.0)]),
]
DAYS = [
    agg("energy", D1 + "00:00:00Z", [(D1 + "10:05:00Z", 12.0), (D1 + "10:15:00Z", 15.0),
                                     (D1 + "10:30:00Z", 14.0), (D1 + "10:45:00Z", 11.0),
                                     (D1 + "11:00:00Z", 13.0), (D1 + "11:59:59Z", 16.0)]),
    agg("voltage", D1 + "00:00:00Z", [(D1 + "10:10:00Z", 230.0), (D1 + "11:10:00Z", 231.0)]),
    agg("energy", D2 + "00:00:00Z", [(D2 + "00:10:00Z", 17.0), (D2 + "23:50:00Z", 10.0)]),
]


def post_all(srv, dev, requests_):
    for req in requests_:
        srv.post_readings([reading(dev, ts, v, metric=m) for m, ts, v in req])


@pytest.fixture(scope="module")
def dev(shared_meterd):
    d = uid("roll")
    post_all(shared_meterd, d, REQUESTS)
    shared_meterd.drained()
    return d


def aggregates(srv, dev, **params):
    r = srv.get("/api/v1/devices/%s/aggregates" % dev, params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def all_aggregates(srv, dev, **params):
    out, cursor, pages = [], None, 0
    while True:
        q = dict(params)
        if cursor:
            q["cursor"] = cursor
        body = aggregates(srv, dev, **q)
        out += body["aggregates"]
        cursor = body["next_cursor"]
        pages += 1
        if cursor is None:
            return out, pages
        assert pages < 100


def approx(rows):
    """Floats compared to 1e-9 (sums of decimals)."""
    return [dict(r, sum=pytest.approx(r["sum"]), mean=pytest.approx(r["mean"])) for r in rows]


def test_stored_readings_exclude_duplicates_conflicts_and_keep_invalid(shared_meterd, dev):
    got = shared_meterd.readings(dev, metric="energy")
    valid = [(x["ts"], x["value"]) for x in got if x["status"] == "valid"]
    invalid = [(x["ts"], x["value"]) for x in got if x["status"] == "invalid"]
    assert len(valid) == 8 and (D1 + "11:59:59Z", 16.0) in valid
    assert sorted(invalid) == sorted([(D1 + "10:50:00Z", -5.0), (FUTURE, 12.0)])


def test_hourly_aggregates_are_exact(shared_meterd, dev):
    body = aggregates(shared_meterd, dev, bucket="hour")
    assert body["device"] == dev and body["bucket"] == "hour" and body["next_cursor"] is None
    assert body["aggregates"] == approx(HOURS)


def test_hour_is_the_default_bucket(shared_meterd, dev):
    assert aggregates(shared_meterd, dev)["aggregates"] == approx(HOURS)


def test_daily_aggregates_are_exact(shared_meterd, dev):
    body = aggregates(shared_meterd, dev, bucket="day")
    assert body["bucket"] == "day"
    assert body["aggregates"] == approx(DAYS)


def test_metric_filter(shared_meterd, dev):
    assert aggregates(shared_meterd, dev, metric="voltage", bucket="day")["aggregates"] == \
        approx([DAYS[1]])
    assert aggregates(shared_meterd, dev, metric="energy")["aggregates"] == \
        approx([h for h in HOURS if h["metric"] == "energy"])
    assert aggregates(shared_meterd, dev, metric="nope")["aggregates"] == []


def test_from_and_to_select_buckets(shared_meterd, dev):
    body = aggregates(shared_meterd, dev, bucket="hour",
                      **{"from": D1 + "11:00:00Z", "to": D2 + "00:00:00Z"})
    assert body["aggregates"] == approx(HOURS[2:4])
    body = aggregates(shared_meterd, dev, bucket="day", **{"from": D2 + "00:00:00Z"})
    assert body["aggregates"] == approx(DAYS[2:])


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_paging_with_cursor_returns_every_bucket_once(shared_meterd, dev, limit):
    rows, pages = all_aggregates(shared_meterd, dev, bucket="hour", limit=limit)
    assert rows == approx(HOURS)
    assert pages in (-(-len(HOURS) // limit), -(-len(HOURS) // limit) + 1)


def test_replaying_every_request_changes_nothing(shared_meterd):
    d = uid("roll")
    post_all(shared_meterd, d, REQUESTS)
    shared_meterd.drained()
    before = aggregates(shared_meterd, d, bucket="hour")["aggregates"]
    post_all(shared_meterd, d, REQUESTS[::-1])
    shared_meterd.drained()
    assert aggregates(shared_meterd, d, bucket="hour")["aggregates"] == before == approx(HOURS)
    assert aggregates(shared_meterd, d, bucket="day")["aggregates"] == approx(DAYS)


def test_late_earlier_reading_becomes_first_of_its_bucket(shared_meterd):
    d = uid("roll")
    shared_meterd.post_readings([reading(d, D1 + "10:30:00Z", 5.0)])
    shared_meterd.drained()
    shared_meterd.post_readings([reading(d, D1 + "10:59:00Z", 7.0)])
    shared_meterd.post_readings([reading(d, D1 + "10:01:00Z", 6.0)])
    shared_meterd.drained()
    assert aggregates(shared_meterd, d)["aggregates"] == approx([agg(
        "energy", D1 + "10:00:00Z", [(D1 + "10:01:00Z", 6.0), (D1 + "10:30:00Z", 5.0),
                                     (D1 + "10:59:00Z", 7.0)])])


def test_bad_bucket_is_400(shared_meterd, dev):
    r = shared_meterd.get("/api/v1/devices/%s/aggregates" % dev, params={"bucket": "week"})
    assert r.status_code == 400
    j = r.json()
    assert j["statusCode"] == 400 and j["message"] == "bucket: must be hour or day, not 'week'"
    for params in ({"limit": "0"}, {"from": "x"}, {"cursor": "nope"}):
        r = shared_meterd.get("/api/v1/devices/%s/aggregates" % dev, params=params)
        assert r.status_code == 400, (params, r.text)


def test_unknown_device_is_404(shared_meterd):
    d = uid("none")
    r = shared_meterd.get("/api/v1/devices/%s/aggregates" % d)
    assert r.status_code == 404
    assert r.json()["message"] == "device '%s' not found" % d
