"""Basic proxying: routing, keep-alive pools, pipelining, framing
re-serialization, HTTP/1.0, hop-by-hop headers, X-Forwarded-*, Expect,
413, access log, load balancing."""
import json
import os
import random
import time
import zlib

import pytest

from conftest import (Client, build_request, chunked_body, cluster, http_request,
                      json_lines, pattern_bytes, send_response, wait_until)


def seen(resp):
    """The echo upstream's description of the request it received."""
    assert resp.status == 200, resp
    return resp.json()


def hdrs(desc, name):
    return [v for n, v in desc["headers"] if n.lower() == name.lower()]


def assert_json_error(resp, status):
    assert resp.status == status, resp
    ct = resp.header("content-type", "")
    assert "json" in ct.lower(), f"error response Content-Type {ct!r}: {resp!r}"
    data = resp.json()
    assert isinstance(data.get("error"), str) and data["error"], data
    assert data.get("status") == status, data


# -- routing ---------------------------------------------------------------

def test_simple_get_proxied(gw):
    r = http_request(gw.port, "GET", "/api/hello?x=1&y=%20z")
    d = seen(r)
    assert d["method"] == "GET"
    assert d["target"] == "/api/hello?x=1&y=%20z"
    assert d["version"] == "HTTP/1.1"
    assert r.header("x-upstream") == "echo"
    assert len(hdrs(d, "host")) == 1


def test_no_route_is_404_json(gw):
    r = http_request(gw.port, "GET", "/not/routed")
    assert_json_error(r, 404)
    assert len(gw.echo.requests) == 0


def test_no_route_404_keeps_connection_usable(gw):
    with Client(gw.port) as c:
        r = c.request("GET", "/nope")
        assert r.status == 404
        r = c.request("GET", "/api/after-404")
        assert seen(r)["path"] == "/api/after-404"


def test_route_order_and_patterns(mg, upstream_factory):
    a = upstream_factory(name="A")
    b = upstream_factory(name="B")
    m = mg(routes=[
        {"id": "special", "path": "/api/special/{id}", "to": "b"},
        {"id": "txt", "path": "/files/*.txt", "to": "b"},
        {"id": "one", "path": "/x/?", "to": "b"},
        {"id": "api", "path": "/api/**", "to": "a"},
    ], clusters={"a": cluster(a), "b": cluster(b)})
    cases = {
        "/api/special/42": "B",
        "/api/special/42/more": "A",
        "/api/special": "A",
        "/api/other": "A",
        "/api": "A",
        "/files/readme.txt": "B",
        "/x/q": "B",
    }
    for path, who in cases.items():
        r = http_request(m.port, "GET", path)
        assert r.status == 200, (path, r)
        assert r.header("x-upstream") == who, (path, r.header("x-upstream"))
    for path in ["/files/readme.md", "/files/a/b.txt", "/x/qq", "/other"]:
        r = http_request(m.port, "GET", path)
        assert r.status == 404, (path, r)


def test_multiple_listen_addresses(mg, echo):
    from conftest import free_port
    p1, p2 = free_port(), free_port()
    cfg = mg.config(routes=[{"id": "api", "path": "/api/**", "to": "backend"}],
                    clusters={"backend": cluster(echo)})
    cfg["listen"] = [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]
    mg(cfg)
    for p in (p1, p2):
        r = http_request(p, "GET", "/api/multi")
        assert r.status == 200


# -- keep-alive pools --------------------------------------------------------

def test_keepalive_reuse_one_client_connection(mg, echo):
    m = mg.simple(echo, workers=1)
    with Client(m.port) as c:
        ids = []
        for i in range(10):
            r = c.request("GET", f"/api/ka/{i}")
            d = seen(r)
            assert d["path"] == f"/api/ka/{i}"
            ids.append(d["conn_id"])
        assert c.is_open(), "client connection closed after keep-alive responses"
    assert len(set(ids)) == 1, f"upstream saw several connections: {ids}"
    assert echo.conn_count == 1


