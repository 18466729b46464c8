"""The embedded service registry, end to end through the real binary.

meshgate serves a Consul-compatible API on the admin listener (/v1/...);
a route `to: NAME` naming no configured cluster is fed by the passing
instances of the registry service NAME. Clients register like a Consul
client: PUT /v1/agent/service/register with a TTL check, then heartbeat
with PUT /v1/agent/check/pass/service:<id>.
"""
import json
import threading
import time

from conftest import Client, KeepAliveLoad, admin_get, http_request, wait_until


def admin_call(m, method, path, body=None, headers=None, timeout=10.0):
    hdrs = [("Connection", "close")] + list(headers or [])
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.append(("Content-Type", "application/json"))
    return http_request(m.admin_port, method, path, headers=hdrs, body=data, host="admin", timeout=timeout)


def registration(sid, upstream, name="user-service", ttl="2s"):
    return {"ID": sid, "Name": name, "Address": "127.0.0.1", "Port": upstream.port,
            "Tags": ["v1", "zone=a"], "Meta": {"version": "1.2"},
            "Check": {"TTL": ttl, "DeregisterCriticalServiceAfter": "1m"}}


def register(m, sid, upstream, **kw):
    r = admin_call(m, "PUT", "/v1/agent/service/register", registration(sid, upstream, **kw))
    assert r.status == 200, r
    return r


def heartbeat(m, sid, status="pass"):
    r = admin_call(m, "PUT", f"/v1/agent/check/{status}/service:{sid}")
    assert r.status == 200, r
    return r


def gw(mg, tmp_path, **top):
    return mg(routes=[{"id": "u", "path": "/api/**", "to": "user-service"}], clusters={},
              discovery=top.pop("discovery", {"data_dir": str(tmp_path / "data")}), **top)


def api_status(m):
    return http_request(m.port, "GET", "/api/x").status


def test_no_instance_is_503_naming_the_service(mg, tmp_path):
    m = gw(mg, tmp_path)
    r = http_request(m.port, "GET", "/api/x")
    assert r.status == 503, r
    assert "user-service" in r.json()["error"]
    assert r.json()["status"] == 503


def test_register_pass_traffic_flows(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up)
    # the check starts critical (Consul's default): no traffic yet
    assert api_status(m) == 503
    t0 = time.monotonic()
    heartbeat(m, "user-1")
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0), m.stderr_tail()
    assert time.monotonic() - t0 < 1.5
    assert up.requests and up.requests[-1].path == "/api/x"
    # visibility: /registry, /stats, /clusters
    st, data, _ = admin_get(m.admin_port, "/registry")
    assert st == 200
    svc = [s for s in data["services"] if s["name"] == "user-service"][0]
    inst = svc["instances"][0]
    assert inst["id"] == "user-1" and inst["port"] == up.port and inst["address"] == "127.0.0.1"
    assert inst["status"] == "passing" and "zone=a" in inst["tags"] and inst["meta"] == {"version": "1.2"}
    assert inst["checks"][0]["status"] == "passing" and inst["checks"][0]["last_heartbeat_ms_ago"] >= 0
    # tags and meta become labels (Meta first, then the k=v tags)
    assert inst["source"] == "registry" and inst["labels"] == {"version": "1.2", "zone": "a"}
    st, data, _ = admin_get(m.admin_port, "/stats")
    assert st == 200 and data["registry"]["instances"] == 1
    st, data, _ = admin_get(m.admin_port, "/clusters")
    c = [c for c in data["clusters"] if c["name"] == "user-service"][0]
    assert [e["address"] for e in c["endpoints"]] == [up.addr]
    e = c["endpoints"][0]
    assert e["source"] == "registry" and e["instance_id"] == "user-1" and e["check_status"] == "passing"
    assert 0 <= e["last_heartbeat_ms_ago"] < 10000
    assert e["labels"] == {"version": "1.2", "zone": "a"}


