"""The Redis-shared service registry (discovery.backend: redis), end to end:
a real redis-server (conftest's `redis` fixture, free port, no persistence)
and two (or three) meshgate processes on it. A registration, heartbeat or
deregistration sent to either gateway is seen by both within 1 s; TTLs
expire on both; a gateway that dies loses nothing; a Redis outage keeps
routing on the last known set and refuses writes with 503; a Redis that
comes back empty is re-seeded from the gateways' replicas.
"""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import MESHGATE, REDIS_SERVER, Redis, admin_get, http_request, wait_until
from test_discovery import admin_call, registration

PREFIX = "meshgate:registry"


def gw(mg, redis, url=None, name=None, **top):
    disco = {"backend": "redis", "url": url or f"redis://127.0.0.1:{redis.port}"}
    disco.update(top.pop("discovery", {}))
    return mg(routes=[{"id": "u", "path": "/api/**", "to": "user-service"}], clusters={},
              discovery=disco, workers=1, name=name, **top)


def status(m):
    try:
        return http_request(m.port, "GET", "/api/x", timeout=3.0).status
    except Exception:  # noqa: BLE001 - a refused/timeout is "not routed"
        return None


def put(m, path, body=None):
    return admin_call(m, "PUT", path, body)


def register(m, sid, up, **kw):
    r = put(m, "/v1/agent/service/register", registration(sid, up, **kw))
    assert r.status == 200, r
    return r


def beat(m, sid, st="pass"):
    r = put(m, f"/v1/agent/check/{st}/service:{sid}")
    assert r.status == 200, r


def stats(m):
    st, data, _ = admin_get(m.admin_port, "/stats")
    assert st == 200
    return data


def backend(m):
    return stats(m)["registry_backend"]


def instance_ids(m):
    st, data, _ = admin_get(m.admin_port, "/registry")
    assert st == 200
    return sorted(i["id"] for s in data["services"] for i in s["instances"])


def check_status(m, sid):
    st, data, _ = admin_get(m.admin_port, "/registry")
    for s in data["services"]:
        for i in s["instances"]:
            if i["id"] == sid:
                return i["status"]
    return None


def both(pred, a, b, timeout):
    return wait_until(lambda: pred(a) and pred(b), timeout)


def test_register_on_a_seen_on_b(mg, redis, upstream_factory):
    up = upstream_factory(name="u1")
    a, b = gw(mg, redis, name="a"), gw(mg, redis, name="b")
    assert status(a) == 503 and status(b) == 503
    # a blocking query parked on B before anything happens
    r0 = admin_call(b, "GET", "/v1/health/service/user-service")
    idx = r0.header("X-Consul-Index")
    woke = {}

    def blocking():
        t0 = time.monotonic()
        r = admin_call(b, "GET", f"/v1/health/service/user-service?index={idx}&wait=20s", timeout=30)
        woke["after"] = time.monotonic() - t0
        woke["resp"] = r
    th = threading.Thread(target=blocking)
    th.start()
    time.sleep(0.3)
    register(a, "u1", up, ttl="10s")
    beat(a, "u1")
    t0 = time.monotonic()
    assert both(lambda m: status(m) == 200, a, b, 1.0), b.stderr_tail()
    assert time.monotonic() - t0 < 1.5
    th.join(10)
    assert woke["after"] < 2.0, woke
    body = woke["resp"].json()
    assert [e["Service"]["ID"] for e in body] == ["u1"]
    # B's own Consul view: the instance, its tags and meta, passing
    r = admin_call(b, "GET", "/v1/health/service/user-service?passing=true")
    e = r.json()[0]
    assert e["Service"]["Port"] == up.port and e["Service"]["Meta"] == {"version": "1.2"}
    assert e["Checks"][0]["Status"] == "passing"
    # data model: one hash of definitions, one of TTL states
    d = json.loads(redis.query("HGET", f"{PREFIX}:instances", "u1"))
    assert d["ID"] == "u1" and d["Port"] == up.port
    s = json.loads(redis.query("HGET", f"{PREFIX}:checks", "service:u1"))
    assert s["Instance"] == "u1" and s["Status"] == "passing" and s["DeadlineMs"] > time.time() * 1000
    assert redis.query("GET", f"{PREFIX}:epoch")
    bs = backend(b)
    assert bs["connected"] and bs["remote_changes_applied"] >= 2 and bs["resyncs"] >= 1
    assert backend(a)["writes"] >= 2
    # no echo: B applied the change but wrote nothing
    assert bs["writes"] == 0


