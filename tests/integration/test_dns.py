"""DNS as a discovery source, end to end through the real binary.

A fake DNS server (fakedns.py: UDP + TCP on a free 127.0.0.1 port, answers
from a mutable table) is meshgate's only resolver. Upstreams listen on
127.0.0.1 and 127.0.0.2 with the same port (Linux routes 127/8 to lo), so
an A record set of two addresses is two endpoints.
"""
import http.server
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import MESHGATE, admin_get, http_request, wait_until
from fakedns import FakeDNS


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.open += 1

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.open -= 1

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.hits += 1
        if "slow" in self.path:
            time.sleep(1.5)
        body = srv.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class NamedUpstream:
    """An HTTP/1.1 upstream on host:port answering its name."""

    def __init__(self, host, port=0, name=None):
        cls = _Server6 if ":" in host else http.server.ThreadingHTTPServer
        self.srv = cls((host, port), _Handler)
        self.srv.daemon_threads = True
        self.srv.lock = threading.Lock()
        self.srv.hits = 0
        self.srv.open = 0  # open client connections
        self.host = host
        self.port = self.srv.server_address[1]
        self.name = self.srv.name = name or (f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}")
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def hits(self):
        with self.srv.lock:
            return self.srv.hits

    @property
    def open_conns(self):
        with self.srv.lock:
            return self.srv.open

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def dns():
    d = FakeDNS()
    yield d
    d.close()


@pytest.fixture
def ups():
    made = []

    def make(host="127.0.0.1", port=0, name=None):
        u = NamedUpstream(host, port, name)
        made.append(u)
        return u

    def pair():
        """Two upstreams on 127.0.0.1 and 127.0.0.2 with the same port."""
        for _ in range(20):
            a = make("127.0.0.1")
            try:
                b = make("127.0.0.2", a.port)
                return a, b
            except OSError:
                continue
        pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")
    make.pair = pair
    yield make
    for u in made:
        u.close()


def dns_discovery(dns, tmp_path, **kw):
    d = {"registry": kw.pop("registry", False),
         "dns": {"resolvers": [dns.addr], "timeout": "200ms", "attempts": 2, "min_refresh": "200ms",
                 "max_refresh": "30s", "hosts_file": kw.pop("hosts_file", "off")}}
    d["dns"].update(kw)
    if d["registry"]:
        d["data_dir"] = str(tmp_path / "data")
    return d


def start(mg, dns, tmp_path, clusters, routes=None, discovery=None, **top):
    routes = routes or [{"id": n, "path": f"/{n}/**", "to": n} for n in clusters]
    return mg(routes=routes, clusters=clusters, discovery=discovery or dns_discovery(dns, tmp_path), **top)


def get(m, path):
    return http_request(m.port, "GET", path, headers=[("Connection", "close")])


def bodies(m, path, n):
    out = []
    for _ in range(n):
        r = get(m, path)
        out.append(r.body.decode() if r.status == 200 else r.status)
    return out


def cluster_view(m, name):
    st, data, r = admin_get(m.admin_port, "/clusters")
    assert st == 200, r
    return [c for c in data["clusters"] if c["name"] == name][0]


def dns_view(m):
    st, data, r = admin_get(m.admin_port, "/dns")
    assert st == 200, r
    return data


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------

def test_a_records_both_addresses_get_traffic(mg, dns, ups, tmp_path):
    a, b = ups.pair()
    dns.set("api.test", A=["127.0.0.1", "127.0.0.2"], ttl=30)
    m = start(mg, dns, tmp_path, {"api": {"dns": [{"name": "api.test", "port": a.port}]}})
    # resolved before serving: the very first request already has endpoints
    got = bodies(m, "/api/x", 10)
    assert set(got) == {a.name, b.name}, got
    c = cluster_view(m, "api")
    assert sorted(e["address"] for e in c["endpoints"]) == [a.name, b.name]
    for e in c["endpoints"]:
        assert e["source"] == "dns" and e["labels"] == {"dns": "api.test"}, e
    st, stats, _ = admin_get(m.admin_port, "/stats")
    assert stats["dns"]["names"] == 1 and stats["dns"]["answers"] >= 2 and stats["dns"]["queries"] >= 2
    # A and AAAA are both asked (family any); AAAA is NODATA here
    assert dns.count("api.test", "A") >= 1 and dns.count("api.test", "AAAA") >= 1
    assert stats["dns"]["nodata"] >= 1