def test_registry_view_lists_every_source(mg, upstream_factory, tmp_path):
    """GET /registry: the registry's instances, the static endpoints of the
    configured clusters (with their labels), side by side."""
    st_up, reg_up = upstream_factory(name="static-1"), upstream_factory(name="reg-1")
    m = mg(routes=[{"id": "u", "path": "/api/**", "to": "user-service"}],
           clusters={"user-service": {"endpoints": [st_up.addr]}},
           discovery={"data_dir": str(tmp_path / "data")},
           spring={"cloud": {"discovery": {"client": {"simple": {"instances": {"billing": [
               {"uri": f"http://{st_up.addr}", "metadata": {"version": "v1"}}]}}}}}})
    register(m, "reg-1", reg_up)
    heartbeat(m, "reg-1")
    st, data, _ = admin_get(m.admin_port, "/registry")
    assert st == 200
    static = {s["name"]: s["instances"] for s in data["static"]}
    assert [(i["address"], i["source"]) for i in static["user-service"]] == [(st_up.addr, "static")]
    assert static["billing"][0]["labels"] == {"version": "v1"}
    reg = [s for s in data["services"] if s["name"] == "user-service"][0]["instances"]
    assert [(i["id"], i["source"]) for i in reg] == [("reg-1", "registry")]
    # the cluster combines both sources (once the rebuild after the heartbeat ran)
    def sources():
        st, data, _ = admin_get(m.admin_port, "/clusters")
        c = [c for c in data["clusters"] if c["name"] == "user-service"][0]
        return sorted(e["source"] for e in c["endpoints"])
    assert wait_until(lambda: sources() == ["registry", "static"], timeout=1.0), sources()
    st, data, _ = admin_get(m.admin_port, "/stats")
    assert data["endpoints"] == {"static": 2, "dns": 0, "registry": 1}  # user-service 1+1, billing 1


def test_ttl_expiry_stops_traffic_then_deregister(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up, ttl="1s")
    heartbeat(m, "user-1")
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)
    t0 = time.monotonic()
    # no more heartbeats: TTL (1 s) + expiry tick + rebuild
    assert wait_until(lambda: api_status(m) == 503, timeout=3.0)
    assert time.monotonic() - t0 < 2.5
    r = http_request(m.port, "GET", "/api/x")
    assert "user-service" in r.json()["error"]
    heartbeat(m, "user-1")
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)
    r = admin_call(m, "PUT", "/v1/agent/service/deregister/user-1")
    assert r.status == 200, r
    assert wait_until(lambda: api_status(m) == 503, timeout=1.0)
    st, data, _ = admin_get(m.admin_port, "/stats")
    assert data["registry"]["instances"] == 0


def test_two_instances_share_traffic(mg, upstream_factory, tmp_path):
    a = upstream_factory(name="a")
    b = upstream_factory(name="b")
    m = gw(mg, tmp_path)
    for sid, u in (("a", a), ("b", b)):
        register(m, sid, u)
        heartbeat(m, sid)
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)
    time.sleep(0.3)
    for _ in range(10):
        assert api_status(m) == 200
    assert a.requests and b.requests


def test_health_service_and_blocking_query(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up)
    heartbeat(m, "user-1")
    r = admin_call(m, "GET", "/v1/health/service/user-service?passing")
    assert r.status == 200, r
    idx = int(r.header("X-Consul-Index"))
    assert idx > 0
    body = r.json()
    assert len(body) == 1 and body[0]["Service"]["ID"] == "user-1" and body[0]["Service"]["Port"] == up.port

    out = {}

    def blocking():
        t0 = time.monotonic()
        out["r"] = admin_call(m, "GET", f"/v1/health/service/user-service?passing&index={idx}&wait=5s")
        out["t"] = time.monotonic() - t0
    th = threading.Thread(target=blocking)
    th.start()
    time.sleep(0.5)
    assert "r" not in out  # parked
    heartbeat(m, "user-1", "fail")
    th.join(6)
    assert out["r"].status == 200, out["r"]
    assert out["t"] < 2.0, out["t"]
    assert int(out["r"].header("X-Consul-Index")) > idx
    assert out["r"].json() == []  # no passing instance now

    # a blocking query with no change answers at its wait time
    r2 = admin_call(m, "GET", "/v1/health/service/user-service?index=%s&wait=1s" % out["r"].header("X-Consul-Index"))
    assert r2.status == 200


def test_restart_keeps_registration(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up)
    heartbeat(m, "user-1")
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)
    cfg = m.config
    assert m.stop() == 0
    m2 = mg(cfg)
    st, data, _ = admin_get(m2.admin_port, "/registry")
    ids = [i["id"] for s in data["services"] for i in s["instances"]]
    assert ids == ["user-1"]
    # the TTL check resumes its saved (unexpired) state or restarts critical;
    # either way a heartbeat brings traffic back
    heartbeat(m2, "user-1")
    assert wait_until(lambda: api_status(m2) == 200, timeout=1.0), m2.stderr_tail()


def test_malformed_registration_is_400_and_registers_nothing(mg, tmp_path):
    m = gw(mg, tmp_path)
    bad = {"ID": "x1", "Name": "user-service", "Address": "127.0.0.1", "Port": "x"}
    r = admin_call(m, "PUT", "/v1/agent/service/register", bad)
    assert r.status == 400, r
    assert b"Port" in r.body
    r = admin_call(m, "GET", "/v1/agent/services")
    assert r.status == 200 and r.json() == {}
    st, data, _ = admin_get(m.admin_port, "/stats")
    assert data["registry"]["instances"] == 0


