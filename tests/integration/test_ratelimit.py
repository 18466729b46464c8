"""Rate limiting through the real binary.

The seed's order-service route (examples/seed-gateway.yaml: `name:
RateLimiter`, replenishRate 10, burstCapacity 20) is loaded verbatim (only
the user-service CircuitBreaker item is left out, it is not what this file
tests) with a second file adding instances and ports, as a user would run
it. Local backend with 1 and 2 workers, then the same with a real
redis-server started here on a free port (skipped when /usr/bin/redis-server
is missing): two meshgate instances on one Redis share one budget; killing
Redis makes requests fail open quickly (X-RateLimit-Remaining: -1);
restarting it restores limiting without restarting meshgate.

Timing: a burst is sent as fast as the client can; the bucket refills at
10 tokens/s meanwhile, so counts are asserted with slack computed from the
measured elapsed time, never exactly.
"""
import math
import time

import pytest

from conftest import Meshgate, free_port, http_request, seed_local_yaml, seed_without, wait_until

RATE, BURST = 10, 20
ORDERS = "/api/orders/1"


@pytest.fixture
def gateways(tmp_path, upstreams):
    """start(workers, redis_port) -> a meshgate on the seed; several may share upstreams."""
    made = []
    orders = upstreams("order-1")
    users = upstreams("user-1")

    def start(workers=1, redis_port=None):
        port, admin_port = free_port(), free_port()
        name = f"seed{len(made)}"
        m = Meshgate(tmp_path, seed_without("CircuitBreaker"), name=name)
        local = tmp_path / f"{name}-local.yaml"
        local.write_text(seed_local_yaml(port, admin_port, [users], [orders], workers, redis_port, access_log=False))
        m.config = {"listen": f"127.0.0.1:{port}", "admin": f"127.0.0.1:{admin_port}"}
        m.start(extra_args=("-c", str(local)))
        m.orders = orders
        made.append(m)
        return m
    yield start
    for m in made:
        died = m.proc is not None and m.proc.poll() is not None and not m.expect_exit
        tail = m.stderr_tail()
        if m.alive():
            m.stop()
        assert not died, f"meshgate {m.name} died\n{tail}"
        text = m.stderr_text()
        assert "AddressSanitizer" not in text and "runtime error:" not in text, text[-4000:]


def get(m, path=ORDERS, headers=None, timeout=5.0):
    """One request on a fresh connection (so several workers all get some)."""
    return http_request(m.port, "GET", path, headers=headers, timeout=timeout)


def rl_headers(r):
    return {k: r.header(k) for k in ("X-RateLimit-Remaining", "X-RateLimit-Replenish-Rate",
                                    "X-RateLimit-Burst-Capacity", "X-RateLimit-Requested-Tokens")}


def burst(m, n, path=ORDERS, headers=None):
    """n requests as fast as possible; returns (responses, elapsed seconds)."""
    t0 = time.monotonic()
    rs = [get(m, path, headers) for _ in range(n)]
    return rs, time.monotonic() - t0


def slack(elapsed):
    """Tokens the bucket may have regained while a burst was being sent."""
    return math.ceil(elapsed * RATE) + 1


def check_sequence(m):
    """20 pass at once, then 429 with headers and Retry-After; ~10 more after 1 s;
    denied requests never reach the upstream."""
    before = len(m.orders.requests)
    rs, el = burst(m, BURST + 5)
    codes = [r.status for r in rs]
    assert codes[:BURST] == [200] * BURST, codes
    allowed = codes.count(200)
    assert allowed <= BURST + slack(el), (codes, el)
    assert 429 in codes, (codes, el)
    ok = rs[0]
    assert rl_headers(ok) == {"X-RateLimit-Remaining": str(BURST - 1), "X-RateLimit-Replenish-Rate": "10",
                              "X-RateLimit-Burst-Capacity": "20", "X-RateLimit-Requested-Tokens": "1"}, ok
    assert ok.json()["path"] == "/1"  # StripPrefix=2 ran too
    denied = next(r for r in rs if r.status == 429)
    h = rl_headers(denied)
    assert h["X-RateLimit-Remaining"] == "0", denied
    assert h["X-RateLimit-Burst-Capacity"] == "20" and h["X-RateLimit-Replenish-Rate"] == "10", denied
    assert int(denied.header("Retry-After", "0")) >= 1, denied

    # after ~1 s, about rate x 1 s more pass
    time.sleep(1.0)
    rs2, el2 = burst(m, 2 * RATE)
    more = [r.status for r in rs2].count(200)
    assert RATE - 2 <= more <= RATE + 2 + slack(el2), ([r.status for r in rs2], el2)
    assert set(r.status for r in rs2) <= {200, 429}

    # the upstream saw exactly the allowed ones
    total = allowed + more
    wait_until(lambda: len(m.orders.requests) - before >= total, 3.0)
    time.sleep(0.1)
    assert len(m.orders.requests) - before == total


