"""Discovery features together, end to end: the discovery locator over the
Redis-shared registry (a service registered on one gateway gets its
/<service>/** route on the other, and loses it on deregistration), and the
locator over a DNS-resolved cluster."""
from conftest import http_request, wait_until
from test_discovery import admin_call
from test_dns import dns, dns_discovery  # noqa: F401 - the fixture

LOCATOR = {"enabled": True, "lower_case_service_id": True}


def status(m, path):
    try:
        return http_request(m.port, "GET", path, headers=[("Connection", "close")], timeout=3.0).status
    except Exception:  # noqa: BLE001 - refused/timeout: not routed
        return None


def test_locator_over_redis_shared_registry(mg, redis, upstream_factory):
    up = upstream_factory(name="orders-1")
    disco = {"backend": "redis", "url": f"redis://127.0.0.1:{redis.port}", "locator": LOCATOR}
    a = mg(routes=[], clusters={}, discovery=dict(disco), workers=1, name="a")
    b = mg(routes=[], clusters={}, discovery=dict(disco), workers=1, name="b")
    assert status(b, "/order-service/x") == 404
    r = admin_call(a, "PUT", "/v1/agent/service/register",
                   {"ID": "orders-1", "Name": "Order-Service", "Address": "127.0.0.1", "Port": up.port,
                    "Check": {"TTL": "30s", "Status": "passing"}})
    assert r.status == 200, r
    # registered on A: B has the route (lower-cased path, prefix stripped) within 1 s
    assert wait_until(lambda: status(b, "/order-service/x") == 200, timeout=1.0), b.stderr_tail()
    assert up.requests[-1].path == "/x"
    ids = [rt["id"] for rt in b.routes()]
    assert "ReactiveCompositeDiscoveryClient_Order-Service" in ids
    # deregistered on B: the route disappears on A
    r = admin_call(b, "PUT", "/v1/agent/service/deregister/orders-1")
    assert r.status == 200, r
    assert wait_until(lambda: status(a, "/order-service/x") == 404, timeout=1.0), a.stderr_tail()
    assert wait_until(lambda: status(b, "/order-service/x") == 404, timeout=1.0)


def test_locator_routes_a_dns_cluster(mg, dns, upstream_factory, tmp_path):  # noqa: F811
    up = upstream_factory(name="catalog-1")
    dns.set("catalog.test", A=["127.0.0.1"], ttl=1)
    disco = dns_discovery(dns, tmp_path)
    disco["locator"] = LOCATOR
    m = mg(routes=[], clusters={"catalog": {"dns": [{"name": "catalog.test", "port": up.port}]}}, discovery=disco)
    assert wait_until(lambda: status(m, "/catalog/items/1") == 200, timeout=3.0), m.stderr_tail()
    assert up.requests[-1].path == "/items/1"
    # the name stops resolving: the route stays (the service is configured), 503 naming it
    dns.set("catalog.test", rcode=3, ttl=1)
    assert wait_until(lambda: status(m, "/catalog/items/1") == 503, timeout=5.0), m.stderr_tail()


def test_deregister_on_one_gateway_under_load_on_the_other(mg, redis, upstream_factory):
    """Two gateways on one Redis registry; keep-alive load through B while
    the instance is deregistered on A: no request fails, and B sends nothing
    more to the removed instance once the change has reached it (<= 1 s)."""
    import time

    from conftest import KeepAliveLoad
    ua, ub = upstream_factory(name="a"), upstream_factory(name="b")
    disco = {"backend": "redis", "url": f"redis://127.0.0.1:{redis.port}"}
    route = [{"id": "u", "path": "/api/**", "to": "user-service"}]
    a = mg(routes=route, clusters={}, discovery=dict(disco), workers=1, name="a")
    b = mg(routes=route, clusters={}, discovery=dict(disco), workers=2, name="b")
    for sid, u in (("a", ua), ("b", ub)):
        r = admin_call(a, "PUT", "/v1/agent/service/register",
                       {"ID": sid, "Name": "user-service", "Address": "127.0.0.1", "Port": u.port,
                        "Check": {"TTL": "30s", "Status": "passing"}})
        assert r.status == 200, r

    def both_used():
        ua.requests.clear(), ub.requests.clear()
        if any(status(b, "/api/x") != 200 for _ in range(6)):
            return False  # the registrations have not reached B yet
        return ua.requests and ub.requests
    assert wait_until(both_used, timeout=2.0), b.stderr_tail()
    with KeepAliveLoad(b.port, "/api/x", 4.0) as load:
        time.sleep(1.0)
        assert admin_call(a, "PUT", "/v1/agent/service/deregister/a").status == 200
        time.sleep(1.0)
        n_a = len(ua.requests)
    assert load.results and not load.failures(), load.failures()[:5]
    assert len(load.results) > 20
    assert len(ua.requests) == n_a  # nothing new went to the removed instance