def test_heartbeats_alternate_then_expire_on_both(mg, redis, upstream_factory):
    up = upstream_factory(name="u1")
    a, b = gw(mg, redis, name="a"), gw(mg, redis, name="b")
    register(b, "u1", up, ttl="2s")
    beat(b, "u1")
    assert both(lambda m: status(m) == 200, a, b, 1.0)
    # 6 s of heartbeats, alternately to A and B, every 0.5 s: a TTL of 2 s
    # only holds on both if each gateway learns the other's heartbeats
    end = time.monotonic() + 6
    i = 0
    while time.monotonic() < end:
        beat(a if i % 2 else b, "u1", "pass")
        i += 1
        assert status(a) == 200 and status(b) == 200
        assert check_status(a, "u1") == "passing" and check_status(b, "u1") == "passing"
        time.sleep(0.5)
    # heartbeats stop: critical on both, traffic stops on both
    assert both(lambda m: status(m) == 503, a, b, 4.0)
    assert check_status(a, "u1") == "critical" and check_status(b, "u1") == "critical"
    # a heartbeat on A brings it back on both
    beat(a, "u1")
    assert both(lambda m: status(m) == 200, a, b, 1.0)
    # warn is seen too (warning instances are not routed)
    beat(b, "u1", "warn")
    assert wait_until(lambda: check_status(a, "u1") == "warning", 1.0)


def test_deregister_on_b_gone_on_a(mg, redis, upstream_factory):
    u1, u2 = upstream_factory(name="u1"), upstream_factory(name="u2")
    a, b = gw(mg, redis, name="a"), gw(mg, redis, name="b")
    for sid, u in (("u1", u1), ("u2", u2)):
        register(a, sid, u, ttl="30s")
        beat(a, sid)
    assert both(lambda m: instance_ids(m) == ["u1", "u2"], a, b, 1.0)
    assert both(lambda m: status(m) == 200, a, b, 1.0)
    r = put(b, "/v1/agent/service/deregister/u1")
    assert r.status == 200, r
    assert both(lambda m: instance_ids(m) == ["u2"], a, b, 1.0)
    assert redis.query("HGET", f"{PREFIX}:instances", "u1") is None
    assert redis.query("HGET", f"{PREFIX}:checks", "service:u1") is None
    # the endpoint set follows within the rebuild coalescing window (100 ms)
    time.sleep(0.3)
    u1n, u2n = len(u1.requests), len(u2.requests)
    for _ in range(6):
        assert status(a) == 200 and status(b) == 200
    assert len(u2.requests) == u2n + 12 and len(u1.requests) == u1n
    # unknown on both now
    assert put(a, "/v1/agent/service/deregister/u1").status == 404


def test_sigkill_loses_nothing_and_a_fresh_gateway_loads_all(mg, redis, upstream_factory):
    u1, u2 = upstream_factory(name="u1"), upstream_factory(name="u2")
    a, b = gw(mg, redis, name="a"), gw(mg, redis, name="b")
    register(a, "u1", u1, ttl="30s")
    beat(a, "u1")
    assert both(lambda m: status(m) == 200, a, b, 1.0)
    a.proc.send_signal(signal.SIGKILL)
    a.wait_exit(5)
    for _ in range(5):
        assert status(b) == 200
    register(b, "u2", u2, ttl="30s")
    beat(b, "u2")
    # a fresh gateway with A's config loads everything at start
    c = mg(a.config, name="a2")
    assert instance_ids(c) == ["u1", "u2"]
    assert status(c) == 200
    assert check_status(c, "u1") == "passing" and check_status(c, "u2") == "passing"
    beat(c, "u1")
    assert backend(c)["writes"] == 1


