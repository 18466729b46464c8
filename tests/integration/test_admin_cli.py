"""Admin API and command line (run/check/--help/--version)."""
import os
import re
import subprocess
import time

import pytest

from conftest import (MESHGATE, Client, build_request, cluster, connect_refused, free_port,
                      http_request, wait_until)

ERR_RX = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$", re.M)


def run_cli(*args, timeout=20):
    if not os.path.exists(MESHGATE):
        pytest.fail(f"meshgate binary not found at {MESHGATE}")
    p = subprocess.run([MESHGATE, *args], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


BASE = """\
listen: 127.0.0.1:18080
admin: 127.0.0.1:19901
workers: 1
routes:
  - id: api
    path: /api/**
    to: backend
clusters:
  backend:
    endpoints: [127.0.0.1:9001]
"""


# With the service registry on (the default) a route naming no cluster is
# a registry service; these error cases turn it off to keep the error.
NO_REGISTRY = "discovery: {registry: false}\n"


def lines_with(replace=None, insert=None):
    ls = BASE.splitlines()
    if replace:
        for ln, text in replace.items():
            ls[ln - 1] = text
    if insert:
        ln, text = insert
        ls.insert(ln - 1, text)
    return "\n".join(ls) + "\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# --- CLI -------------------------------------------------------------------------

def test_version():
    rc, out, err = run_cli("--version")
    assert rc == 0
    assert re.search(r"\d+\.\d+", out + err), (out, err)


def test_help():
    rc, out, err = run_cli("--help")
    assert rc == 0
    text = out + err
    assert "run" in text and "check" in text and "-c" in text, text


def test_unknown_command_fails():
    rc, out, err = run_cli("frobnicate")
    assert rc != 0


def test_check_valid(tmp_path):
    rc, out, err = run_cli("check", "-c", write(tmp_path, "ok.yaml", BASE))
    assert rc == 0, (out, err)


VALID_VARIANTS = {
    "durations": BASE + "timeouts: {header: 500ms, idle: 60s, body: 60000, connect: 2s, response: 30s, drain: 1s}\n",
    "limits": BASE + "limits: {max_request_line: 8192, max_header_bytes: 32768, max_headers: 100, max_body: 10m, max_connections: 10000}\n",
    "workers_auto": lines_with(replace={3: "workers: auto"}),
    "listen_list": lines_with(replace={1: "listen: [127.0.0.1:18080, 127.0.0.1:18081]"}),
    "access_log_off": BASE + "access_log: off\n",
    "access_log_file": BASE + "access_log: /tmp/meshgate-itest-access.log\n",
    "cluster_options": BASE + "    lb: least_request\n    connect_timeout: 1s\n    response_timeout: 5s\n"
                              "    max_idle: 8\n    idle_timeout: 10s\n",
    "lb_random": BASE + "    lb: random\n",
    "path_var": lines_with(replace={6: "    path: /api/users/{id}"}),
}


@pytest.mark.parametrize("name", list(VALID_VARIANTS))
def test_check_valid_variants(tmp_path, name):
    rc, out, err = run_cli("check", "-c", write(tmp_path, f"{name}.yaml", VALID_VARIANTS[name]))
    assert rc == 0, (name, out, err)


# (name, text, expected line, allowed columns or None)
INVALID = [
    ("unknown_top_key", lines_with(insert=(4, "bogus: 1")), 4, {1}),
    ("unknown_cluster_ref", lines_with(replace={7: "    to: nosuch"}) + NO_REGISTRY, 7, {5, 9}),
    ("bad_duration", lines_with(insert=(4, "timeouts: {connect: 2x}")), 4, None),
    ("bad_lb", BASE + "    lb: fastest\n", 11, {5, 9}),
    ("bad_path_pattern", lines_with(replace={6: "    path: /api/**/x"}), 6, {5, 11}),
    ("bad_endpoint_port", lines_with(replace={10: "    endpoints: [127.0.0.1:99999]"}), 10, None),
    ("bad_listen", lines_with(replace={1: "listen: nothere"}), 1, {1, 9}),
    ("bad_workers", lines_with(replace={3: "workers: -1"}), 3, {1, 10}),
    ("bad_max_body", BASE + "limits: {max_body: 10x}\n", 11, None),
    ("unknown_cluster_key", BASE + "    bogus: 1\n", 11, {5}),
    ("unknown_route_key", lines_with(insert=(8, "    bogus: 1")), 8, {5}),
    ("yaml_syntax", lines_with(replace={6: "    path: [/api/**"}), None, None),
]


@pytest.mark.parametrize("name,text,line,cols", INVALID, ids=[c[0] for c in INVALID])
def test_check_invalid_reports_file_line_col(tmp_path, name, text, line, cols):
    path = write(tmp_path, f"{name}.yaml", text)
    rc, out, err = run_cli("check", "-c", path)
    assert rc == 1, (rc, out, err)
    text_out = err + out
    m = ERR_RX.search(text_out)
    assert m, f"no FILE:LINE:COL: message in output: {text_out!r}"
    assert m.group("file") == path, m.group(0)
    if line is not None:
        assert int(m.group("line")) == line, f"{name}: {m.group(0)!r} (expected line {line})"
    if cols is not None:
        assert int(m.group("col")) in cols, f"{name}: {m.group(0)!r} (expected col in {cols})"


def test_check_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    rc, out, err = run_cli("check", "-c", path)
    assert rc == 1
    assert "nope.yaml" in out + err


def test_check_merges_multiple_files(tmp_path):
    a = write(tmp_path, "a.yaml", BASE)
    b = write(tmp_path, "b.yaml", "workers: 2\nclusters:\n  backend:\n    endpoints: [127.0.0.1:9002]\n")
    rc, out, err = run_cli("check", "-c", a, "-c", b)
    assert rc == 0, (out, err)
    bad = write(tmp_path, "bad.yaml", "workers: 1\nroutes:\n  - id: r\n    path: /r/**\n    to: ghost\n" + NO_REGISTRY)
    rc, out, err = run_cli("check", "-c", a, "-c", bad)
    assert rc == 1
    m = ERR_RX.search(err + out)
    assert m and m.group("file") == bad and m.group("line") == "5", err + out


def test_run_invalid_config_fails_fast(tmp_path):
    path = write(tmp_path, "bad.yaml", lines_with(replace={7: "    to: nosuch"}) + NO_REGISTRY)
    t0 = time.monotonic()
    rc, out, err = run_cli("run", "-c", path, timeout=15)
    assert rc != 0
    assert ERR_RX.search(err + out), err + out
    assert time.monotonic() - t0 < 10


def test_run_merges_multiple_files(mg, echo, tmp_path):
    dead = free_port()
    cfg = mg.config(routes=[{"id": "api", "path": "/api/**", "to": "backend"}],
                    clusters={"backend": cluster(f"127.0.0.1:{dead}")})
    m = mg(cfg, start=False)
    over = write(tmp_path, "override.yaml",
                 f"clusters:\n  backend:\n    endpoints: [{echo.addr}]\n")
    m.start(extra_args=("-c", over))
    r = http_request(m.port, "GET", "/api/merged")
    assert r.status == 200, r


# --- admin API ----------------------------------------------------------------------

def walk(obj):
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def pool_sum(data, key):
    return sum(d[key] for d in walk(data) if isinstance(d, dict) and isinstance(d.get(key), int))


@pytest.fixture
def admin_gw(mg, upstream_factory):
    a = upstream_factory(name="A")
    b = upstream_factory(name="B")
    m = mg(routes=[{"id": "users", "path": "/api/users/**", "to": "user-service"},
                   {"id": "rest", "path": "/api/**", "to": "other"}],
           clusters={"user-service": cluster(a, b), "other": cluster(b)}, workers=1)
    m.ups = (a, b)
    return m


def test_admin_health(admin_gw):
    st, data, r = admin_gw.admin("/health")
    assert st == 200
    assert data is not None, f"/health is not JSON: {r.body!r}"
    assert "json" in r.header("content-type", "").lower()


def test_admin_routes(admin_gw):
    st, data, r = admin_gw.admin("/routes")
    assert st == 200, r
    routes = data.get("routes") if isinstance(data, dict) else data
    assert isinstance(routes, list), data
    got = [(x.get("id"), x.get("path"), x.get("cluster")) for x in routes]
    assert got == [("users", "/api/users/**", "user-service"), ("rest", "/api/**", "other")], got


def test_admin_clusters_and_pool_counts(admin_gw):
    a, b = admin_gw.ups
    st, data, r = admin_gw.admin("/clusters")
    assert st == 200, r
    text = r.body.decode()
    assert "user-service" in text and "other" in text
    assert a.addr in text and b.addr in text, text
    assert any(isinstance(d, dict) and "idle" in d for d in walk(data)), f"no idle counts: {data}"
    assert any(isinstance(d, dict) and "active" in d for d in walk(data)), f"no active counts: {data}"
    assert http_request(admin_gw.port, "GET", "/api/other/x").status == 200

    def idle_seen():
        return pool_sum(admin_gw.admin("/clusters")[1], "idle") >= 1
    assert wait_until(idle_seen, 3), f"idle pooled connection not reported: {admin_gw.admin('/clusters')[1]}"
    with Client(admin_gw.port, timeout=10) as c:
        c.send(build_request("GET", "/api/other/slow?delay_ms=1500"))
        assert b.wait_heads(2, 5)
        active = pool_sum(admin_gw.admin("/clusters")[1], "active")
        assert active >= 1, admin_gw.admin("/clusters")[1]
        assert c.read_response().status == 200


def test_admin_unknown_path_404(admin_gw):
    st, data, r = admin_gw.admin("/nope")
    assert st == 404


def test_admin_not_on_proxy_port(admin_gw):
    r = http_request(admin_gw.port, "GET", "/health")
    assert r.status == 404  # no route; the admin API lives on its own address


def test_admin_routes_after_reload(admin_gw):
    cfg = dict(admin_gw.config)
    cfg["routes"] = [{"id": "only", "path": "/only/**", "to": "other"}]
    admin_gw.reload(cfg)

    def ok():
        st, data, r = admin_gw.admin("/routes")
        routes = data.get("routes") if isinstance(data, dict) else data
        return [x.get("id") for x in routes] == ["only"]
    assert wait_until(ok, 5)


def test_admin_off(mg, echo):
    cfg = mg.config(routes=[{"id": "api", "path": "/api/**", "to": "b"}],
                    clusters={"b": cluster(echo)}, admin="off")
    m = mg(cfg)
    assert http_request(m.port, "GET", "/api/x").status == 200
