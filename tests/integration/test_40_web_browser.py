"""The dashboard in a real browser: Debian's chromium driven by playwright-core (npm) through
tests/browser/dashboard.mjs. It loads /, waits for the chart to draw seeded data, posts a
reading and sees it arrive over SSE, searches the device list, opens /swagger and executes
GET /health; any console error fails. Screenshots go to build/artifacts/."""
import datetime
import json
import math
import os
import shutil
import subprocess
import time

import pytest

from conftest import REPO_ROOT, uid

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCRIPT = os.path.join(REPO_ROOT, "tests", "browser", "dashboard.mjs")
ARTIFACTS = os.path.join(REPO_ROOT, "build", "artifacts")
ROWS = 60 * 96  # two months of 15-minute readings


def browser_missing():
    missing = [what for what, ok in (
        ("node", shutil.which("node")), ("chromium", os.path.exists(CHROMIUM)),
        ("playwright-core (npm ci)",
         os.path.isdir(os.path.join(REPO_ROOT, "node_modules", "playwright-core"))))
        if not ok]
    return ", ".join(missing)


def test_dashboard_draws_seeded_data_updates_live_and_swagger_executes(meterd_factory, tmp_path):
    missing = browser_missing()
    if missing and os.environ.get("METERD_SKIP_BROWSER"):
        pytest.skip("browser test: missing " + missing)
    assert not missing, "browser test needs %s (scripts/deps.sh installs them)" % missing
    device = uid("dash")
    csv = tmp_path / "usage.csv"
    first = datetime.datetime(2019, 1, 1, 0, 15)
    with open(csv, "w") as f:
        f.write("time,meterusage\n")
        for i in range(ROWS):
            t = first + datetime.timedelta(minutes=15 * i)
            daily = math.sin(2 * math.pi * (i % 96) / 96 - math.pi / 2)
            f.write("%s,%.2f\n" % (t.strftime("%Y-%m-%d %H:%M:%S"),
                                   52 + 6 * daily + 3 * math.sin(2 * math.pi * i / (96 * 7))))
    srv = meterd_factory(extra_args=["--seed-csv", str(csv), "--device", device])
    deadline = time.monotonic() + 60  # the seed runs in the background
    while len(srv.get("/api/metrics").json()["metrics"]) < ROWS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(srv.get("/api/metrics").json()["metrics"]) == ROWS
    next_ts = (first + datetime.timedelta(minutes=15 * ROWS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    os.makedirs(ARTIFACTS, exist_ok=True)
    p = subprocess.run(["node", SCRIPT, srv.base_url, ARTIFACTS, device, "meterusage", next_ts],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    assert p.returncode == 0, "browser run failed: %s\nstdout: %s\nstderr: %s" % (
        report.get("failed"), p.stdout[-3000:], p.stderr[-3000:])
    assert report["errors"] == []
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["chart"]["points"] > 10 and steps["swagger"]["status"] == "200"
    for name in ("dashboard.png", "dashboard-live.png", "swagger.png"):
        assert os.path.getsize(os.path.join(ARTIFACTS, name)) > 10_000, name
