"""Resilience through the real binary: circuit breakers with fallbacks,
bulkheads, retries and outlier detection, against real misbehaving
upstreams (refusing, answering 5xx, hanging)."""
import threading
import time

import pytest

from conftest import cluster, free_port, http_request, admin_get, send_response, wait_until


def breaker(m, name):
    st, data, _ = admin_get(m.admin_port, "/circuit-breakers")
    assert st == 200
    for b in data["circuit_breakers"]:
        if b["name"] == name:
            return b
    raise AssertionError(f"no breaker {name} in {data}")


def status_handler(status_box):
    """An upstream whose status is whatever status_box[0] says now."""
    def h(ctx, req):
        send_response(ctx, status_box[0], [("X-Upstream", ctx.server.name)], b"answer %d\n" % status_box[0])
        return True
    return h


def test_breaker_opens_serves_fallback_half_opens_and_closes(mg, upstream_factory):
    box = [500]
    up = upstream_factory(status_handler(box), name="flaky")
    m = mg(routes=[
        {"id": "users", "path": "/api/users/**", "to": "users",
         "circuit_breaker": {"failure_threshold": 3, "reset_timeout": "1s", "failure_statuses": [500],
                             "fallback": "/fallback/users"}},
        {"id": "fallback", "path": "/fallback/users", "respond": {
            "status": 200, "headers": {"Content-Type": "application/json"}, "body": '{"users":"cached"}'}},
    ], clusters={"users": cluster(up)}, workers=2)
    # three failures (answered through the fallback, as Spring does) open it
    for _ in range(3):
        r = http_request(m.port, "GET", "/api/users/1")
        assert r.status == 200 and b"cached" in r.body, r
    assert wait_until(lambda: breaker(m, "route:users")["state"] == "OPEN", 2)
    seen = len(up.requests)
    r = http_request(m.port, "GET", "/api/users/1")
    assert r.status == 200 and b"cached" in r.body
    assert len(up.requests) == seen, "an open breaker must not call the upstream"
    # after the reset timeout one trial call goes through; it succeeds -> closed
    box[0] = 200
    time.sleep(1.2)
    r = http_request(m.port, "GET", "/api/users/1")
    assert r.status == 200 and b"answer 200" in r.body, r
    assert wait_until(lambda: breaker(m, "route:users")["state"] == "CLOSED", 2)


def test_breaker_without_fallback_is_503_json(mg, upstream_factory):
    dead = free_port()
    m = mg(routes=[{"id": "d", "path": "/api/**", "to": "dead",
                    "circuit_breaker": {"failure_threshold": 2, "reset_timeout": "30s"}}],
           clusters={"dead": cluster(f"127.0.0.1:{dead}")}, workers=1)
    for _ in range(2):
        assert http_request(m.port, "GET", "/api/x").status == 503
    r = http_request(m.port, "GET", "/api/x")
    assert r.status == 503 and "open" in r.json()["error"], r
    # drills: force closed, then reset
    st, data, _ = admin_get(m.admin_port, "/circuit-breakers")
    assert any(b["state"] == "OPEN" for b in data["circuit_breakers"])


def test_fallback_to_cluster_gets_exception_headers(mg, echo):
    dead = free_port()
    m = mg(routes=[
        {"id": "users", "path": "/api/users/**", "to": "dead",
         "circuit_breaker": {"failure_threshold": 50, "reset_timeout": "30s", "fallback": "/fallback/users"}},
        {"id": "fb", "path": "/fallback/**", "to": "echo"},
    ], clusters={"dead": cluster(f"127.0.0.1:{dead}"), "echo": cluster(echo)}, workers=1)
    r = http_request(m.port, "GET", "/api/users/7")
    assert r.status == 200, r
    seen = r.json()
    hdrs = {k.lower(): v for k, v in seen["headers"]}
    assert seen["path"] == "/fallback/users"
    assert "connectexception" in hdrs.get("execution-exception-type", "").lower(), hdrs