# ---------------------------------------------------------------------------
# local backend
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_seed_order_service_local(gateways, workers):
    m = gateways(workers)
    check_sequence(m)
    # user-service has no limiter: no headers
    r = get(m, "/api/users/1")
    assert r.status == 200 and r.header("X-RateLimit-Remaining") is None, r


def test_key_by_header_and_empty_key(tmp_path, upstreams):
    up = upstreams("backend")
    port, admin_port = free_port(), free_port()
    cfg = (f"listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin_port}\nworkers: 2\naccess_log: off\n"
           f"clusters: {{b: {{endpoints: ['{up.addr}']}}}}\n"
           "routes:\n"
           "  - id: by-user\n    path: /u/**\n    to: b\n"
           "    rate_limit: {rate: 1, burst: 2, key: 'header:X-User'}\n"
           "  - id: open-empty\n    path: /o/**\n    to: b\n"
           "    rate_limit: {rate: 1, burst: 1, key: 'query:k', deny_empty_key: false}\n")
    m = Meshgate(tmp_path, cfg, name="hdr")
    m.config = {"listen": f"127.0.0.1:{port}", "admin": f"127.0.0.1:{admin_port}"}
    m.start()
    try:
        a = [get(m, "/u/x", [("X-User", "alice")]).status for _ in range(3)]
        assert a[:2] == [200, 200] and a[2] == 429, a
        assert get(m, "/u/x", [("X-User", "bob")]).status == 200
        n0 = len(up.requests)
        r = get(m, "/u/x")  # no header: empty key -> 403, as Spring
        assert r.status == 403, r
        assert r.header("X-RateLimit-Remaining") is None, r
        time.sleep(0.1)
        assert len(up.requests) == n0  # never reached the upstream
        # deny_empty_key: false lets an empty key through, unlimited
        assert [get(m, "/o/x").status for _ in range(3)] == [200, 200, 200]
        assert [get(m, "/o/x?k=1").status for _ in range(2)] == [200, 429]
    finally:
        m.stop()


# ---------------------------------------------------------------------------
# Redis backend
# ---------------------------------------------------------------------------

def warm(ms, redis):
    """Wait until every worker of every gateway decides through Redis
    (Remaining >= 0 several times in a row), then reset the buckets."""
    for m in ms:
        streak = 0
        deadline = time.monotonic() + 10
        while streak < 8 and time.monotonic() < deadline:
            r = get(m)
            rem = r.header("X-RateLimit-Remaining")
            streak = streak + 1 if rem is not None and int(rem) >= 0 else 0
            if r.status == 429:
                redis.cmd("FLUSHALL")
            time.sleep(0.02)
        assert streak >= 8, f"{m.name} never decided through Redis\n{m.stderr_tail()}"
    assert redis.cmd("FLUSHALL") == b"+OK"


@pytest.mark.parametrize("workers", [1, 2])
def test_seed_order_service_redis(gateways, redis, workers):
    m = gateways(workers, redis.port)
    warm([m], redis)
    check_sequence(m)
    keys = redis.cmd("KEYS", "request_rate_limiter.*")
    assert keys and b"order-service" in keys, keys  # Spring's key names


def test_two_instances_share_the_budget(gateways, redis):
    a, b = gateways(2, redis.port), gateways(2, redis.port)
    warm([a, b], redis)
    before = len(a.orders.requests)
    t0 = time.monotonic()
    codes = []
    for i in range(2 * BURST + 10):
        codes.append(get(a if i % 2 == 0 else b).status)
    el = time.monotonic() - t0
    allowed = codes.count(200)
    # together about burst (+ what refilled meanwhile), never 2 x burst
    assert BURST <= allowed <= BURST + slack(el), (codes, el)
    assert allowed < 2 * BURST
    assert set(codes) <= {200, 429}
    wait_until(lambda: len(a.orders.requests) - before >= allowed, 3.0)
    time.sleep(0.1)
    assert len(a.orders.requests) - before == allowed


def test_redis_down_fails_open_then_recovers(gateways, redis):
    a, b = gateways(2, redis.port), gateways(1, redis.port)
    warm([a, b], redis)
    redis.kill()
    # fail open: every request passes quickly, Remaining -1, nothing breaks
    worst = 0.0
    for i in range(2 * BURST + 10):
        t0 = time.monotonic()
        r = get(a if i % 2 == 0 else b, timeout=5.0)
        worst = max(worst, time.monotonic() - t0)
        assert r.status == 200, r
        assert r.header("X-RateLimit-Remaining") == "-1", r
    assert worst < 1.0, worst
    assert a.alive() and b.alive()

    # restart Redis on the same port: limiting resumes without a restart
    redis.start()

    def limiting(m):
        r = get(m)
        rem = r.header("X-RateLimit-Remaining")
        return rem is not None and int(rem) >= 0
    assert wait_until(lambda: limiting(a) and limiting(b), 15.0, 0.2), a.stderr_tail()
    warm([a, b], redis)
    codes = [get(a if i % 2 == 0 else b).status for i in range(BURST + 10)]
    assert codes[:BURST] == [200] * BURST and 429 in codes, codes
