"""Acknowledged data survives a clean stop and a kill -9, and the server carries on afterwards."""
import signal

from conftest import embedded_only, metric_sum, reading, uid

T0 = 1773828900000


def batch(dev, b, n=20):
    return [reading(dev, T0 + (b * n + i) * 1000, float(b * n + i)) for i in range(n)]


def values(srv, dev):
    return [x["value"] for x in srv.readings(dev)]


def test_readings_survive_sigterm_and_restart(meterd):
    dev = uid()
    for b in range(5):
        meterd.post_readings(batch(dev, b))
    meterd.drained()
    before = meterd.readings(dev)
    assert len(before) == 100
    assert meterd.stop(signal.SIGTERM) == 0
    meterd.start()
    assert meterd.readings(dev) == before
    assert meterd.get("/api/v1/devices/" + dev).json()["id"] == dev
    live = meterd.get("/api/v1/devices/%s/live" % dev).json()["live"]
    assert [(x["metric"], x["value"]) for x in live] == [("energy", 99.0)]


def test_acked_but_unprocessed_readings_survive_kill9(meterd):
    dev = uid()
    for b in range(10):
        meterd.post_readings(batch(dev, b))  # no wait: some may still be queued when killed
    meterd.kill9()
    meterd.start()
    meterd.drained()
    assert values(meterd, dev) == [float(i) for i in range(200)]


def test_kill9_after_drain_then_restart_keeps_store_and_adds_nothing(meterd):
    dev = uid()
    meterd.post_readings(batch(dev, 0))
    meterd.drained()
    before = meterd.readings(dev)
    meterd.kill9()
    meterd.start()
    meterd.drained()
    assert meterd.readings(dev) == before


def test_server_accepts_and_serves_new_data_after_a_restart(meterd):
    a, b = uid(), uid()
    meterd.post_readings(batch(a, 0))
    meterd.kill9()
    meterd.start()
    meterd.post_readings(batch(b, 0))
    meterd.drained()
    assert len(meterd.readings(a)) == 20 and len(meterd.readings(b)) == 20
    assert meterd.get("/health").json()["status"] == "ok"
    assert meterd.stop() == 0
    meterd.start()
    assert len(meterd.readings(a)) == 20 and len(meterd.readings(b)) == 20


def test_replay_after_restart_is_deduplicated(meterd):
    dev = uid()
    meterd.post_readings(batch(dev, 0))
    meterd.drained()
    before = meterd.readings(dev)
    assert meterd.stop() == 0
    meterd.start()
    meterd.post_readings(batch(dev, 0))
    meterd.drained()
    assert meterd.readings(dev) == before
    assert metric_sum(meterd.metrics(), "meterd_readings_duplicates_total") == 20


def test_many_restarts_keep_one_copy_of_each_reading(meterd):
    dev = uid()
    for b in range(5):
        meterd.post_readings(batch(dev, b))
        if b % 2:
            meterd.kill9()
        else:
            assert meterd.stop() == 0
        meterd.start()
    meterd.drained()
    got = meterd.readings(dev)
    assert [x["value"] for x in got] == [float(i) for i in range(100)]
    assert all(x["status"] == "valid" for x in got)


@embedded_only("the embedded queue's segment files")
def test_the_queue_can_live_on_another_device_through_a_symlink(meterd_factory, tmp_path):
    """docs/operations.md: data/queue may be a symlink to a directory on its own device, so the
    queue's fsyncs do not wait behind SQLite's. Recovery after a kill -9 goes through it too."""
    import os
    elsewhere = tmp_path / "queue-device" / "queue"
    elsewhere.mkdir(parents=True)
    srv = meterd_factory(start=False)
    os.makedirs(srv.data_dir, exist_ok=True)
    os.symlink(str(elsewhere), os.path.join(srv.data_dir, "queue"))
    srv.start()
    dev = uid()
    for b in range(5):
        srv.post_readings(batch(dev, b))
    assert any(n.endswith(".wal") for n in os.listdir(str(elsewhere)))
    srv.kill9()
    srv.start()
    srv.drained()
    assert values(srv, dev) == [float(i) for i in range(100)]
    assert os.path.islink(os.path.join(srv.data_dir, "queue"))
    assert "LOCK" in os.listdir(str(elsewhere))