def test_bulkhead_overflow_is_503_and_other_cluster_unaffected(mg, upstream_factory, echo):
    def slow(ctx, req):
        time.sleep(1.5)
        send_response(ctx, 200, [], b"slow\n")
        return True
    s = upstream_factory(slow, name="slow")
    m = mg(routes=[{"id": "slow", "path": "/slow/**", "to": "slow"},
                   {"id": "fast", "path": "/fast/**", "to": "fast"}],
           clusters={"slow": cluster(s, connection_pool={"max_requests": 2}), "fast": cluster(echo)}, workers=1)
    results = []
    ths = [threading.Thread(target=lambda: results.append(http_request(m.port, "GET", "/slow/x", timeout=10)))
           for _ in range(2)]
    for t in ths:
        t.start()
    assert s.wait_heads(2, 5)
    r = http_request(m.port, "GET", "/slow/x")
    assert r.status == 503 and r.header("x-meshgate-overflow") == "max_requests", r
    t0 = time.monotonic()
    r = http_request(m.port, "GET", "/fast/x")
    assert r.status == 200 and time.monotonic() - t0 < 1.0
    for t in ths:
        t.join(10)
    assert [x.status for x in results] == [200, 200]
    st, data, _ = admin_get(m.admin_port, "/stats")
    assert data["clusters"]["slow"]["overflow"]["max_requests"] >= 1


def test_get_is_retried_on_another_endpoint_post_is_not(mg, upstream_factory):
    bad = upstream_factory(status_handler([503]), name="bad")
    good = upstream_factory(status_handler([200]), name="good")
    m = mg(routes=[{"id": "r", "path": "/api/**", "to": "pair",
                    "retry": {"attempts": 2, "retry_on": ["5xx"], "methods": ["GET", "PUT"]}}],
           clusters={"pair": cluster(bad, good, lb="round_robin")}, workers=1)
    for _ in range(6):
        r = http_request(m.port, "GET", "/api/x")
        assert r.status == 200 and r.header("X-Upstream") == "good", r
    posts = [http_request(m.port, "POST", "/api/x", body=b"data").status for _ in range(4)]
    assert 503 in posts, "a POST must not be retried"
    # an idempotent PUT with a small body is replayed whole on the other endpoint
    for _ in range(4):
        r = http_request(m.port, "PUT", "/api/x", body=b"x" * 5000)
        assert r.status == 200 and r.header("X-Upstream") == "good", r
    assert all(q.body_len == 5000 for q in good.requests if q.method == "PUT")


@pytest.mark.parametrize("route", [
    {"retry": {"attempts": 2, "retry_on": ["5xx"]}},         # native: Envoy's num_retries
    {"filters": [{"name": "Retry", "args": {"retries": 2}}]},  # Spring: retries after the first call
])
def test_retry_count_is_exact(mg, upstream_factory, route):
    """attempts / retries count the retries after the first try: 2 -> 3 calls."""
    bad = upstream_factory(status_handler([500]), name="bad")
    m = mg(routes=[dict({"id": "r", "path": "/api/**", "to": "one"}, **route)],
           clusters={"one": cluster(bad)}, workers=1)
    for k in range(1, 3):
        r = http_request(m.port, "GET", "/api/x")
        assert r.status == 500, r
        assert len(bad.requests) == 3 * k, [q.path for q in bad.requests]
    st, data, _ = admin_get(m.admin_port, "/stats")
    assert data["clusters"]["one"]["retries"]["granted"] == 4


def test_failing_endpoint_is_ejected_and_returns(mg, upstream_factory):
    box = [500]
    bad = upstream_factory(status_handler(box), name="bad")
    good = upstream_factory(status_handler([200]), name="good")
    m = mg(routes=[{"id": "r", "path": "/api/**", "to": "pair"}],
           clusters={"pair": cluster(bad, good, lb="round_robin", outlier_detection={
               "consecutive_5xx": 2, "interval": "200ms", "base_ejection_time": "1s",
               "max_ejection_percent": 50})}, workers=1)
    statuses = [http_request(m.port, "GET", "/api/x").status for _ in range(6)]
    assert statuses.count(500) == 2, statuses
    n_bad = len(bad.requests)
    for _ in range(6):
        assert http_request(m.port, "GET", "/api/x").status == 200
    assert len(bad.requests) == n_bad, "an ejected endpoint must get no traffic"
    st, data, _ = admin_get(m.admin_port, "/clusters")
    eps = data["clusters"][0]["endpoints"]
    assert any(e["ejected"] and e["times_ejected"] == 1 for e in eps), eps
    box[0] = 200
    time.sleep(1.5)
    assert wait_until(lambda: any(http_request(m.port, "GET", "/api/x").header("X-Upstream") == "bad"
                                  for _ in range(4)), 5)


