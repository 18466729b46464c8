"""Spring Cloud Gateway dialect through the real binary.

The seed's ConfigMap (examples/seed-gateway.yaml) is loaded verbatim with a
second file that adds simple-discovery instances and ports, as a user would
keep the seed untouched. The seed's CircuitBreaker forwards to
/fallback/users, which must be a route (examples/seed-local.yaml adds a
respond: route for it; without one the seed is refused with a clear
message); a copy of the seed without the CircuitBreaker/RateLimiter entries
must route /api/users/42 to a user-service instance as /42 with
X-Service-Name: user-service.
"""
import os
import re
import subprocess

import pytest

from conftest import (MESHGATE, ROOT, SEED, Meshgate, free_port, http_request, seed_local_yaml,
                      seed_without, wait_until)

ERR_RX = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$", re.M)


def local_yaml(*args, **kw):
    """The seed's local file, user-service instances labelled zone: z<i>."""
    return seed_local_yaml(*args, zones=True, **kw)


def run_cli(*args, timeout=20):
    if not os.path.exists(MESHGATE):
        pytest.fail(f"meshgate binary not found at {MESHGATE}")
    p = subprocess.run([MESHGATE, *args], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def test_seed_verbatim_needs_its_fallback_route(tmp_path, upstreams):
    local = tmp_path / "local.yaml"
    local.write_text(local_yaml(free_port(), free_port(), [upstreams("u1")], [upstreams("o1")]))
    rc, out, err = run_cli("check", "-c", SEED, "-c", str(local))
    assert rc == 1, out + err
    m = ERR_RX.search(err)
    assert m, err
    assert m["file"] == SEED
    assert (m["line"], m["col"]) == ("15", "15")  # the user-service route inside the ConfigMap's block
    assert m["msg"].startswith("route 'user-service': circuit breaker fallback forward:/fallback/users matches no "
                               "other route")
    # nothing else is wrong with the file: the message names only that
    assert err.count("\n") <= 1


def test_seed_example_files_check(tmp_path):
    """examples/seed-local.yaml is the documented companion of the seed."""
    rc, out, err = run_cli("check", "-c", SEED, "-c", os.path.join(ROOT, "examples", "seed-local.yaml"))
    assert rc == 0, err
    assert "3 routes, 2 clusters" in out  # + the /fallback/users respond route
    stripped = tmp_path / "seed.yaml"
    stripped.write_text(seed_without("CircuitBreaker", "RateLimiter"))
    rc, out, err = run_cli("check", "-c", str(stripped), "-c", os.path.join(ROOT, "examples", "seed-local.yaml"))
    assert rc == 0, err
    assert "3 routes, 2 clusters" in out


def test_bad_file_refused_with_line_and_column(tmp_path, upstreams):
    text = seed_without("CircuitBreaker", "RateLimiter").replace("- StripPrefix=2", "- StripPrefx=2", 1)
    bad = tmp_path / "seed-bad.yaml"
    bad.write_text(text)
    local = tmp_path / "local.yaml"
    local.write_text(local_yaml(free_port(), free_port(), [upstreams("u1")], [upstreams("o1")]))
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "StripPrefx" in l)
    col = text.splitlines()[line - 1].index("StripPrefx") + 1
    for cmd in (("check",), ("run",)):
        rc, out, err = run_cli(*cmd, "-c", str(bad), "-c", str(local), timeout=10)
        assert rc == 1, (cmd, out, err)
        assert f"{bad}:{line}:{col}: unknown filter 'StripPrefx' (did you mean StripPrefix?)" in err


def test_run_refuses_seed_without_fallback_route(tmp_path, upstreams):
    local = tmp_path / "local.yaml"
    local.write_text(local_yaml(free_port(), free_port(), [upstreams("u1")], [upstreams("o1")]))
    rc, out, err = run_cli("run", "-c", SEED, "-c", str(local), timeout=10)
    assert rc == 1
    assert "fallback forward:/fallback/users matches no other route" in out + err


@pytest.fixture
def seed_gw(tmp_path, upstreams):
    """meshgate on the stripped seed + a local file with instances and ports."""
    users = [upstreams("user-1"), upstreams("user-2")]
    orders = [upstreams("order-1")]
    port, admin_port = free_port(), free_port()
    m = Meshgate(tmp_path, seed_without("CircuitBreaker", "RateLimiter"), name="seed")
    local = tmp_path / "local.yaml"
    local.write_text(local_yaml(port, admin_port, users, orders))
    m.config = {"listen": f"127.0.0.1:{port}", "admin": f"127.0.0.1:{admin_port}"}
    m.start(extra_args=("-c", str(local)))
    m.users, m.orders = users, orders
    yield m
    m.stop()


