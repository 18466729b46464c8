"""A real Consul client library against meshgate's registry: Debian's
python3-consul (installed by scripts/deps.sh), used the way a service uses
it: register with a TTL check, heartbeat, look itself up (blocking query),
and deregister; traffic follows through the gateway."""
import threading
import time

import consul

from conftest import http_request, wait_until


def gw(mg, tmp_path, **disco):
    return mg(routes=[{"id": "u", "path": "/api/**", "to": "user-service"}], clusters={},
              discovery=dict({"data_dir": str(tmp_path / "data")}, **disco))


def test_python_consul_token(mg, tmp_path):
    m = gw(mg, tmp_path, token="s3cret")
    anon = consul.Consul(host="127.0.0.1", port=m.admin_port)
    try:
        anon.agent.service.register("user-service", service_id="x", port=1)
        raise AssertionError("a registration without the token was accepted")
    except consul.ACLPermissionDenied:
        pass
    c = consul.Consul(host="127.0.0.1", port=m.admin_port, token="s3cret")  # sent as ?token=
    assert c.agent.service.register("user-service", service_id="x", address="127.0.0.1", port=1)
    assert "x" in c.agent.services()


def test_python_consul_lifecycle(mg, upstream_factory, tmp_path):
    up = upstream_factory(name="users-1")
    m = gw(mg, tmp_path)
    c = consul.Consul(host="127.0.0.1", port=m.admin_port)
    assert c.agent.service.register("user-service", service_id="users-1", address="127.0.0.1", port=up.port,
                                    tags=["v1", "zone=a"], check=consul.Check.ttl("10s"))
    idx, nodes = c.health.service("user-service", passing=True)
    assert nodes == []  # the TTL check starts critical, as in Consul
    # a blocking query parked before the heartbeat wakes with the change
    woke = {}

    def watch():
        woke["r"] = c.health.service("user-service", index=idx, wait="10s", passing=True)
    th = threading.Thread(target=watch)
    th.start()
    time.sleep(0.2)
    # python3-consul 0.7 heartbeats with GET (Consul before 1.0 took it)
    assert c.agent.check.ttl_pass("service:users-1", notes="all good")
    th.join(5)
    new_idx, nodes = woke["r"]
    assert int(new_idx) > int(idx) and [n["Service"]["ID"] for n in nodes] == ["users-1"]
    assert nodes[0]["Checks"][-1]["Output"] == "all good"
    assert wait_until(lambda: http_request(m.port, "GET", "/api/x").status == 200, timeout=1.0)
    assert c.catalog.services()[1] == {"user-service": ["v1", "zone=a"]}
    assert "users-1" in c.agent.services()
    assert c.agent.self()["Config"]["Datacenter"] == "dc1"
    # failing heartbeat: out of traffic
    assert c.agent.check.ttl_fail("service:users-1", notes="db down")
    assert wait_until(lambda: http_request(m.port, "GET", "/api/x").status == 503, timeout=1.0)
    assert c.agent.check.ttl_pass("service:users-1")
    assert wait_until(lambda: http_request(m.port, "GET", "/api/x").status == 200, timeout=1.0)
    assert c.agent.service.deregister("users-1")
    assert c.health.service("user-service")[1] == []
    assert wait_until(lambda: http_request(m.port, "GET", "/api/x").status == 503, timeout=1.0)