def test_token_required_for_writes(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path, discovery={"data_dir": str(tmp_path / "data"), "token": "s3cret"})
    r = admin_call(m, "PUT", "/v1/agent/service/register", registration("user-1", up))
    assert r.status == 403, r
    r = admin_call(m, "PUT", "/v1/agent/service/register", registration("user-1", up),
                   headers=[("X-Consul-Token", "wrong")])
    assert r.status == 403, r
    r = admin_call(m, "PUT", "/v1/agent/service/register", registration("user-1", up),
                   headers=[("X-Consul-Token", "s3cret")])
    assert r.status == 200, r
    r = admin_call(m, "PUT", "/v1/agent/check/pass/service:user-1")
    assert r.status == 403, r
    r = admin_call(m, "PUT", "/v1/agent/check/pass/service:user-1",
                   headers=[("Authorization", "Bearer s3cret")])
    assert r.status == 200, r
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)
    # reads stay open
    assert admin_call(m, "GET", "/v1/agent/services").status == 200


def test_chunked_registration_refused(mg, tmp_path):
    m = gw(mg, tmp_path)
    with Client(m.admin_port) as c:
        c.send(b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: admin\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 411


def test_large_registration_body(mg, upstream_factory, tmp_path):
    """A body larger than the 16 KiB head buffer is read whole."""
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    reg = registration("user-1", up)
    reg["Meta"] = {f"k{i}": "v" * 200 for i in range(60)}  # ~15 KiB of meta (Consul allows 64 keys)
    body = json.dumps(reg).encode()
    assert len(body) > 12000
    r = admin_call(m, "PUT", "/v1/agent/service/register", body)
    assert r.status in (200, 400), r  # meta value length limits may apply; it must be parsed, not truncated
    if r.status == 400:
        assert b"Meta" in r.body, r


def test_sighup_reload_keeps_registry_instances(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up)
    heartbeat(m, "user-1")
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)
    cfg = dict(m.config)
    cfg["routes"] = [{"id": "u", "path": "/api/**", "to": "user-service"},
                     {"id": "v", "path": "/v2/**", "to": "user-service"}]
    mark = m.stderr_mark()
    m.reload(cfg)
    assert m.wait_stderr("reloaded config", start=mark)
    assert http_request(m.port, "GET", "/v2/y").status == 200
    assert api_status(m) == 200


def test_unknown_destination_is_an_error_with_registry_off(mg, tmp_path):
    m = mg(routes=[{"id": "u", "path": "/api/**", "to": "user-service"}], clusters={},
           discovery={"registry": False}, start=False)
    m.start(wait=False)
    assert m.wait_exit(10) == 1
    assert "unknown cluster 'user-service'" in m.stderr_text()