def test_keepalive_reuse_across_client_connections(mg, echo):
    m = mg.simple(echo, workers=1)
    ids = []
    for i in range(10):
        with Client(m.port) as c:
            d = seen(c.request("GET", f"/api/conn/{i}", headers=[("Connection", "close")]))
            ids.append(d["conn_id"])
            assert c.wait_closed(5), "Connection: close not honoured"
    assert len(set(ids)) == 1, f"pool not reused across client connections: {ids}"


def test_pool_connections_bounded_by_workers(mg, echo):
    m = mg.simple(echo, workers=2)
    ids = []
    for i in range(20):
        with Client(m.port) as c:
            ids.append(seen(c.request("GET", f"/api/w/{i}"))["conn_id"])
    assert len(set(ids)) <= 2, f"sequential requests opened {len(set(ids))} upstream conns: {ids}"


def test_upstream_connection_close_not_reused(mg, echo):
    m = mg.simple(echo, workers=1)
    d1 = seen(http_request(m.port, "GET", "/api/c?close=1"))
    d2 = seen(http_request(m.port, "GET", "/api/c2"))
    assert d1["conn_id"] != d2["conn_id"]


@pytest.mark.parametrize("first", [
    "/api/a",                      # JSON, head and body in one write
    "/api/a?size=10",              # body written separately from the head
    "/api/a?size=100000",          # body spanning many reads
    "/api/a?close=1",              # upstream says Connection: close
    "/api/a?chunked=1",            # chunked response
    "/api/a?status=404",           # upstream error status
    "/api/a?delay_ms=200",         # slow response
], ids=["one_write", "separate_body_write", "large_body", "upstream_conn_close", "chunked",
        "status_404", "slow"])
def test_second_request_on_same_client_connection(mg, echo, first):
    """Whatever the previous response looked like, the next request on the
    same keep-alive client connection is proxied normally."""
    m = mg.simple(echo, workers=1)
    with Client(m.port) as c:
        r1 = c.request("GET", first)
        assert r1.status in (200, 404), r1
        for i in range(3):
            r2 = c.request("GET", f"/api/next{i}")
            assert r2.status == 200, f"after {first}: request #{i + 2} got {r2!r}"
            assert r2.json()["path"] == f"/api/next{i}"


def test_stale_pooled_connection_is_not_an_error(mg, upstream_factory):
    """An upstream closing an idle pooled connection must not make the next
    (idempotent) request fail."""
    def handler(ctx, req):
        send_response(ctx, 200, [("X-Conn", str(ctx.conn_id))], b"ok")
        time.sleep(0.2)
        return False  # close the idle keep-alive connection ourselves
    u = upstream_factory(handler)
    m = mg.simple(u, workers=1)
    for i in range(4):
        r = http_request(m.port, "GET", f"/api/stale/{i}")
        assert r.status == 200 and r.body == b"ok", (i, r)
        time.sleep(0.6)


# -- pipelining --------------------------------------------------------------

def test_pipelined_requests_answered_in_order(gw):
    with Client(gw.port) as c:
        c.send(b"".join(build_request("GET", f"/api/p{i}") for i in range(1, 4)))
        for i in range(1, 4):
            assert seen(c.read_response())["path"] == f"/api/p{i}"
        assert c.is_open()


def test_pipelined_slow_first_still_in_order(gw):
    with Client(gw.port) as c:
        c.send(build_request("GET", "/api/slow?delay_ms=700") + build_request("GET", "/api/fast")
               + build_request("GET", "/api/fast2"))
        assert seen(c.read_response())["path"] == "/api/slow"
        assert seen(c.read_response())["path"] == "/api/fast"
        assert seen(c.read_response())["path"] == "/api/fast2"


