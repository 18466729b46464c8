"""The discovery locator (Spring's spring.cloud.gateway.discovery.locator),
end to end through the real binary.

With the locator on, every service known to discovery (the embedded
registry's services, registered through the Consul API, plus Spring
simple-discovery services and native clusters) gets a route
/<service>/** to lb://<service> whose RewritePath strips /<service>, as
Spring's DiscoveryClientRouteDefinitionLocator makes it. Routes follow the
registry without a reload; configured routes match first.
"""
import os
import re
import signal
import subprocess

import pytest

from conftest import MESHGATE, admin_get, http_request, wait_until
from test_discovery import admin_call, heartbeat

PREFIX = "ReactiveCompositeDiscoveryClient_"
ERR_RX = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$", re.M)


def spring_locator(**locator):
    loc = {"enabled": True, "lower-case-service-id": True}
    loc.update(locator)
    return {"cloud": {"gateway": {"discovery": {"locator": loc}}}}


def gw(mg, tmp_path, routes=None, clusters=None, spring=None, **top):
    return mg(routes=routes or [], clusters=clusters or {},
              discovery=top.pop("discovery", {"data_dir": str(tmp_path / "data")}),
              spring=spring or spring_locator(), **top)


def register(m, sid, upstream, name, check=True):
    body = {"ID": sid, "Name": name, "Address": "127.0.0.1", "Port": upstream.port}
    if check:
        body["Check"] = {"TTL": "30s", "Status": "passing"}
    r = admin_call(m, "PUT", "/v1/agent/service/register", body)
    assert r.status == 200, r


def route_ids(m):
    return [r["id"] for r in m.routes()]


def status(m, path):
    return http_request(m.port, "GET", path).status


def test_registered_service_gets_a_stripped_route(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    assert status(m, "/user-service/api/x") == 404
    register(m, "user-1", up, "user-service")
    # no reload: the registry's change rebuilds the routes (coalesced, <= 100 ms)
    assert wait_until(lambda: status(m, "/user-service/api/x") == 200, timeout=1.0), m.stderr_tail()
    assert up.requests[-1].path == "/api/x"
    r = http_request(m.port, "GET", "/user-service/api/x?q=1")
    assert r.status == 200 and up.requests[-1].path == "/api/x" and up.requests[-1].q("q") == "1"
    assert status(m, "/user-service") == 200 and up.requests[-1].path == "/"
    assert status(m, "/user-service/") == 200 and up.requests[-1].path == "/"
    assert status(m, "/user-servicex/a") == 404
    # GET /routes shows it as Spring would build it
    route = [r for r in m.routes() if r["id"] == PREFIX + "user-service"][0]
    assert route["source"] == "discovery-locator"
    assert route["destination"] == {"cluster": "user-service", "uri": "lb://user-service"}
    assert route["predicates"] == [{"name": "Path", "args": {"patterns": ["/user-service/**"]}}]
    assert route["filters"] == [{"name": "RewritePath",
                                 "args": {"regexp": "/user-service/?(?<remaining>.*)",
                                          "replacement": "/${remaining}"}}]


def test_deregistration_removes_the_route(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up, "user-service")
    assert wait_until(lambda: status(m, "/user-service/a") == 200, timeout=1.0)
    r = admin_call(m, "PUT", "/v1/agent/service/deregister/user-1")
    assert r.status == 200, r
    assert wait_until(lambda: status(m, "/user-service/a") == 404, timeout=1.0)
    assert PREFIX + "user-service" not in route_ids(m)


def test_critical_service_keeps_its_route_with_503(mg, upstream_factory, tmp_path):
    """A registered service whose instances all fail keeps its route (it is
    known to discovery) and answers 503 naming the service."""
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up, "user-service")
    assert wait_until(lambda: status(m, "/user-service/a") == 200, timeout=1.0)
    heartbeat(m, "user-1", "fail")
    assert wait_until(lambda: status(m, "/user-service/a") == 503, timeout=1.0)
    r = http_request(m.port, "GET", "/user-service/a")
    assert "user-service" in r.json()["error"]


def test_lower_case_service_id(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="orders")
    m = gw(mg, tmp_path)
    register(m, "orders-1", up, "Order-Service")
    assert wait_until(lambda: status(m, "/order-service/v1/list") == 200, timeout=1.0), m.stderr_tail()
    assert up.requests[-1].path == "/v1/list"
    assert status(m, "/Order-Service/v1/list") == 404
    route = [r for r in m.routes() if r.get("source") == "discovery-locator"][0]
    # Spring: the id and the uri keep the registered name; predicates and filters are lower-cased
    assert route["id"] == PREFIX + "Order-Service"
    assert route["destination"]["uri"] == "lb://Order-Service"
    assert route["predicates"][0]["args"]["patterns"] == ["/order-service/**"]


def test_without_lower_case_the_name_is_kept(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="orders")
    m = gw(mg, tmp_path, spring=spring_locator(**{"lower-case-service-id": False}))
    register(m, "orders-1", up, "Order-Service")
    assert wait_until(lambda: status(m, "/Order-Service/a") == 200, timeout=1.0)
    assert status(m, "/order-service/a") == 404