def test_parked_query_client_gone_and_shutdown(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register(m, "user-1", up)
    r = admin_call(m, "GET", "/v1/catalog/services")
    idx = r.header("X-Consul-Index")
    path = f"/v1/health/service/user-service?index={idx}&wait=30s"
    # a client that gives up while parked
    c = Client(m.admin_port)
    c.send(f"GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
    time.sleep(0.2)
    c.close()
    heartbeat(m, "user-1")  # wakes the (now closed) parked query
    # one still parked at shutdown
    c2 = Client(m.admin_port)
    c2.send(f"GET /v1/health/service/user-service?index=999999&wait=30s HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
    r = c2.read_response()  # a different index answers at once
    assert r.status == 200
    c2.close()
    c3 = Client(m.admin_port)
    idx = admin_call(m, "GET", "/v1/health/service/user-service").header("X-Consul-Index")
    c3.send(f"GET /v1/health/service/user-service?index={idx}&wait=30s HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
    time.sleep(0.2)
    t0 = time.monotonic()
    assert m.stop() == 0
    assert time.monotonic() - t0 < 5
    assert c3.wait_closed(2)


# ---- HTTP/TCP checks run by meshgate, use404, deregistration under load ----

def health_box_handler(box):
    """Upstream whose /health answers box[0]; everything else echoes."""
    from conftest import echo_handler, send_response

    def handler(ctx, req):
        if req.path.startswith("/health"):
            send_response(ctx, box[0], [("X-Upstream", ctx.server.name)], b"hc\n")
            return True
        return echo_handler(ctx, req)
    return handler


def register_with_check(m, sid, upstream, check):
    body = {"ID": sid, "Name": "user-service", "Address": "127.0.0.1", "Port": upstream.port, "Check": check}
    r = admin_call(m, "PUT", "/v1/agent/service/register", body)
    assert r.status == 200, r
    return r


def check_status(m, check_id):
    r = admin_call(m, "GET", "/v1/agent/checks")
    assert r.status == 200, r
    return r.json().get(check_id, {}).get("Status")


def test_http_check_run_by_meshgate(mg, upstream_factory, tmp_path):
    box = [200]
    up = upstream_factory(health_box_handler(box), name="user-1")
    m = gw(mg, tmp_path)
    t0 = time.monotonic()
    register_with_check(m, "user-1", up, {"HTTP": f"http://127.0.0.1:{up.port}/health", "Interval": "1s",
                                          "Timeout": "500ms"})
    # no TTL pass: meshgate's checker runs the HTTP check
    assert wait_until(lambda: api_status(m) == 200, timeout=2.0), m.stderr_tail()
    assert time.monotonic() - t0 < 2.5
    assert any(r.path == "/health" and r.header("User-Agent") == "Consul Health Check" for r in up.requests)
    assert check_status(m, "service:user-1") == "passing"
    box[0] = 500
    assert wait_until(lambda: api_status(m) == 503, timeout=3.0), m.stderr_tail()
    assert check_status(m, "service:user-1") == "critical"
    box[0] = 429  # Consul: warning -> not passing, no traffic
    time.sleep(1.5)
    assert check_status(m, "service:user-1") == "warning"
    assert api_status(m) == 503
    box[0] = 200
    assert wait_until(lambda: api_status(m) == 200, timeout=3.0), m.stderr_tail()
    # deregistered: its checker stops
    assert admin_call(m, "PUT", "/v1/agent/service/deregister/user-1").status == 200
    time.sleep(0.3)
    n = len([r for r in up.requests if r.path == "/health"])
    time.sleep(1.5)
    assert len([r for r in up.requests if r.path == "/health"]) == n


def test_http_check_connection_refused_is_critical(mg, upstream_factory, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()  # nothing listens there
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register_with_check(m, "user-1", up, {"HTTP": f"http://127.0.0.1:{dead_port}/health", "Interval": "1s",
                                          "Status": "passing"})
    assert wait_until(lambda: check_status(m, "service:user-1") == "critical", timeout=2.0)
    assert wait_until(lambda: api_status(m) == 503, timeout=1.0)  # after the coalesced rebuild


def test_tcp_check_passing(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="user-1")
    m = gw(mg, tmp_path)
    register_with_check(m, "user-1", up, {"TCP": f"127.0.0.1:{up.port}", "Interval": "1s"})
    assert wait_until(lambda: check_status(m, "service:user-1") == "passing", timeout=2.0), m.stderr_tail()
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)


def test_http_check_restored_from_store_is_run(mg, upstream_factory, tmp_path):
    up = upstream_factory(health_box_handler([200]), name="user-1")
    m = gw(mg, tmp_path)
    register_with_check(m, "user-1", up, {"HTTP": f"http://localhost:{up.port}/health", "Interval": "1s"})
    assert wait_until(lambda: api_status(m) == 200, timeout=2.0)
    cfg = m.config
    assert m.stop() == 0
    m2 = mg(cfg)
    # restored critical, then the checker passes it again
    assert wait_until(lambda: api_status(m2) == 200, timeout=2.5), m2.stderr_tail()


def test_use404_no_instance(mg, tmp_path):
    m = gw(mg, tmp_path, discovery={"data_dir": str(tmp_path / "data"), "use404": True})
    r = http_request(m.port, "GET", "/api/x")
    assert r.status == 404, r
    assert "user-service" in r.json()["error"]


def test_spring_use404_config_print(mg, tmp_path):
    import subprocess
    from conftest import MESHGATE
    f = tmp_path / "application.yml"
    f.write_text("spring:\n  cloud:\n    gateway:\n      loadbalancer:\n        use404: true\n"
                 "      routes:\n        - id: u\n          uri: lb://user-service\n"
                 "          predicates:\n            - Path=/api/**\n")
    out = subprocess.run([MESHGATE, "config", "print", "-c", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "use404: true" in out.stdout


def test_deregister_under_load_zero_failures(mg, upstream_factory, tmp_path):
    a = upstream_factory(name="a")
    b = upstream_factory(name="b")
    m = gw(mg, tmp_path)
    for sid, u in (("a", a), ("b", b)):
        register(m, sid, u, ttl="30s")
        heartbeat(m, sid)
    assert wait_until(lambda: api_status(m) == 200, timeout=1.0)
    time.sleep(0.3)
    with KeepAliveLoad(m.port, "/api/x", 3.0) as load:
        time.sleep(1.0)
        assert admin_call(m, "PUT", "/v1/agent/service/deregister/a").status == 200
        time.sleep(0.5)
        n_a = len(a.requests)
    assert load.results and not load.failures(), load.failures()[:5]
    assert len(load.results) > 20
    assert len(a.requests) == n_a  # nothing new went to the removed instance
    assert b.requests
