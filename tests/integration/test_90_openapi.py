"""docs/api/openapi.yaml against the code: it parses, it documents every route in the route
tables of src/ingest/ and src/query/, and every documented route is served by the real binary
(never "no route"), answering only status codes the spec lists for it."""
import glob
import os
import re
import uuid

import pytest
import requests
import yaml

from conftest import REPO_ROOT

SPEC_PATH = os.path.join(REPO_ROOT, "docs", "api", "openapi.yaml")
ROUTE_SOURCES = ("src/ingest/*.c", "src/query/*.c")
# {"GET", "/api/v1/devices/{}", HTTP_BODY_NONE, h_device, ctx},
ROUTE_RE = re.compile(r'\{\s*"(GET|POST|PUT|PATCH|DELETE)"\s*,\s*"(/[^"]*)"')
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def spec():
    with open(SPEC_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def implemented_routes():
    """(METHOD, path) from the C route tables, '{}' captures written as '{param}'."""
    routes = set()
    for pattern in ROUTE_SOURCES:
        for path in sorted(glob.glob(os.path.join(REPO_ROOT, pattern))):
            with open(path, encoding="utf-8") as f:
                for method, route in ROUTE_RE.findall(f.read()):
                    routes.add((method, route.replace("{}", "{param}")))
    return routes


def shape(path):
    """A path with every {name} replaced by {param}, to compare spec and code."""
    return re.sub(r"\{[^}/]*\}", "{param}", path)


def documented(spec):
    return {(m.upper(), p) for p, item in spec["paths"].items() for m in item if m in METHODS}


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def required_keys(spec, schema):
    """Top-level required members of an object schema (following $ref and allOf)."""
    schema = resolve(spec, schema)
    keys = set(schema.get("required", []))
    for sub in schema.get("allOf", []):
        keys |= required_keys(spec, sub)
    return keys


def all_refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from all_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from all_refs(v)


def fill(path):
    """Concrete URL path for a templated one, with ids no test creates."""
    return re.sub(r"\{[^}/]*\}", lambda m: "no-such-%s" % uuid.uuid4().hex[:10], path)


def test_spec_parses_and_every_ref_resolves(spec):
    assert str(spec["openapi"]).startswith("3.1"), spec["openapi"]
    assert spec["paths"], "no paths"
    for ref in set(all_refs(spec)):
        resolve(spec, {"$ref": ref})  # KeyError names the dangling ref
    for name in ("CanonicalBatch", "CanonicalReading", "MeterBatch", "MeterRawBatch", "Accepted",
                 "Error", "Device", "DeviceList", "Reading", "ReadingList", "LiveState",
                 "AnomalyList", "Health", "Ready", "ServiceInfo"):
        assert name in spec["components"]["schemas"], name
    assert required_keys(spec, {"$ref": "#/components/schemas/Error"}) == {
        "statusCode", "error", "message", "path", "timestamp", "request_id"}
    assert required_keys(spec, {"$ref": "#/components/schemas/Accepted"}) == {
        "batch_id", "accepted", "position"}


def test_route_tables_are_found():
    routes = implemented_routes()
    # The regex must keep finding the tables; these routes exist since the first release.
    for must in [("POST", "/api/v1/readings"), ("GET", "/api/v1/devices/{param}/readings"),
                 ("GET", "/health"), ("GET", "/")]:
        assert must in routes, (must, sorted(routes))


def test_every_implemented_route_is_documented(spec):
    docs = {(m, shape(p)) for m, p in documented(spec)}
    missing = sorted(r for r in implemented_routes() if r not in docs)
    assert not missing, "routes in the code but not in docs/api/openapi.yaml: %s" % missing


def test_every_documented_route_is_implemented(spec):
    code = implemented_routes()
    extra = sorted((m, p) for m, p in documented(spec) if (m, shape(p)) not in code)
    assert not extra, "documented but not in any route table: %s" % extra


def test_documented_routes_answer_as_documented(spec, shared_meterd):
    base = shared_meterd.base_url
    problems = []
    for path, item in sorted(spec["paths"].items()):
        for method in (m for m in item if m in METHODS):
            op = item[method]
            url = base + fill(path)
            rid = "oas-%s" % uuid.uuid4().hex[:16]
            kw = {"headers": {"X-Request-Id": rid}, "timeout": 30}
            if "requestBody" in op:
                # {} is wrong for every ingest format: a 4xx, nothing is enqueued.
                kw["json"] = {}
            streaming = "text/event-stream" in op["responses"].get("200", {}).get("content", {})
            r = requests.request(method.upper(), url, stream=streaming, **kw)
            if streaming:  # never ends: check the status line and headers only
                r.close()
                if r.status_code != 200 or r.headers.get("X-Request-Id") != rid:
                    problems.append("stream: %s %s → %d" % (method.upper(), path, r.status_code))
                continue
            where = "%s %s → %d %s" % (method.upper(), path, r.status_code, r.text[:200])
            if r.headers.get("X-Request-Id") != rid:
                problems.append("X-Request-Id not echoed: " + where)
            body = None
            if r.headers.get("Content-Type", "").startswith("application/json"):
                body = r.json()
            if r.status_code == 404:
                msg = (body or {}).get("message", "")
                if "no route" in msg or "not found" not in msg.lower():
                    problems.append("not served: " + where)
                    continue
            documented_codes = {str(c) for c in op["responses"]}
            if str(r.status_code) not in documented_codes:
                problems.append("status not documented (%s): %s"
                                % (sorted(documented_codes), where))
                continue
            resp = resolve(spec, op["responses"][str(r.status_code)])
            content = resp.get("content", {})
            if body is not None and "application/json" in content:
                want = required_keys(spec, content["application/json"]["schema"])
                if isinstance(body, dict) and not want <= set(body):
                    problems.append("missing %s: %s" % (sorted(want - set(body)), where))
            if r.status_code >= 400 and body is not None and body.get("request_id") != rid:
                problems.append("error body request_id differs: " + where)
    assert not problems, "\n".join(problems)


def test_unknown_route_and_wrong_method(spec, shared_meterd):
    base = shared_meterd.base_url
    r = requests.get(base + "/no/such/route-%s" % uuid.uuid4().hex[:8], timeout=30)
    assert r.status_code == 404 and "no route" in r.json()["message"], r.text
    for path, item in spec["paths"].items():
        allowed = {m.upper() for m in item if m in METHODS}
        r = requests.delete(base + fill(path), timeout=30)
        assert r.status_code == 405, (path, r.status_code, r.text)
        assert set(r.headers["Allow"].replace(" ", "").split(",")) == allowed, (path, r.headers)
        assert "405" in {str(c) for op in item.values() if isinstance(op, dict)
                         for c in op.get("responses", {})}, path


def test_json_routes_refuse_other_content_types(spec, shared_meterd):
    for path, item in spec["paths"].items():
        for method in (m for m in item if m in METHODS):
            if "requestBody" not in item[method]:
                continue
            r = requests.request(method.upper(), shared_meterd.base_url + fill(path),
                                 data="a=b", timeout=30,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 415, (path, r.status_code, r.text)
            assert "415" in item[method]["responses"], path