def test_pipelined_with_bodies(gw):
    b1 = b"x" * 1000
    b2 = os.urandom(5000)
    data = (build_request("POST", "/api/one", body=b1)
            + build_request("POST", "/api/two", headers=[("Transfer-Encoding", "chunked")])
            + chunked_body([b2[:3000], b2[3000:]])
            + build_request("GET", "/api/three"))
    with Client(gw.port) as c:
        c.send(data)
        d = seen(c.read_response())
        assert (d["path"], d["body_len"], d["body_crc32"]) == ("/api/one", 1000, zlib.crc32(b1))
        d = seen(c.read_response())
        assert (d["path"], d["body_len"], d["body_crc32"]) == ("/api/two", 5000, zlib.crc32(b2))
        d = seen(c.read_response())
        assert (d["path"], d["body_len"]) == ("/api/three", 0)


def test_pipelined_head_then_get(gw):
    with Client(gw.port) as c:
        c.send(build_request("HEAD", "/api/h") + build_request("GET", "/api/g"))
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.body == b""
        assert seen(c.read_response())["path"] == "/api/g"


# -- framing -------------------------------------------------------------------

def test_content_length_request_forwarded(gw):
    body = os.urandom(12345)
    d = seen(http_request(gw.port, "POST", "/api/cl", body=body))
    assert hdrs(d, "content-length") == ["12345"]
    assert hdrs(d, "transfer-encoding") == []
    assert d["body_len"] == 12345 and d["body_crc32"] == zlib.crc32(body)


def test_zero_length_post(gw):
    d = seen(http_request(gw.port, "POST", "/api/empty", body=b""))
    assert d["body_len"] == 0
    assert hdrs(d, "transfer-encoding") == []


def test_chunked_request_canonical_upstream(gw):
    """Extensions and trailers are dropped; framing stays chunked; one framing
    header only; Trailer header not forwarded."""
    head = build_request("POST", "/api/chunked", headers=[
        ("Transfer-Encoding", "chunked"), ("Trailer", "X-Trail")])
    body = (b"5;ext=1\r\nhello\r\n"
            b"6;a=\"quoted;\\\"v\";b\r\n world\r\n"
            b"0;last=yes\r\nX-Trail: should-not-pass\r\n\r\n")
    with Client(gw.port) as c:
        c.send(head + body)
        d = seen(c.read_response())
    assert hdrs(d, "transfer-encoding") == ["chunked"], d["headers"]
    assert hdrs(d, "content-length") == []
    assert hdrs(d, "trailer") == []
    assert d["chunked"] is True
    assert d["chunk_ext_seen"] is False, f"chunk extensions forwarded: {d['raw_body']!r}"
    assert d["trailers"] == [], f"trailers forwarded: {d['trailers']!r}"
    assert "should-not-pass" not in d["raw_body"]
    assert d["body_len"] == 11 and d["body_crc32"] == zlib.crc32(b"hello world")


def test_chunked_request_many_small_chunks(gw):
    rnd = random.Random(7)
    data = os.urandom(300_000)
    pieces, i = [], 0
    while i < len(data):
        k = rnd.randint(1, 9000)
        pieces.append(data[i:i + k])
        i += k
    with Client(gw.port) as c:
        c.send(build_request("PUT", "/api/many", headers=[("Transfer-Encoding", "chunked")]))
        body = chunked_body(pieces)
        for j in range(0, len(body), 7001):  # arbitrary write boundaries
            c.send(body[j:j + 7001])
        d = seen(c.read_response())
    assert d["body_len"] == len(data) and d["body_crc32"] == zlib.crc32(data)
    assert hdrs(d, "transfer-encoding") == ["chunked"]


def test_transfer_encoding_case_insensitive_chunked(gw):
    with Client(gw.port) as c:
        c.send(build_request("POST", "/api/tec", headers=[("Transfer-Encoding", "Chunked")])
               + chunked_body([b"abc"]))
        d = seen(c.read_response())
    assert d["body_len"] == 3
    assert [v.lower() for v in hdrs(d, "transfer-encoding")] == ["chunked"]


def test_identical_duplicate_content_length_merged(gw):
    with Client(gw.port) as c:
        c.send(b"POST /api/dupcl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Content-Length: 5\r\n\r\nhello")
        d = seen(c.read_response())
    assert hdrs(d, "content-length") == ["5"]
    assert d["body_len"] == 5