def test_max_connections_queues_then_max_pending_overflows(mg, upstream_factory):
    def slow(ctx, req):
        time.sleep(0.8)
        send_response(ctx, 200, [], b"slow\n")
        return True
    s = upstream_factory(slow, name="slow")
    m = mg(routes=[{"id": "slow", "path": "/slow/**", "to": "slow"}],
           clusters={"slow": cluster(s, connect_timeout="3s",
                                     connection_pool={"max_connections": 1, "max_pending": 1})}, workers=1)
    results = []
    def get():
        results.append(http_request(m.port, "GET", "/slow/x", timeout=10))
    t1 = threading.Thread(target=get)
    t1.start()
    assert s.wait_heads(1, 5)
    t2 = threading.Thread(target=get)     # waits for the one connection
    t2.start()
    time.sleep(0.2)
    r = http_request(m.port, "GET", "/slow/x")  # a second pending one: overflow
    assert r.status == 503 and r.header("x-meshgate-overflow") == "max_pending", r
    t1.join(10)
    t2.join(10)
    assert [x.status for x in results] == [200, 200]
    assert s.conn_count == 1, "max_connections 1: the waiting request reuses the one connection"


SEED_LOCAL = """\
server:
  port: {port}
management:
  server:
    port: {admin}
workers: 2
spring:
  cloud:
    discovery:
      client:
        simple:
          instances:
            user-service:
              - uri: http://{users}
            order-service:
              - uri: http://{orders}
resilience4j:
  circuitbreaker:
    instances:
      user-service-cb:
        slidingWindowSize: 4
        minimumNumberOfCalls: 4
        failureRateThreshold: 50
        waitDurationInOpenState: 1s
        permittedNumberOfCallsInHalfOpenState: 1
routes:
  - id: user-service-fallback
    path: /fallback/users
    respond:
      status: 503
      headers: {{Content-Type: application/json}}
      body: '{{"error": "user-service is unavailable", "status": 503}}'
"""


def test_seed_verbatim_breaker_serves_its_fallback_then_recovers(tmp_path, mg, upstream_factory):
    """The seed's first YAML block, untouched, plus a local file: traffic
    reaches user-service as /42 with X-Service-Name; when user-service fails
    the breaker opens and the seed's forward:/fallback/users answers; after
    the wait one trial call closes it again."""
    import os
    from conftest import Meshgate
    seed = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "seed-gateway.yaml")
    box = [200]

    def users_handler(ctx, req):
        if box[0] != 200:
            ctx.reset()  # an upstream dying on every call
            return False
        send_response(ctx, 200, [("X-Upstream", "users")], ("path=%s name=%s" % (
            req.path, req.header("X-Service-Name"))).encode())
        return True
    users = upstream_factory(users_handler, name="users")
    orders = upstream_factory(name="orders")
    port, admin = free_port(), free_port()
    m = Meshgate(tmp_path, open(seed).read(), name="seed")
    local = tmp_path / "local.yaml"
    local.write_text(SEED_LOCAL.format(port=port, admin=admin, users=users.addr, orders=orders.addr))
    m.config = {"listen": f"127.0.0.1:{port}", "admin": f"127.0.0.1:{admin}"}
    m.start(extra_args=("-c", str(local)))
    try:
        r = http_request(port, "GET", "/api/users/42")
        assert r.status == 200 and r.body == b"path=/42 name=user-service", r
        box[0] = 0
        for _ in range(4):
            r = http_request(port, "GET", "/api/users/42")
            assert r.status == 503 and b"user-service is unavailable" in r.body, r
        assert wait_until(lambda: breaker(m, "user-service-cb")["state"] == "OPEN", 2)
        n = len(users.heads)
        r = http_request(port, "GET", "/api/users/42")
        assert r.status == 503 and b"unavailable" in r.body
        assert len(users.heads) == n, "the open breaker must not call user-service"
        box[0] = 200
        time.sleep(1.2)
        r = http_request(port, "GET", "/api/users/42")
        assert r.status == 200 and r.body == b"path=/42 name=user-service", r
        assert wait_until(lambda: breaker(m, "user-service-cb")["state"] == "CLOSED", 2)
    finally:
        m.stop()