def test_redis_down_keeps_routing_refuses_writes_then_reseeds(mg, redis, upstream_factory):
    u1, u2 = upstream_factory(name="u1"), upstream_factory(name="u2")
    a, b = gw(mg, redis, name="a"), gw(mg, redis, name="b")
    register(a, "u1", u1, ttl="60s")
    beat(a, "u1")
    register(b, "short", u1, ttl="2s", name="other-service")
    beat(b, "short")
    assert both(lambda m: status(m) == 200, a, b, 1.0)
    assert both(lambda m: check_status(m, "short") == "passing", a, b, 1.0)
    redis.kill()
    assert both(lambda m: not backend(m)["connected"], a, b, 5.0)
    for m in (a, b):
        for _ in range(3):
            assert status(m) == 200
    # TTL expiry goes on locally while Redis is down
    assert both(lambda m: check_status(m, "short") == "critical", a, b, 4.0)
    r = put(a, "/v1/agent/service/register", registration("u2", u2, ttl="60s"))
    assert r.status == 503, r
    assert b"Redis" in r.body and b"not applied" in r.body
    r = put(b, "/v1/agent/check/pass/service:u1")
    assert r.status == 503, r
    r = put(b, "/v1/agent/service/deregister/u1")
    assert r.status == 503, r
    assert instance_ids(a) == ["short", "u1"] and instance_ids(b) == ["short", "u1"]
    assert backend(a)["writes_refused"] >= 1 and backend(a)["backend_errors"] >= 1
    # Redis comes back EMPTY (no persistence): the gateways notice the lost
    # epoch and write their replicas back, so nothing registered is lost
    redis.start()
    assert both(lambda m: backend(m)["connected"], a, b, 10.0)
    assert wait_until(lambda: redis.query("HGET", f"{PREFIX}:instances", "u1") is not None, 5.0)
    assert backend(a)["reseeds"] + backend(b)["reseeds"] >= 1
    assert instance_ids(a) == ["short", "u1"] and instance_ids(b) == ["short", "u1"]
    assert status(a) == 200 and status(b) == 200
    # writes work again, and reach the other gateway
    register(b, "u2", u2, ttl="60s")
    beat(b, "u2")
    assert wait_until(lambda: instance_ids(a) == ["short", "u1", "u2"], 1.0)
    assert wait_until(lambda: check_status(a, "u2") == "passing", 1.0)
    # the expired check stayed critical through the re-seed, on both
    assert check_status(a, "short") == "critical" and check_status(b, "short") == "critical"


def test_external_removal_resyncs(mg, redis, upstream_factory):
    """A key deleted behind the gateways' back (no message) disappears at
    the next full resync; a '*' message forces one at once."""
    up = upstream_factory(name="u1")
    a = gw(mg, redis, name="a")
    register(a, "u1", up, ttl="30s")
    assert redis.query("HDEL", f"{PREFIX}:instances", "u1") == 1
    assert instance_ids(a) == ["u1"]
    assert redis.query("PUBLISH", f"{PREFIX}:events", "0000000000000000 *") >= 1
    assert wait_until(lambda: instance_ids(a) == [], 2.0)
    # malformed messages are counted, not fatal
    redis.query("PUBLISH", f"{PREFIX}:events", "garbage")
    assert wait_until(lambda: backend(a)["messages_dropped"] >= 1, 2.0)
    assert a.alive()