def test_chunked_response_to_http11_client(gw):
    with Client(gw.port) as c:
        r = c.request("GET", "/api/chunky?size=300000&chunked=1")
        assert r.status == 200
        assert r.body_len == 300000 and r.body == pattern_bytes(300000)
        r2 = c.request("GET", "/api/after")
        assert r2.status == 200


def test_eof_delimited_response_to_http11_client(mg, upstream_factory):
    payload = os.urandom(200_000)

    def handler(ctx, req):
        ctx.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + payload)
        return False  # close = end of body
    u = upstream_factory(handler)
    m = mg.simple(u)
    with Client(m.port) as c:
        c.send(build_request("GET", "/api/eof"))
        r = c.read_response(timeout=15)
        assert r.status == 200
        assert r.body == payload
        if r.close_delimited:
            assert c.eof
        else:
            assert r.chunked, "an EOF-delimited body must reach HTTP/1.1 clients chunked or close-delimited"
            assert c.request("GET", "/api/again").status == 200


def test_head_request_no_body(gw):
    with Client(gw.port) as c:
        r = c.request("HEAD", "/api/head")
        assert r.status == 200
        r2 = c.request("GET", "/api/head2")
        assert seen(r2)["path"] == "/api/head2"
        assert seen(r2)["method"] == "GET"


# -- HTTP/1.0 ------------------------------------------------------------------

def test_http10_closes_by_default(gw):
    with Client(gw.port) as c:
        c.send(b"GET /api/ten HTTP/1.0\r\n\r\n")
        r = c.read_response()
        d = seen(r)
        assert not r.chunked
        assert c.wait_closed(5), "HTTP/1.0 connection without keep-alive not closed"
    assert d["path"] == "/api/ten"
    assert len(hdrs(d, "host")) == 1, f"upstream request needs exactly one Host: {d['headers']}"