def test_answer_change_followed_within_ttl(mg, dns, ups, tmp_path):
    a, b = ups.pair()
    dns.set("api.test", A=["127.0.0.1"], ttl=1)
    m = start(mg, dns, tmp_path, {"api": {"dns": [{"name": "api.test", "port": a.port, "family": "v4"}]}})
    assert set(bodies(m, "/api/x", 4)) == {a.name}
    dns.set("api.test", A=["127.0.0.2"], ttl=1)
    # TTL 1 s + 1 s for the rebuild to reach the workers (+1 s slack for a loaded machine)
    assert wait_until(lambda: set(bodies(m, "/api/x", 3)) == {b.name}, timeout=3.0), m.stderr_tail()
    assert dns_view(m)["stats"]["changes"] >= 2
    assert [e["address"] for e in cluster_view(m, "api")["endpoints"]] == [b.name]


def test_change_keeps_inflight_and_closes_idle_pooled(mg, dns, ups, tmp_path):
    a, b = ups.pair()
    dns.set("api.test", A=["127.0.0.1"], ttl=1)
    m = start(mg, dns, tmp_path, {"api": {"dns": [{"name": "api.test", "port": a.port, "family": "v4"}]}},
              workers=1)
    assert set(bodies(m, "/api/x", 3)) == {a.name}
    assert a.open_conns >= 1  # a pooled keep-alive connection to a
    dns.set("api.test", A=["127.0.0.2"], ttl=1)
    addrs = lambda: [e["address"] for e in cluster_view(m, "api")["endpoints"]]
    assert wait_until(lambda: addrs() == [b.name], timeout=3.0), m.stderr_tail()
    # the idle pooled connection to the removed address is closed at the swap
    assert wait_until(lambda: a.open_conns == 0, timeout=3.0), a.open_conns
    assert set(bodies(m, "/api/x", 2)) == {b.name}
    # a request in flight when its endpoint goes away finishes normally
    slow = {}
    t = threading.Thread(target=lambda: slow.setdefault("r", get(m, "/api/slow")))
    hits = b.hits
    t.start()
    assert wait_until(lambda: b.hits > hits, timeout=3.0)
    dns.set("api.test", A=["127.0.0.1"], ttl=1)
    assert wait_until(lambda: set(bodies(m, "/api/x", 2)) == {a.name}, timeout=3.0), m.stderr_tail()
    t.join(10)
    assert slow["r"].status == 200 and slow["r"].body.decode() == b.name
    # ... and its connection, released after the swap, is closed, not pooled
    assert wait_until(lambda: b.open_conns == 0, timeout=3.0), b.open_conns


def test_srv_targets_and_ports(mg, dns, ups, tmp_path):
    u1 = ups("127.0.0.1")
    u2 = ups("127.0.0.2")
    dns.set("h1.test", A=["127.0.0.1"])
    dns.set("h2.test", A=["127.0.0.2"])
    # with glue (additional section) ...
    dns.set("_http._tcp.glue.test", SRV=[(10, 1, u1.port, "h1.test"), (10, 1, u2.port, "h2.test"),
                                         (20, 1, 9, "backup.test")], glue=True)
    # ... and without: the targets are asked for their A/AAAA records
    dns.set("_http._tcp.noglue.test", SRV=[(10, 1, u1.port, "h1.test"), (10, 1, u2.port, "h2.test")])
    m = start(mg, dns, tmp_path, {"glue": {"dns": [{"srv": "_http._tcp.glue.test"}]},
                                  "noglue": {"dns": {"srv": "_http._tcp.noglue.test", "family": "v4"}}})
    for name in ("glue", "noglue"):
        assert set(bodies(m, f"/{name}/x", 8)) == {u1.name, u2.name}, name
        eps = cluster_view(m, name)["endpoints"]
        assert sorted(e["address"] for e in eps) == sorted([u1.name, u2.name])
        targets = {e["address"]: e["labels"]["srv_target"] for e in eps}
        assert targets == {u1.name: "h1.test", u2.name: "h2.test"}
        assert all(e["source"] == "dns" and e["labels"]["srv"] == f"_http._tcp.{name}.test" for e in eps)
    # the lower priority (20) record is a backup and is not used
    assert dns.count("backup.test") == 0
    assert dns.count("h1.test", "A") >= 1  # asked for the no-glue SRV only


