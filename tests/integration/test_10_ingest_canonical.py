"""POST /api/v1/readings: the canonical batch format, accepted → stored → read back."""
import re
import threading
import uuid

import requests

from conftest import metric_sum, reading, uid

TS = "2026-03-18T10:15:00Z"
TS_MS = 1773828900000  # == TS


def test_accepted_batch_answers_202_with_batch_id_count_and_position(shared_meterd):
    dev = uid()
    r = shared_meterd.post_readings([reading(dev, TS, 1234.56),
                                     reading(dev, "2026-03-18T10:30:00Z", 1234.61)])
    body = r.json()
    assert set(body) == {"batch_id", "accepted", "position"}
    assert str(uuid.UUID(body["batch_id"])) == body["batch_id"].lower()
    assert body["accepted"] == 2
    assert re.fullmatch(r"\d+-\d+", body["position"]), body["position"]
    assert r.headers["Content-Type"].startswith("application/json")
    # compact, in this key order (written by hand on the commit thread; same bytes as before)
    assert r.text == '{"batch_id":"%s","accepted":2,"position":"%s"}' % (body["batch_id"],
                                                                          body["position"])


def test_accepted_readings_are_read_back_in_ts_order_with_rfc3339_utc_times(shared_meterd):
    dev = uid()
    shared_meterd.post_readings([reading(dev, "2026-03-18T10:30:00Z", 2.5),
                                 reading(dev, TS, 1.5)])
    shared_meterd.drained()
    r = shared_meterd.get("/api/v1/devices/%s/readings" % dev)
    assert r.status_code == 200
    body = r.json()
    assert body["device"] == dev
    assert body["next_cursor"] is None
    got = [(x["metric"], x["ts"], x["value"], x["status"]) for x in body["readings"]]
    assert got == [("energy", TS, 1.5, "valid"), ("energy", "2026-03-18T10:30:00Z", 2.5, "valid")]
    for x in body["readings"]:
        assert "reason" not in x
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", x["received_at"])


def test_epoch_millisecond_and_offset_timestamps_are_stored_as_utc(shared_meterd):
    dev = uid()
    shared_meterd.post_readings([reading(dev, TS_MS, 1.0, metric="a"),
                                 reading(dev, "2026-03-18T11:15:00+01:00", 2.0, metric="b"),
                                 reading(dev, "2026-03-18T05:15:00-05:00", 3.0, metric="c")])
    shared_meterd.drained()
    got = [(x["metric"], x["ts"], x["value"]) for x in shared_meterd.readings(dev)]
    assert got == [("a", TS, 1.0), ("b", TS, 2.0), ("c", TS, 3.0)]


def test_kind_and_site_are_kept_on_the_device(shared_meterd):
    dev = uid("veh")
    shared_meterd.post_readings([reading(dev, TS, 10.0, kind="vehicle", site="depot-7")])
    shared_meterd.drained()
    r = shared_meterd.get("/api/v1/devices/" + dev)
    assert r.status_code == 200
    d = r.json()
    assert d["id"] == dev and d["kind"] == "vehicle" and d["site"] == "depot-7"


def test_resubmitting_the_same_batch_leaves_the_store_unchanged_and_counts_duplicates(meterd):
    dev = uid()
    batch = [reading(dev, "2026-03-18T10:%02d:00Z" % m, 100.0 + m) for m in range(5)]
    meterd.post_readings(batch)
    meterd.drained()
    before = meterd.readings(dev)
    m0 = meterd.metrics()
    r = meterd.post_readings(batch)
    assert r.json()["accepted"] == 5
    meterd.drained()
    assert meterd.readings(dev) == before  # received_at of the first copy is kept too
    m1 = meterd.metrics()
    assert metric_sum(m1, "meterd_readings_duplicates_total") - \
        metric_sum(m0, "meterd_readings_duplicates_total") == 5
    assert metric_sum(m1, "meterd_readings_stored_total") == \
        metric_sum(m0, "meterd_readings_stored_total")
    assert metric_sum(m1, "meterd_readings_conflicts_total") == \
        metric_sum(m0, "meterd_readings_conflicts_total")


def test_conflicting_value_for_same_key_keeps_first_value_and_counts_conflict(meterd):
    dev = uid()
    meterd.post_readings([reading(dev, TS, 1.0)])
    meterd.drained()
    m0 = meterd.metrics()
    meterd.post_readings([reading(dev, TS, 2.0)])
    meterd.drained()
    got = [(x["ts"], x["value"]) for x in meterd.readings(dev)]
    assert got == [(TS, 1.0)]
    m1 = meterd.metrics()
    assert metric_sum(m1, "meterd_readings_conflicts_total") - \
        metric_sum(m0, "meterd_readings_conflicts_total") == 1
    assert metric_sum(m1, "meterd_readings_duplicates_total") == \
        metric_sum(m0, "meterd_readings_duplicates_total")


def test_duplicate_key_inside_one_batch_stores_the_first_value_once(shared_meterd):
    dev = uid()
    shared_meterd.post_readings([reading(dev, TS, 7.0), reading(dev, TS, 8.0),
                                 reading(dev, TS, 7.0)])
    shared_meterd.drained()
    assert [(x["ts"], x["value"]) for x in shared_meterd.readings(dev)] == [(TS, 7.0)]


def test_same_ts_with_different_metrics_are_separate_readings(shared_meterd):
    dev = uid()
    shared_meterd.post_readings([reading(dev, TS, 1.0, metric="voltage"),
                                 reading(dev, TS, 2.0, metric="energy")])
    shared_meterd.drained()
    got = [(x["metric"], x["value"]) for x in shared_meterd.readings(dev)]
    assert got == [("energy", 2.0), ("voltage", 1.0)]  # ordered by (ts, metric)


def test_metrics_count_accepted_and_stored_readings(meterd):
    m0 = meterd.metrics()
    dev = uid()
    meterd.post_readings([reading(dev, "2026-03-18T10:%02d:00Z" % i, 5.0) for i in range(3)])
    meterd.drained()
    m1 = meterd.metrics()
    for name in ("meterd_readings_accepted_total", "meterd_readings_stored_total"):
        assert metric_sum(m1, name) - metric_sum(m0, name) == 3, name


def test_sixteen_threads_of_single_reading_posts_are_all_accepted_and_stored(meterd):
    threads, per_thread = 16, 50
    dev = uid("conc")
    results = [[] for _ in range(threads)]

    def client(t):
        s = requests.Session()
        for i in range(per_thread):
            k = t * per_thread + i
            r = s.post(meterd.base_url + "/api/v1/readings",
                       json={"readings": [reading(dev, 1773828900000 + k * 1000, float(k % 9) + 1)]},
                       timeout=30)
            results[t].append(r.status_code)

    ths = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    codes = [c for rs in results for c in rs]
    assert len(codes) == threads * per_thread
    assert set(codes) == {202}
    meterd.drained()
    got = meterd.readings(dev)
    assert len(got) == threads * per_thread
    expect_ts = [1773828900 + k for k in range(threads * per_thread)]
    assert [x["value"] for x in got] == [float(k % 9) + 1 for k in range(threads * per_thread)]
    assert len({x["ts"] for x in got}) == len(expect_ts)
