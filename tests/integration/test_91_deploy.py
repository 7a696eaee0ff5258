"""deploy/ cannot run here (no Docker engine, no Kubernetes): check what can be checked."""
import configparser
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_compose_has_brokers_store_and_scaled_roles():
    c = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    s = c["services"]
    assert {"rabbitmq", "postgres", "redis", "api", "worker"} <= set(s)
    assert s["api"]["command"] == ["api"] and s["worker"]["command"] == ["worker"]
    assert s["api"]["deploy"]["replicas"] == 2 and s["worker"]["deploy"]["replicas"] == 2
    env = s["api"]["environment"]
    assert env["METERD_QUEUE"] == "amqp" and env["DATABASE_URL"].startswith("postgres://")


def test_helm_chart_parses_and_probes_health_and_ready():
    chart = yaml.safe_load((DEPLOY / "helm/meterd/Chart.yaml").read_text())
    values = yaml.safe_load((DEPLOY / "helm/meterd/values.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "meterd"
    assert values["api"]["replicas"] >= 1 and values["worker"]["replicas"] >= 1
    tpl = (DEPLOY / "helm/meterd/templates/deployments.yaml").read_text()
    assert "path: /ready" in tpl and "path: /health" in tpl
    assert 'list "api" "worker"' in tpl
    # every .Values path the templates use exists in values.yaml
    for path in re.findall(r"\$?\.Values\.([A-Za-z_.]+)", tpl + (DEPLOY / "helm/meterd/templates/service.yaml").read_text()):
        node = values
        for part in path.split("."):
            assert part in node, "values.yaml lacks %s" % path
            node = node[part]


def test_systemd_unit_has_what_systemd_needs():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(DEPLOY / "systemd/meterd.service")
    assert unit["Service"]["ExecStart"].endswith("meterd serve")
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_dockerfile_builds_with_every_library_the_makefile_links():
    docker = (DEPLOY / "Dockerfile").read_text()
    pkgs = re.search(r"^PKGS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    dev = {"libmicrohttpd": "libmicrohttpd-dev", "jansson": "libjansson-dev",
           "libprotobuf-c": "libprotobuf-c-dev", "sqlite3": "libsqlite3-dev", "zlib": "zlib1g-dev",
           "librabbitmq": "librabbitmq-dev", "hiredis": "libhiredis-dev", "libpq": "libpq-dev",
           "grpc": "libgrpc-dev"}
    for p in pkgs:
        assert dev.get(p, p) in docker, "Dockerfile build stage lacks %s" % dev.get(p, p)
    assert docker.count("FROM debian:12-slim") == 2  # multi-stage