def test_configured_route_wins(mg, upstream_factory, tmp_path):
    reg = upstream_factory(name="registered")
    static = upstream_factory(name="static")
    m = gw(mg, tmp_path, routes=[{"id": "mine", "path": "/user-service/special/**", "to": "static"}],
           clusters={"static": {"endpoints": [static.addr]}})
    register(m, "user-1", reg, "user-service")
    assert wait_until(lambda: status(m, "/user-service/other") == 200, timeout=1.0)
    assert reg.requests[-1].path == "/other"
    n = len(reg.requests)
    assert status(m, "/user-service/special/x") == 200
    assert static.requests[-1].path == "/user-service/special/x" and len(reg.requests) == n
    ids = route_ids(m)
    assert ids.index("mine") < ids.index(PREFIX + "user-service")
    # the static cluster is a discovery service too (static endpoints)
    assert PREFIX + "static" in ids


def test_simple_discovery_service_gets_a_route(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="inventory")
    spring = spring_locator(**{"route-id-prefix": "sd_"})
    spring["cloud"]["discovery"] = {"client": {"simple": {"instances": {
        "Inventory": [{"uri": f"http://{up.addr}"}]}}}}
    m = gw(mg, tmp_path, spring=spring)
    assert status(m, "/inventory/items/3") == 200
    assert up.requests[-1].path == "/items/3"
    assert "sd_Inventory" in route_ids(m)