def test_password_auth(mg, tmp_path, upstream_factory):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server not installed")
    r = Redis(tmp_path, extra_args=["--requirepass", "s3cret"])
    r.start()
    try:
        up = upstream_factory(name="u1")
        a = gw(mg, r, url=f"redis://:s3cret@127.0.0.1:{r.port}/2", name="a")
        b = gw(mg, r, url=f"redis://:s3cret@127.0.0.1:{r.port}/2", name="b")
        register(a, "u1", up, ttl="30s")
        beat(a, "u1")
        assert both(lambda m: status(m) == 200, a, b, 1.0)
        # a wrong password: the gateway runs, says why, refuses writes
        c = gw(mg, r, url=f"redis://:wrong@127.0.0.1:{r.port}/2", name="c")
        assert c.wait_stderr("AUTH refused", 5.0), c.stderr_tail()
        resp = put(c, "/v1/agent/service/register", registration("u9", up))
        assert resp.status == 503, resp
    finally:
        r.stop()


def run_check(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return subprocess.run([MESHGATE, "check", "-c", str(p)], capture_output=True, text=True, timeout=10)


def test_config_errors(tmp_path):
    base = "listen: 127.0.0.1:1\nadmin: off\n"
    r = run_check(tmp_path, base + "discovery:\n  backend: redsi\n  url: redis://127.0.0.1:1\n")
    assert r.returncode == 1 and "c.yaml:4:12:" in r.stderr and "did you mean redis?" in r.stderr, r.stderr
    r = run_check(tmp_path, base + "discovery:\n  backend: redis\n  url: http://x:1\n")
    assert r.returncode == 1 and "c.yaml:5:8:" in r.stderr and "redis://" in r.stderr, r.stderr
    r = run_check(tmp_path, base + "discovery:\n  backend: redis\n  url: redis://h:99999\n")
    assert r.returncode == 1 and "bad port" in r.stderr, r.stderr
    r = run_check(tmp_path, base + "discovery:\n  backend: redis\n")
    assert r.returncode == 1 and "c.yaml:4:12:" in r.stderr and "needs discovery.url" in r.stderr, r.stderr
    # the top-level redis: block is the default url
    r = run_check(tmp_path, base + "redis: redis://127.0.0.1:7\ndiscovery:\n  backend: redis\n")
    assert r.returncode == 0, r.stderr
    r = run_check(tmp_path, base + "discovery:\n  backend: embedded\n")
    assert r.returncode == 0, r.stderr
    p = tmp_path / "c.yaml"
    p.write_text(base + "discovery:\n  backend: redis\n  url: redis://:pw@[::1]:7000/3\n  prefix: x:y\n")
    out = subprocess.run([MESHGATE, "config", "print", "-c", str(p)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "redis://:pw@[::1]:7000/3" in out.stdout and "prefix: \"x:y\"" in out.stdout, out


@pytest.mark.slow
def test_deregister_critical_after_across_gateways(mg, redis, upstream_factory):
    """DeregisterCriticalServiceAfter (Consul's floor: 1 min) reaps once:
    whichever gateway reaps first deletes the keys, the other applies it."""
    up = upstream_factory(name="u1")
    a, b = gw(mg, redis, name="a"), gw(mg, redis, name="b")
    register(a, "u1", up, ttl="1s")  # registration(): DeregisterCriticalServiceAfter 1m
    beat(a, "u1")
    assert both(lambda m: status(m) == 200, a, b, 1.0)
    assert both(lambda m: check_status(m, "u1") == "critical", a, b, 4.0)
    assert both(lambda m: instance_ids(m) == [], a, b, 75.0)
    assert redis.query("HGET", f"{PREFIX}:instances", "u1") is None
    assert redis.query("HGET", f"{PREFIX}:checks", "service:u1") is None
    reaped = stats(a)["registry"]["reaped"] + stats(b)["registry"]["reaped"]
    assert reaped >= 1
    for m in (a, b):
        assert m.alive()