def test_http10_keep_alive(gw):
    with Client(gw.port) as c:
        c.send(b"GET /api/ten1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert seen(r)["path"] == "/api/ten1"
        assert "keep-alive" in r.header("connection", "").lower(), r
        c.send(b"GET /api/ten2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert seen(c.read_response())["path"] == "/api/ten2"


def test_http10_client_never_gets_chunked(gw):
    with Client(gw.port) as c:
        c.send(b"GET /api/ten?size=100000&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert not r.has_header("transfer-encoding"), r
        assert r.body == pattern_bytes(100000)


def test_http10_post_with_content_length(gw):
    with Client(gw.port) as c:
        c.send(b"POST /api/ten HTTP/1.0\r\nContent-Length: 4\r\n\r\nabcd")
        d = seen(c.read_response())
    assert d["body_len"] == 4


# -- headers -------------------------------------------------------------------

def test_hop_by_hop_request_headers_stripped(gw):
    d = seen(http_request(gw.port, "GET", "/api/hop", headers=[
        ("Connection", "keep-alive, X-Drop-Me, x-drop-too"),
        ("X-Drop-Me", "1"),
        ("X-Drop-Too", "2"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Foo"),
        ("X-Keep", "yes"),
        ("User-Agent", "itest/1"),
    ]))
    names = [n.lower() for n, _ in d["headers"]]
    for gone in ["x-drop-me", "x-drop-too", "keep-alive", "proxy-connection", "te", "trailer"]:
        assert gone not in names, f"{gone} forwarded upstream: {d['headers']}"
    for v in hdrs(d, "connection"):
        assert "x-drop" not in v.lower()
    assert hdrs(d, "x-keep") == ["yes"]
    assert hdrs(d, "user-agent") == ["itest/1"]


def test_end_to_end_headers_preserved_in_order(gw):
    d = seen(http_request(gw.port, "GET", "/api/e2e", headers=[
        ("X-Multi", "a"), ("Accept", "*/*"), ("X-Multi", "b"), ("X-Empty", "")]))
    assert hdrs(d, "x-multi") == ["a", "b"]
    assert hdrs(d, "x-empty") == [""]
    assert hdrs(d, "accept") == ["*/*"]


def test_x_forwarded_and_via_added(gw):
    d = seen(http_request(gw.port, "GET", "/api/xff", host="public.example:8443"))
    assert hdrs(d, "x-forwarded-for") == ["127.0.0.1"]
    assert hdrs(d, "x-forwarded-proto") == ["http"]
    assert hdrs(d, "x-forwarded-host") == ["public.example:8443"]
    via = ", ".join(hdrs(d, "via"))
    assert via.startswith("1.1 "), via


def test_x_forwarded_for_appended_and_via_chained(gw):
    d = seen(http_request(gw.port, "GET", "/api/xff2", headers=[
        ("X-Forwarded-For", "203.0.113.9"), ("Via", "1.0 edge")]))
    xff = ", ".join(hdrs(d, "x-forwarded-for"))
    assert [p.strip() for p in xff.split(",")] == ["203.0.113.9", "127.0.0.1"], xff
    via = [p.strip() for p in ", ".join(hdrs(d, "via")).split(",")]
    assert via[0] == "1.0 edge" and len(via) == 2 and via[1].startswith("1.1 "), via


def test_hop_by_hop_response_headers_stripped(mg, upstream_factory):
    def handler(ctx, req):
        send_response(ctx, 200, [("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"),
                                 ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "x"),
                                 ("X-Public", "p")], b"body")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    r = http_request(m.port, "GET", "/api/resp-hop")
    assert r.status == 200 and r.body == b"body"
    names = [n.lower() for n, _ in r.headers]
    assert "x-secret" not in names and "keep-alive" not in names and "proxy-connection" not in names, r.headers
    assert r.header("x-public") == "p"


# -- Expect / 413 -----------------------------------------------------------------

def test_expect_100_continue(gw):
    with Client(gw.port) as c:
        c.send(build_request("POST", "/api/expect", headers=[
            ("Expect", "100-continue"), ("Content-Length", "11")]))
        v, status, reason, h, raw = c.read_head(timeout=5)
        assert status == 100, raw
        c.send(b"hello world")
        r = c.read_response()
        d = seen(r)
    assert d["body_len"] == 11 and d["body_crc32"] == zlib.crc32(b"hello world")
    assert hdrs(d, "expect") == [], "Expect forwarded upstream"


def test_expect_100_continue_chunked(gw):
    with Client(gw.port) as c:
        c.send(build_request("POST", "/api/expect", headers=[
            ("Expect", "100-Continue"), ("Transfer-Encoding", "chunked")]))
        v, status, reason, h, raw = c.read_head(timeout=5)
        assert status == 100, raw
        c.send(chunked_body([b"abc", b"def"]))
        d = seen(c.read_response())
    assert d["body_len"] == 6


def test_413_from_content_length_before_body(mg, echo):
    m = mg.simple(echo, limits={"max_body": 1024})
    with Client(m.port) as c:
        c.send(build_request("POST", "/api/big", headers=[("Content-Length", "2048")]))
        r = c.read_response(timeout=5)  # body never sent: decided from CL alone
        assert_json_error(r, 413)
        assert c.wait_closed(5)
    assert echo.requests == []


def test_body_at_limit_accepted(mg, echo):
    m = mg.simple(echo, limits={"max_body": 1024})
    d = seen(http_request(m.port, "POST", "/api/exact", body=b"a" * 1024))
    assert d["body_len"] == 1024


def test_413_chunked_over_limit(mg, echo):
    m = mg.simple(echo, limits={"max_body": 1024})
    with Client(m.port) as c:
        c.send(build_request("POST", "/api/bigchunk", headers=[("Transfer-Encoding", "chunked")])
               + chunked_body([b"a" * 1000, b"b" * 1000]), ignore_errors=True)
        r = c.read_response(timeout=5)
        assert r.status == 413, r
        assert c.wait_closed(5)
    assert all(rq.body_len <= 1024 for rq in echo.requests)


def test_expect_100_not_sent_when_413(mg, echo):
    m = mg.simple(echo, limits={"max_body": 10})
    with Client(m.port) as c:
        c.send(build_request("POST", "/api/x", headers=[
            ("Expect", "100-continue"), ("Content-Length", "100")]))
        r = c.read_response(timeout=5, skip_interim=False)
        assert r.status == 413, r


def test_max_body_size_suffix(mg, echo):
    m = mg.simple(echo, limits={"max_body": "1m"})
    assert seen(http_request(m.port, "POST", "/api/m", body=b"z" * (1 << 20)))["body_len"] == 1 << 20
    with Client(m.port) as c:
        c.send(build_request("POST", "/api/m", headers=[("Content-Length", str((1 << 20) + 1))]))
        assert c.read_response(timeout=5).status == 413


# -- error bodies ------------------------------------------------------------------

def test_400_has_json_body(gw):
    with Client(gw.port) as c:
        c.send(b"GET /api/x HTTP/1.1\r\n\r\n")  # no Host
        assert_json_error(c.read_response(), 400)


# -- access log --------------------------------------------------------------------

LOG_FIELDS = ["time", "method", "path", "route", "upstream", "status", "bytes_in",
              "bytes_out", "duration_us"]


def test_access_log_file(mg, echo, tmp_path):
    path = str(tmp_path / "access.log")
    m = mg.simple(echo, access_log=path)
    http_request(m.port, "POST", "/api/logged?q=1", body=b"0123456789")
    http_request(m.port, "GET", "/unrouted")

    def entries():
        try:
            with open(path) as f:
                return json_lines(f.read())
        except OSError:
            return []
    got = wait_until(lambda: len(entries()) >= 2, 5)
    assert got, f"access log has {entries()!r}"
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    assert len(lines) == 2, lines
    e = [json.loads(l) for l in lines]
    for ent in e:
        for k in LOG_FIELDS:
            assert k in ent, f"field {k} missing in {ent}"
        assert isinstance(ent["duration_us"], int) and ent["duration_us"] >= 0
    # two connections may be served by different workers: order is not fixed
    a = next(x for x in e if x["path"].startswith("/api/logged"))
    b = next(x for x in e if x is not a)
    assert a["method"] == "POST" and a["path"].startswith("/api/logged")
    assert a["route"] == "api" and a["status"] == 200
    assert str(echo.port) in str(a["upstream"])
    assert a["bytes_in"] >= 10 and a["bytes_out"] > 0
    assert b["status"] == 404 and b["method"] == "GET" and b["path"] == "/unrouted"


def test_access_log_stderr(gw):
    mark = gw.stderr_mark()
    http_request(gw.port, "GET", "/api/to-stderr")
    assert gw.wait_stderr(r'"/api/to-stderr', 5, start=mark), gw.stderr_tail()
    ents = [e for e in json_lines(gw.stderr_text()) if e.get("path") == "/api/to-stderr"]
    assert len(ents) == 1
    for k in LOG_FIELDS:
        assert k in ents[0]


def test_access_log_off(mg, echo):
    m = mg.simple(echo, access_log="off")
    http_request(m.port, "GET", "/api/quiet")
    time.sleep(0.5)
    assert "/api/quiet" not in m.stderr_text()


# -- load balancing --------------------------------------------------------------

def test_round_robin_spreads(mg, upstream_factory):
    a = upstream_factory(name="A")
    b = upstream_factory(name="B")
    m = mg(routes=[{"id": "api", "path": "/api/**", "to": "c"}],
           clusters={"c": cluster(a, b, lb="round_robin")}, workers=1)
    who = [http_request(m.port, "GET", f"/api/rr{i}").header("x-upstream") for i in range(10)]
    assert who.count("A") == 5 and who.count("B") == 5, who


@pytest.mark.parametrize("lb", ["random", "least_request"])
def test_other_lb_policies_use_all_endpoints(mg, upstream_factory, lb):
    a = upstream_factory(name="A")
    b = upstream_factory(name="B")
    m = mg(routes=[{"id": "api", "path": "/api/**", "to": "c"}],
           clusters={"c": cluster(a, b, lb=lb)}, workers=1)
    who = []
    # concurrent requests so least_request has something to balance
    conns = [Client(m.port) for _ in range(4)]
    try:
        for rnd in range(10):
            for c in conns:
                c.send(build_request("GET", "/api/lb?delay_ms=20"))
            for c in conns:
                r = c.read_response()
                assert r.status == 200
                who.append(r.header("x-upstream"))
    finally:
        for c in conns:
            c.close()
    assert who.count("A") >= 1 and who.count("B") >= 1, who


def test_absolute_form_forwarded_as_origin_form(gw):
    with Client(gw.port) as c:
        c.send(b"GET http://public.example/api/abs?q=1 HTTP/1.1\r\nHost: public.example\r\n\r\n")
        d = seen(c.read_response())
    assert d["target"] == "/api/abs?q=1"
    assert hdrs(d, "host") == ["public.example"] or len(hdrs(d, "host")) == 1


def test_pool_max_idle_limits_idle_connections(mg, echo):
    m = mg(routes=[{"id": "api", "path": "/api/**", "to": "c"}],
           clusters={"c": cluster(echo, max_idle=1)}, workers=1)
    conns = [Client(m.port) for _ in range(3)]
    try:
        for c in conns:
            c.send(build_request("GET", "/api/conc?delay_ms=500"))
        for c in conns:
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()
    assert echo.conn_count == 3, "3 concurrent requests should use 3 upstream connections"
    # only max_idle (1) of them may stay pooled: the others are closed
    def closed_count():
        return sum(1 for ctx in list(echo.conns.values()) if ctx.closed.is_set())
    assert wait_until(lambda: closed_count() >= 2, 5), f"{closed_count()} upstream conns closed, expected 2"
    assert closed_count() == 2


def test_pool_idle_timeout_closes_upstream_connection(mg, echo):
    m = mg(routes=[{"id": "api", "path": "/api/**", "to": "c"}],
           clusters={"c": cluster(echo, idle_timeout="1s")}, workers=1)
    d = seen(http_request(m.port, "GET", "/api/idle"))
    ctx = echo.conns[d["conn_id"]]
    assert ctx.closed.wait(6), "pooled upstream connection outlived idle_timeout: 1s"
    assert seen(http_request(m.port, "GET", "/api/idle2"))["conn_id"] != d["conn_id"]


def test_request_reserialized_canonically(gw):
    with Client(gw.port) as c:
        c.send(b"POST /api/canon HTTP/1.1\r\nHost: t\r\nX-Ows:\t  spaced value \t\r\n"
               b"Content-Length: 5, 5\r\n\r\nhello")
        d = seen(c.read_response())
    raw = d["raw_head"]
    assert raw.startswith("POST /api/canon HTTP/1.1\r\n"), raw
    assert "\r\nX-Ows: spaced value\r\n" in raw, raw
    assert hdrs(d, "content-length") == ["5"], raw
    assert d["body_len"] == 5
    for line in raw.split("\r\n")[1:]:
        if line:
            n, v = line.split(":", 1)
            assert n == n.strip() and v.startswith(" ") and v == " " + v.strip(" \t"), repr(line)


def test_leading_zero_content_length(gw):
    with Client(gw.port) as c:
        c.send(b"POST /api/lz HTTP/1.1\r\nHost: t\r\nContent-Length: 0005\r\n\r\nhello")
        d = seen(c.read_response())
    cl = hdrs(d, "content-length")
    assert len(cl) == 1 and int(cl[0]) == 5
    assert d["body_len"] == 5


def test_workers_auto(mg, echo):
    m = mg.simple(echo, workers="auto")
    for i in range(4):
        assert http_request(m.port, "GET", f"/api/auto{i}").status == 200