def test_nxdomain_is_503_naming_the_service(mg, dns, ups, tmp_path):
    a = ups("127.0.0.1")
    m = start(mg, dns, tmp_path, {"svc": {"dns": [{"name": "svc.test", "port": a.port}]}})
    r = get(m, "/svc/x")
    assert r.status == 503, r
    assert "svc" in r.json()["error"] and r.json()["status"] == 503
    assert dns_view(m)["stats"]["nxdomain"] >= 1
    # the name appears: traffic starts (negative TTL 1 s from the SOA)
    dns.set("svc.test", A=["127.0.0.1"], ttl=1)
    assert wait_until(lambda: get(m, "/svc/x").status == 200, timeout=5.0), m.stderr_tail()
    # ... and an authoritative NXDOMAIN empties the set again
    dns.remove("svc.test")
    assert wait_until(lambda: get(m, "/svc/x").status == 503, timeout=5.0), m.stderr_tail()
    e = dns_view(m)["entries"][0]
    assert e["addresses"] == [] and e["resolved"] is True and e["stale"] is False


def test_silent_or_failing_dns_keeps_last_addresses(mg, dns, ups, tmp_path):
    a, b = ups.pair()
    dns.set("api.test", A=["127.0.0.1", "127.0.0.2"], ttl=1)
    m = start(mg, dns, tmp_path, {"api": {"dns": [{"name": "api.test", "port": a.port, "family": "v4"}]}})
    assert set(bodies(m, "/api/x", 6)) == {a.name, b.name}
    dns.silent = True
    assert wait_until(lambda: dns_view(m)["stats"]["timeouts"] >= 2 and dns_view(m)["entries"][0]["stale"],
                      timeout=8.0), m.stderr_tail()
    assert set(bodies(m, "/api/x", 6)) == {a.name, b.name}  # stale, still served
    e = dns_view(m)["entries"][0]
    assert e["last_result"] == "timeout" and len(e["addresses"]) == 2 and e["consecutive_failures"] >= 1
    st, stats, _ = admin_get(m.admin_port, "/stats")
    assert stats["dns"]["failures"] >= 1 and stats["dns"]["stale"] == 1
    # SERVFAIL is a failure too, not an empty answer
    dns.silent = False
    dns.set("api.test", rcode=2)
    assert wait_until(lambda: dns_view(m)["stats"]["servfail"] >= 1, timeout=8.0), m.stderr_tail()
    assert set(bodies(m, "/api/x", 6)) == {a.name, b.name}
    # recovery: a good answer clears the stale flag and applies
    dns.set("api.test", A=["127.0.0.2"], ttl=1)
    assert wait_until(lambda: set(bodies(m, "/api/x", 3)) == {b.name}, timeout=10.0), m.stderr_tail()
    assert wait_until(lambda: not dns_view(m)["entries"][0]["stale"], timeout=5.0)


def test_truncated_answer_is_asked_again_over_tcp(mg, dns, ups, tmp_path):
    a, b = ups.pair()
    dns.set("big.test", A=["127.0.0.1", "127.0.0.2"], ttl=30, truncate=True)
    m = start(mg, dns, tmp_path, {"big": {"dns": [{"name": "big.test", "port": a.port, "family": "v4"}]}})
    assert set(bodies(m, "/big/x", 6)) == {a.name, b.name}
    with dns.lock:
        transports = {t for n, q, t in dns.queries if n == "big.test"}
    assert transports == {"udp", "tcp"}
    assert dns_view(m)["stats"]["truncated"] >= 1