def test_seed_routes_users_and_orders(seed_gw):
    m = seed_gw
    seen = set()
    for _ in range(4):
        r = http_request(m.port, "GET", "/api/users/42")
        assert r.status == 200, r
        d = r.json()
        assert d["path"] == "/42"
        hdrs = {n.lower(): v for n, v in d["headers"]}
        assert hdrs.get("x-service-name") == "user-service"
        seen.add(r.header("X-Upstream"))
    assert seen == {"user-1", "user-2"}  # lb://user-service spreads over both instances

    r = http_request(m.port, "GET", "/api/orders/7?x=1")
    assert r.status == 200, r
    d = r.json()
    assert d["target"] == "/7?x=1"
    assert {n.lower(): v for n, v in d["headers"]}.get("x-service-name") == "order-service"
    assert r.header("X-Upstream") == "order-1"

    assert http_request(m.port, "GET", "/api/other").status == 404


def test_admin_routes_show_predicates_filters_and_matches(seed_gw):
    m = seed_gw
    for _ in range(3):
        assert http_request(m.port, "GET", "/api/users/1").status == 200
    routes = m.routes()
    by_id = {r["id"]: r for r in routes}
    u = by_id["user-service"]
    assert u["predicates"] == [{"name": "Path", "args": {"patterns": ["/api/users/**"]}}]
    assert [f["name"] for f in u["filters"]] == ["StripPrefix", "AddRequestHeader"]
    assert u["destination"]["uri"] == "lb://user-service"
    assert wait_until(lambda: {r["id"]: r for r in m.routes()}["user-service"]["matches"] >= 3)


def test_config_print_migration_aid(tmp_path, upstreams):
    stripped = tmp_path / "seed.yaml"
    stripped.write_text(seed_without("CircuitBreaker", "RateLimiter"))
    local = tmp_path / "local.yaml"
    local.write_text(local_yaml(free_port(), free_port(), [upstreams("u1"), upstreams("u2")], [upstreams("o1")]))
    rc, out, err = run_cli("config", "print", "-c", str(stripped), "-c", str(local))
    assert rc == 0, err
    assert "routes:" in out and '"lb://user-service"' in out and "StripPrefix" in out
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    rc, out2, err = run_cli("config", "print", "-c", str(printed))
    assert rc == 0, err
    assert out2 == out  # the native form loads back to the same config


NATIVE = """\
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
workers: 1
clusters:
  backend: {{endpoints: ['{up}']}}
default_filters:
  - AddResponseHeader=X-Gateway, meshgate
routes:
  - id: redirect
    path: /old/**
    to: backend
    filters: ['RedirectTo=301, https://new.example.org']
  - id: limited
    to: backend
    order: -1
    predicates: ['Path=/upload', 'Method=POST']
    filters: ['RequestSize=1KB']
  - id: rewrite
    to: backend
    predicates: ['Path=/red/**', 'Header=X-Color, bl.e']
    filters:
      - 'RewritePath=/red/?(?<segment>.*), /$\\{{segment}}'
      - SetStatus=202
  - id: by-host
    uri: http://{up}
    predicates: ['Host={{sub}}.example.org']
    filters: ['SetPath=/hosts/{{sub}}']
"""


@pytest.fixture
def native_gw(tmp_path, upstreams):
    up = upstreams("backend")
    port, admin_port = free_port(), free_port()
    m = Meshgate(tmp_path, NATIVE.format(port=port, admin=admin_port, up=up.addr), name="native")
    m.config = {"listen": f"127.0.0.1:{port}", "admin": f"127.0.0.1:{admin_port}"}
    m.start()
    yield m
    m.stop()


def test_native_predicates_and_filters(native_gw):
    m = native_gw
    r = http_request(m.port, "GET", "/old/page")
    assert r.status == 301 and r.header("Location") == "https://new.example.org"
    assert r.header("X-Gateway") == "meshgate"

    r = http_request(m.port, "POST", "/upload", body=b"x" * 2000)
    assert r.status == 413
    r = http_request(m.port, "POST", "/upload", body=b"x" * 10)
    assert r.status == 200

    r = http_request(m.port, "GET", "/red/blue", headers=[("X-Color", "blue")])
    assert r.status == 202 and r.json()["path"] == "/blue"
    assert http_request(m.port, "GET", "/red/blue", headers=[("X-Color", "green")]).status == 404

    r = http_request(m.port, "GET", "/anything", host="shop.example.org")
    assert r.status == 200 and r.json()["path"] == "/hosts/shop"
