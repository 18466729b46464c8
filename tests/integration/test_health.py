"""Active health checking (cluster health_check), end to end.

Needs the lead's wiring: main creates mg_health_t on the control loop and
calls mg_health_update at start and on every reload; the load balancer
skips endpoints where !mg_ep_hc_usable(); GET /clusters shows per endpoint
"health" ("healthy" | "unhealthy" | "unknown"), "last_check_status" and
"last_check_ms_ago".
"""
import time

from conftest import admin_get, cluster, http_request, send_response, wait_until

HC = {"path": "/health", "interval": "200ms", "timeout": "200ms",
      "unhealthy_threshold": 2, "healthy_threshold": 1}


def hc_upstream(upstream_factory, name, health_box, app_box=None):
    """An upstream answering health_box[0] on /health and app_box[0] (200)
    elsewhere, recording which requests were health checks."""
    app_box = app_box or [200]

    def h(ctx, req):
        if req.path == "/health":
            send_response(ctx, health_box[0], [("X-Upstream", ctx.server.name)], b"hc\n")
        else:
            send_response(ctx, app_box[0], [("X-Upstream", ctx.server.name)], b"app %s\n" % name.encode())
        return True
    u = upstream_factory(h, name=name)
    return u


def app_requests(u):
    return [r for r in list(u.requests) if r.path != "/health"]


def health_requests(u):
    return [r for r in list(u.requests) if r.path == "/health"]


def endpoints(m, cluster_name="pair"):
    st, data, r = admin_get(m.admin_port, "/clusters")
    assert st == 200, r
    for c in data["clusters"]:
        if c["name"] == cluster_name:
            return {e["address"]: e for e in c["endpoints"]}
    raise AssertionError(f"no cluster {cluster_name} in {data}")


def health_of(m, u, cluster_name="pair"):
    return endpoints(m, cluster_name)[u.addr].get("health")


def start_pair(mg, bad, good, workers=2, **extra):
    return mg(routes=[{"id": "r", "path": "/api/**", "to": "pair"}],
              clusters={"pair": cluster(bad, good, lb="round_robin", health_check=dict(HC), **extra)},
              workers=workers)


def spread(m, n=12):
    seen = []
    for _ in range(n):
        r = http_request(m.port, "GET", "/api/x")
        assert r.status == 200, r
        seen.append(r.header("X-Upstream"))
    return seen


def test_failing_endpoint_gets_no_traffic_and_comes_back(mg, upstream_factory):
    box = [200]
    bad = hc_upstream(upstream_factory, "bad", box)
    good = hc_upstream(upstream_factory, "good", [200])
    m = start_pair(mg, bad, good)
    assert wait_until(lambda: health_of(m, bad) == "healthy" and health_of(m, good) == "healthy", 3), \
        endpoints(m)
    seen = spread(m)
    assert "bad" in seen and "good" in seen, seen

    box[0] = 500
    t0 = time.monotonic()
    assert wait_until(lambda: health_of(m, bad) == "unhealthy", 3), endpoints(m)
    # 2 failures at a 200 ms interval: well within a second or so
    assert time.monotonic() - t0 < 1.5
    e = endpoints(m)[bad.addr]
    assert e["last_check_status"] == 500, e
    assert 0 <= e["last_check_ms_ago"] < 1000, e
    assert endpoints(m)[good.addr]["health"] == "healthy"

    n_bad = len(app_requests(bad))
    assert spread(m) == ["good"] * 12
    assert len(app_requests(bad)) == n_bad, "an unhealthy endpoint must get no traffic"

    box[0] = 200
    assert wait_until(lambda: health_of(m, bad) == "healthy", 3), endpoints(m)  # healthy_threshold 1
    assert endpoints(m)[bad.addr]["last_check_status"] == 200
    assert "bad" in spread(m)
    assert "healthy -> unhealthy" in m.stderr_text()
    assert "unhealthy -> healthy" in m.stderr_text()


def test_health_check_request_and_one_checker_for_all_workers(mg, upstream_factory):
    a = hc_upstream(upstream_factory, "a", [200])
    b = hc_upstream(upstream_factory, "b", [200])
    m = start_pair(mg, a, b, workers=4)
    assert wait_until(lambda: len(health_requests(a)) >= 1, 3)
    req = health_requests(a)[0]
    assert req.method == "GET" and req.target == "/health" and req.version == "HTTP/1.1"
    assert req.header("Host") == a.addr
    assert req.header("User-Agent") == "meshgate-health"
    assert req.header("Connection") == "close"
    # one checker per endpoint, not one per worker: ~5 checks a second, not ~20
    n0 = len(health_requests(a))
    time.sleep(2.0)
    n = len(health_requests(a)) - n0
    assert 5 <= n <= 12, n


def test_never_passing_endpoint_gets_no_traffic(mg, upstream_factory):
    bad = hc_upstream(upstream_factory, "bad", [503])
    good = hc_upstream(upstream_factory, "good", [200])
    m = start_pair(mg, bad, good)
    # first check decides at once (Envoy): unhealthy without waiting for 2 failures
    assert wait_until(lambda: health_of(m, bad) == "unhealthy" and health_of(m, good) == "healthy", 2), \
        endpoints(m)
    assert spread(m) == ["good"] * 12
    assert app_requests(bad) == []


def test_passing_check_unejects_host(mg, upstream_factory):
    app = [500]
    flaky = hc_upstream(upstream_factory, "flaky", [200], app)
    good = hc_upstream(upstream_factory, "good", [200])
    m = start_pair(mg, flaky, good, workers=1, outlier_detection={
        "consecutive_5xx": 2, "interval": "10s", "base_ejection_time": "60s",
        "max_ejection_percent": 50, "min_health_percent": 0})
    assert wait_until(lambda: health_of(m, flaky) == "healthy", 3), endpoints(m)
    statuses = [http_request(m.port, "GET", "/api/x").status for _ in range(6)]
    assert statuses.count(500) == 2, statuses
    app[0] = 200
    # ejected for 60 s, but the next passing health check (200 ms) returns it
    assert wait_until(lambda: "flaky" in spread(m, 4), 2), endpoints(m)
    e = endpoints(m)[flaky.addr]
    assert e["times_ejected"] == 1 and not e["ejected"], e


def test_reload_keeps_health_state(mg, upstream_factory):
    bad = hc_upstream(upstream_factory, "bad", [500])
    good = hc_upstream(upstream_factory, "good", [200])
    m = start_pair(mg, bad, good)
    assert wait_until(lambda: health_of(m, bad) == "unhealthy", 3), endpoints(m)
    cfg = m.config
    cfg["clusters"]["pair"]["response_timeout"] = "5s"  # any change
    m.reload(cfg)
    time.sleep(0.3)
    # right after the reload: still unhealthy (not "unknown" again), no traffic to it
    for _ in range(10):
        assert health_of(m, bad) == "unhealthy", endpoints(m)
        assert http_request(m.port, "GET", "/api/x").header("X-Upstream") == "good"
        time.sleep(0.05)
    assert app_requests(bad) == []

    # dropping health_check on reload: the endpoint is usable again
    cfg["clusters"]["pair"].pop("health_check")
    m.reload(cfg)
    assert wait_until(lambda: "bad" in spread(m, 4), 3)
    assert health_of(m, bad) in (None, "unknown")