def test_native_locator_and_default_filters(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = mg(routes=[], clusters={},
           default_filters=["AddRequestHeader=X-Gw, meshgate"],
           discovery={"data_dir": str(tmp_path / "data"),
                      "locator": {"enabled": True, "lower_case_service_id": True, "route_id_prefix": "auto-"}})
    register(m, "u1", up, "Users")
    assert wait_until(lambda: status(m, "/users/me") == 200, timeout=1.0)
    assert up.requests[-1].path == "/me" and up.requests[-1].header("X-Gw") == "meshgate"
    assert "auto-Users" in route_ids(m)


def test_custom_predicates_and_filters(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    spring = spring_locator(
        predicates=[{"name": "Path", "args": {"pattern": "'/svc/'+serviceId+'/**'"}}],  # Spring's docs: args[pattern]
        filters=["StripPrefix=2", {"name": "AddRequestHeader",
                                   "args": {"name": "'X-Service'", "value": "serviceId"}}])
    m = gw(mg, tmp_path, spring=spring)
    register(m, "u1", up, "Users")
    assert wait_until(lambda: status(m, "/svc/users/a/b") == 200, timeout=1.0), m.stderr_tail()
    assert up.requests[-1].path == "/a/b" and up.requests[-1].header("X-Service") == "users"
    assert status(m, "/users/a") == 404


def test_reload_keeps_locator_routes(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up, "user-service")
    assert wait_until(lambda: status(m, "/user-service/a") == 200, timeout=1.0)
    cfg = dict(m.config)
    cfg["spring"] = spring_locator(**{"route-id-prefix": "r2_"})
    mark = m.stderr_mark()
    m.reload(cfg)
    assert m.wait_stderr("reloaded config", start=mark)
    assert wait_until(lambda: "r2_user-service" in route_ids(m), timeout=2.0)
    assert status(m, "/user-service/a") == 200
    # a bad reload is refused and the running routes stay
    cfg["spring"] = spring_locator(**{"include-expression": "metadata['x']=='y'"})
    mark = m.stderr_mark()
    m.reload(cfg)
    assert m.wait_stderr("reload refused", start=mark)
    assert status(m, "/user-service/a") == 200


def run_check(path):
    p = subprocess.run([MESHGATE, "check", "-c", str(path)], capture_output=True, timeout=20)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


@pytest.mark.parametrize("key,value,needle", [
    ("include-expression", "metadata['edge'] == 'true'", "only the default 'true'"),
    ("url-expression", "'http://'+host+':'+port", "only the default 'lb://'+serviceId"),
])
def test_refused_spel_gives_file_line_col(tmp_path, key, value, needle):
    f = tmp_path / "gw.yaml"
    f.write_text("spring:\n  cloud:\n    gateway:\n      discovery:\n        locator:\n"
                 "          enabled: true\n"
                 f"          {key}: \"{value}\"\n")
    rc, out, err = run_check(f)
    assert rc == 1, (out, err)
    m = ERR_RX.search(err)
    assert m, err
    assert m.group("file") == str(f) and m.group("line") == "7" and m.group("col") == str(len(key) + 13)
    assert needle in m.group("msg")


def test_refused_template_expression(tmp_path):
    f = tmp_path / "gw.yaml"
    f.write_text("spring:\n  cloud:\n    gateway:\n      discovery:\n        locator:\n"
                 "          enabled: true\n"
                 "          filters:\n"
                 "            - name: AddRequestHeader\n"
                 "              args: {name: X-Host, value: \"host\"}\n")
    rc, out, err = run_check(f)
    assert rc == 1, (out, err)
    m = ERR_RX.search(err)
    assert m and m.group("line") == "9", err
    assert "only serviceId is available" in m.group("msg") or "unexpected" in m.group("msg"), err


def test_config_print_is_the_users_config(tmp_path, mg, upstream_factory):
    up = upstream_factory(name="inv")
    spring = spring_locator()
    spring["cloud"]["discovery"] = {"client": {"simple": {"instances": {"inv": [{"uri": f"http://{up.addr}"}]}}}}
    m = gw(mg, tmp_path, spring=spring, start=False)
    p = subprocess.run([MESHGATE, "config", "print", "-c", m.config_path], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert PREFIX not in text and "locator:" in text and "lower_case_service_id: true" in text
    printed = tmp_path / "printed.yaml"
    printed.write_text(text)
    rc, out, err = run_check(printed)
    assert rc == 0 and "2 routes" not in out, (out, err)
    assert "1 routes" in out


def _status_upstream(upstream_factory, box, name):
    from conftest import send_response

    def h(ctx, req):
        send_response(ctx, box[0], [], b"answer %d\n" % box[0])
        return True
    return upstream_factory(h, name=name)


def test_default_retry_applies_to_locator_routes(mg, upstream_factory, tmp_path):
    box = [500]
    up = _status_upstream(upstream_factory, box, "flaky-1")
    m = gw(mg, tmp_path, spring={"cloud": {"gateway": {
        "default-filters": [{"name": "Retry", "args": {"retries": 2}}],
        "discovery": {"locator": {"enabled": True, "lower-case-service-id": True}}}}})
    register(m, "f1", up, "flaky")
    assert wait_until(lambda: status(m, "/flaky/x") == 500, timeout=1.0), m.stderr_tail()
    n = len(up.requests)
    assert status(m, "/flaky/x") == 500
    assert len(up.requests) - n == 3  # Spring's Retry: GET, 5xx series, 1 + 2 retries
    box[0] = 200
    assert status(m, "/flaky/x") == 200


def test_default_circuit_breaker_applies_to_locator_routes(mg, upstream_factory, tmp_path):
    """An unnamed CircuitBreaker default filter takes each route's id as its
    name (Spring): every locator route gets its own breaker."""
    from test_resilience import breaker
    box = [500]
    up = _status_upstream(upstream_factory, box, "flaky-1")
    ok = upstream_factory(name="steady-1")
    m = gw(mg, tmp_path, spring={"cloud": {"gateway": {
        "default-filters": [{"name": "CircuitBreaker", "args": {"statusCodes": [500]}}],
        "discovery": {"locator": {"enabled": True, "lower-case-service-id": True}}}}},
        resilience4j={"circuitbreaker": {"configs": {"default": {
            "slidingWindowSize": 4, "minimumNumberOfCalls": 4, "failureRateThreshold": 50,
            "waitDurationInOpenState": "30s"}}}})
    register(m, "f1", up, "flaky")
    register(m, "s1", ok, "steady")
    assert wait_until(lambda: status(m, "/steady/x") == 200, timeout=1.0), m.stderr_tail()
    assert wait_until(lambda: status(m, "/flaky/x") == 500, timeout=1.0)
    for _ in range(4):
        status(m, "/flaky/x")
    b = breaker(m, PREFIX + "flaky")
    assert b["state"] in ("open", "OPEN"), b
    n = len(up.requests)
    assert status(m, "/flaky/x") == 503  # open, no fallback: 503 without calling the upstream
    assert len(up.requests) == n
    assert status(m, "/steady/x") == 200  # its own breaker, still closed
    # the breaker survives a registry change (the routes are re-derived)
    register(m, "s2", ok, "steady")
    assert wait_until(lambda: len(m.routes()) >= 2, timeout=1.0)
    assert status(m, "/flaky/x") == 503


def test_default_circuit_breaker_fallback_for_locator_routes(mg, upstream_factory, tmp_path):
    """Spring's common setup: a CircuitBreaker with a fallbackUri in
    default-filters and a route serving the fallback path. The fallback
    route carries the default breaker too (its fallback is itself: loaded,
    as Spring does); a locator route whose instance fails is answered by
    the fallback route, with Spring's exception headers."""
    from test_resilience import status_handler
    down = upstream_factory(status_handler([500]), name="down-1")
    fb = upstream_factory(status_handler([200]), name="fallback")
    m = gw(mg, tmp_path, clusters={"fallback-svc": {"endpoints": [fb.addr]}},
           routes=[{"id": "fallback", "path": "/fallback/**", "to": "fallback-svc"}],
           spring={"cloud": {"gateway": {
               "default-filters": [{"name": "CircuitBreaker",
                                    "args": {"name": "shared", "fallbackUri": "forward:/fallback/svc",
                                             "statusCodes": [500]}}],
               "discovery": {"locator": {"enabled": True, "lower-case-service-id": True}}}}})
    register(m, "d1", down, "orders")
    assert wait_until(lambda: status(m, "/orders/x") == 200, timeout=1.0), m.stderr_tail()
    assert fb.requests[-1].path == "/fallback/svc"
    assert fb.requests[-1].header("Execution-Exception-Type")
    assert down.requests  # the instance was tried first