def test_aaaa_records(mg, dns, ups, tmp_path):
    try:
        u = ups("::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    dns.set("v6.test", A=["127.0.0.9"], AAAA=["::1"], ttl=30)
    m = start(mg, dns, tmp_path, {"v6": {"dns": [{"name": "v6.test", "port": u.port, "family": "v6"}]}})
    assert bodies(m, "/v6/x", 2) == [u.name, u.name]
    assert [e["address"] for e in cluster_view(m, "v6")["endpoints"]] == [f"[::1]:{u.port}"]
    assert dns.count("v6.test", "A") == 0  # family v6 asks AAAA only


def test_wrong_id_answers_are_ignored(mg, dns, ups, tmp_path):
    a = ups("127.0.0.1")
    dns.set("spoofed.test", A=["127.0.0.1"], ttl=30, spoof=True)
    m = start(mg, dns, tmp_path, {"sp": {"dns": [{"name": "spoofed.test", "port": a.port, "family": "v4"}]}})
    assert bodies(m, "/sp/x", 2) == [a.name, a.name]
    st = dns_view(m)["stats"]
    assert st["mismatched"] >= 1 and st["answers"] >= 1 and st["malformed"] == 0


def test_cname_chain_is_followed(mg, dns, ups, tmp_path):
    a = ups("127.0.0.1")
    dns.set("alias.test", CNAME="real.test", ttl=30)
    dns.set("real.test", A=["127.0.0.1"], ttl=30)
    m = start(mg, dns, tmp_path, {"al": {"dns": [{"name": "alias.test", "port": a.port, "family": "v4"}]}})
    assert bodies(m, "/al/x", 2) == [a.name, a.name]


def test_static_dns_and_registry_combined(mg, dns, ups, tmp_path):
    s = ups("127.0.0.1", name="static")
    d = ups("127.0.0.2", name="dns")
    r = ups("127.0.0.1", name="registry")
    dns.set("mix.test", A=["127.0.0.2"], ttl=30)
    clusters = {"mix": {"endpoints": [{"address": f"127.0.0.1:{s.port}",
                                       "labels": {"version": "v1"}}],
                        "dns": [{"name": "mix.test", "port": d.port, "family": "v4"}]}}
    m = start(mg, dns, tmp_path, clusters, discovery=dns_discovery(dns, tmp_path, registry=True))
    reg = {"ID": "mix-1", "Name": "mix", "Address": "127.0.0.1", "Port": r.port, "Tags": ["zone=a"],
           "Meta": {"version": "v2"}}
    resp = http_request(m.admin_port, "PUT", "/v1/agent/service/register", body=json.dumps(reg).encode(),
                        headers=[("Connection", "close"), ("Content-Type", "application/json")], host="admin")
    assert resp.status == 200, resp
    assert wait_until(lambda: len(cluster_view(m, "mix")["endpoints"]) == 3, timeout=3.0), m.stderr_tail()
    assert set(bodies(m, "/mix/x", 9)) == {"static", "dns", "registry"}
    eps = {e["source"]: e for e in cluster_view(m, "mix")["endpoints"]}
    assert eps["static"]["labels"] == {"version": "v1"} and eps["static"]["address"] == f"127.0.0.1:{s.port}"
    assert eps["dns"]["labels"] == {"dns": "mix.test"} and eps["dns"]["address"] == f"127.0.0.2:{d.port}"
    assert eps["registry"]["labels"] == {"version": "v2", "zone": "a"}
    assert eps["registry"]["instance_id"] == "mix-1" and eps["registry"]["check_status"] == "passing"
    # GET /registry lists the DNS sets too
    st, data, _ = admin_get(m.admin_port, "/registry")
    assert st == 200 and data["dns"][0]["cluster"] == "mix"
    assert data["dns"][0]["addresses"][0]["address"] == f"127.0.0.2:{d.port}"


def test_hosts_file_names_resolve_without_dns(mg, dns, ups, tmp_path):
    a, b = ups.pair()
    hosts = tmp_path / "hosts"
    hosts.write_text("# test hosts\n127.0.0.2   local-api.test  other\n::1 ip6-only.test\n")
    m = start(mg, dns, tmp_path, {"loc": {"dns": [{"name": "Local-API.test", "port": a.port}]}},
              discovery=dns_discovery(dns, tmp_path, hosts_file=str(hosts)))
    assert set(bodies(m, "/loc/x", 3)) == {b.name}
    assert dns.count("local-api.test") == 0
    e = dns_view(m)["entries"][0]
    assert e["from_hosts"] is True and e["last_result"] == "hosts file"
    assert 0 < e["next_refresh_ms"] <= 30000


def test_reload_starts_and_stops_entries(mg, dns, ups, tmp_path):
    a, b = ups.pair()
    dns.set("two.test", A=["127.0.0.2"], ttl=30)
    m = start(mg, dns, tmp_path, {"c": {"endpoints": [f"127.0.0.1:{a.port}"]}})
    assert set(bodies(m, "/c/x", 4)) == {a.name}
    cfg = dict(m.config)
    cfg["clusters"] = {"c": {"endpoints": [f"127.0.0.1:{a.port}"],
                             "dns": [{"name": "two.test", "port": b.port, "family": "v4"}]}}
    m.reload(cfg)
    assert wait_until(lambda: set(bodies(m, "/c/x", 6)) == {a.name, b.name}, timeout=5.0), m.stderr_tail()
    # a bad reload keeps the running config (and its DNS entries)
    mark = m.stderr_mark()
    bad = dict(cfg)
    bad["clusters"] = {"c": {"dns": [{"name": "two.test"}]}}
    m.reload(bad)
    assert m.wait_stderr("reload refused", timeout=5.0, start=mark), m.stderr_tail()
    assert set(bodies(m, "/c/x", 6)) == {a.name, b.name}
    # removing the entry removes its addresses
    m.reload({**cfg, "clusters": {"c": {"endpoints": [f"127.0.0.1:{a.port}"]}}})
    assert wait_until(lambda: set(bodies(m, "/c/x", 4)) == {a.name}, timeout=5.0), m.stderr_tail()
    assert wait_until(lambda: dns_view(m)["entries"] == [], timeout=5.0)


def test_check_reports_bad_dns_config(tmp_path):
    good = ("listen: 127.0.0.1:18080\nadmin: off\ndiscovery:\n  dns: {resolvers: [127.0.0.1]}\n"
            "clusters:\n  api:\n    dns:\n      - {name: api.example, port: 80}\nroutes:\n"
            "  - {id: a, path: /a/**, to: api}\n")
    p = tmp_path / "good.yaml"
    p.write_text(good)
    res = subprocess.run([MESHGATE, "check", "-c", str(p)], capture_output=True, timeout=20)
    assert res.returncode == 0, res.stderr
    bad = good.replace("{name: api.example, port: 80}", "{name: api.example, prot: 80}")
    p = tmp_path / "bad.yaml"
    p.write_text(bad)
    res = subprocess.run([MESHGATE, "check", "-c", str(p)], capture_output=True, timeout=20)
    assert res.returncode == 1
    err = res.stderr.decode()
    assert err.startswith(f"{p}:8:29: unknown key 'prot' in dns entry"), err
    bad = good.replace("[127.0.0.1]", "[resolver.example]")
    p.write_text(bad)
    res = subprocess.run([MESHGATE, "check", "-c", str(p)], capture_output=True, timeout=20)
    assert res.returncode == 1
    assert res.stderr.decode().startswith(f"{p}:4:21: resolvers: 'resolver.example' is not an IP address"), res.stderr
