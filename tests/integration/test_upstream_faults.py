"""Upstream failures: refused/blackholed connects (503), slow responses (504),
truncated or killed responses, invalid responses (502), bodies where none is
allowed, stale pooled connections."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import (Client, IncompleteResponse, ResponseTimeout, build_request, cluster,
                      echo_handler, free_port, http_request, send_response, wait_until)

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def assert_json_error(resp, status):
    assert resp.status == status, resp
    assert "json" in resp.header("content-type", "").lower(), resp
    d = resp.json()
    assert d.get("status") == status and isinstance(d.get("error"), str), d


def timed_request(port, path, timeout=20, **kw):
    t0 = time.monotonic()
    r = http_request(port, "GET", path, timeout=timeout, **kw)
    return r, time.monotonic() - t0


# --- connect failures ----------------------------------------------------------

def test_connect_refused_is_503_fast(mg):
    dead = free_port()
    m = mg(routes=[{"id": "dead", "path": "/api/**", "to": "dead"}],
           clusters={"dead": cluster(f"127.0.0.1:{dead}")})
    r, dt = timed_request(m.port, "/api/x")
    assert_json_error(r, 503)
    assert dt < 5, f"503 for a refused connect took {dt:.1f}s"
    # and again on the same client connection (no stuck state)
    with Client(m.port) as c:
        assert c.request("GET", "/api/y").status == 503
        assert c.request("GET", "/api/z").status == 503


class Blackhole:
    """A listening socket whose accept queue is full: SYNs are dropped, so a
    connect hangs until the connector's own timeout."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(0)
        self.addr = self.srv.getsockname()
        self.fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(self.addr)
            except (BlockingIOError, OSError):
                pass
            self.fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(1.0)
        try:
            probe.connect(self.addr)
            self.ok = False
        except socket.timeout:
            self.ok = True
        except OSError:
            self.ok = False
        finally:
            probe.close()

    def close(self):
        for s in self.fillers:
            s.close()
        self.srv.close()


@pytest.fixture
def blackhole():
    b = Blackhole()
    if not b.ok:
        b.close()
        pytest.skip("could not build a blackhole listener on this kernel")
    yield b
    b.close()


def test_connect_timeout_cluster_override_is_503(mg, blackhole):
    m = mg(routes=[{"id": "bh", "path": "/api/**", "to": "bh"}],
           clusters={"bh": cluster(f"127.0.0.1:{blackhole.addr[1]}", connect_timeout="1s")})
    r, dt = timed_request(m.port, "/api/x")
    assert_json_error(r, 503)
    assert 0.5 <= dt < 8, f"connect timeout of 1s answered after {dt:.1f}s"


def test_connect_timeout_global_is_503(mg, blackhole):
    m = mg(routes=[{"id": "bh", "path": "/api/**", "to": "bh"}],
           clusters={"bh": cluster(f"127.0.0.1:{blackhole.addr[1]}")},
           timeouts={"connect": "800ms"})
    r, dt = timed_request(m.port, "/api/x")
    assert_json_error(r, 503)
    assert dt < 8, f"connect timeout of 800ms answered after {dt:.1f}s"


def test_default_connect_timeout_is_about_2s(mg, blackhole):
    m = mg(routes=[{"id": "bh", "path": "/api/**", "to": "bh"}],
           clusters={"bh": cluster(f"127.0.0.1:{blackhole.addr[1]}")})
    r, dt = timed_request(m.port, "/api/x", timeout=30)
    assert_json_error(r, 503)
    assert dt < 12, f"default connect timeout (2s) answered after {dt:.1f}s"


# --- response timeout -----------------------------------------------------------

def test_response_timeout_is_504(mg, echo):
    m = mg.simple(echo, timeouts={"response": "1s"})
    r, dt = timed_request(m.port, "/api/slow?delay_ms=6000")
    assert_json_error(r, 504)
    assert dt < 5, f"response timeout of 1s answered after {dt:.1f}s"
    r = http_request(m.port, "GET", "/api/fast")
    assert r.status == 200


def test_response_timeout_cluster_override_is_504(mg, echo):
    m = mg(routes=[{"id": "api", "path": "/api/**", "to": "c"}],
           clusters={"c": cluster(echo, response_timeout="1s")})
    r, dt = timed_request(m.port, "/api/slow?delay_ms=6000")
    assert_json_error(r, 504)
    assert dt < 5


def test_response_within_timeout_ok(mg, echo):
    m = mg.simple(echo, timeouts={"response": "3s"})
    r = http_request(m.port, "GET", "/api/slowish?delay_ms=300")
    assert r.status == 200


def test_timed_out_upstream_connection_not_reused(mg, echo):
    m = mg.simple(echo, workers=1, timeouts={"response": "1s"})
    with Client(m.port) as c:
        d1 = c.request("GET", "/api/warm").json()
    r = http_request(m.port, "GET", "/api/slow?delay_ms=2500")
    assert r.status == 504
    time.sleep(2.0)  # the late response arrives on the old upstream connection
    d2 = http_request(m.port, "GET", "/api/after").json()
    assert d2["path"] == "/api/after"
    assert d2["conn_id"] != d1["conn_id"], "connection with an abandoned response was reused"


# --- truncated / killed responses ------------------------------------------------

def truncating_handler(mode, framing):
    def handler(ctx, req):
        if not req.path.startswith("/api/trunc"):
            return echo_handler(ctx, req)
        if framing == "cl":
            ctx.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        else:
            ctx.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3e8\r\n" + b"a" * 1000 + b"\r\n3e8\r\n" + b"b" * 500)
        time.sleep(0.2)
        if mode == "rst":
            ctx.reset()
        else:
            ctx.sock.shutdown(socket.SHUT_RDWR)
        return False
    return handler


@pytest.mark.parametrize("framing", ["cl", "chunked"])
@pytest.mark.parametrize("mode", ["fin", "rst"])
def test_upstream_truncated_body_closes_client(mg, upstream_factory, mode, framing):
    u = upstream_factory(truncating_handler(mode, framing))
    m = mg.simple(u)
    with Client(m.port) as c:
        c.send(build_request("GET", "/api/trunc"))
        try:
            r = c.read_response(timeout=10)
        except IncompleteResponse:
            pass  # expected: the message was never completed
        except ResponseTimeout as e:
            raise AssertionError(f"client connection hangs after upstream truncation: {e.partial[:200]!r}")
        else:
            raise AssertionError(f"client received a complete message for a truncated body: {r!r}")
        assert c.wait_closed(5), "client connection not closed after truncated upstream body"
    # next request works
    r = http_request(m.port, "GET", "/api/ok")
    assert r.status == 200


def test_truncated_body_client_not_given_last_chunk(mg, upstream_factory):
    u = upstream_factory(truncating_handler("fin", "chunked"))
    m = mg.simple(u)
    with Client(m.port) as c:
        c.send(build_request("GET", "/api/trunc"))
        data = b""
        c.sock.settimeout(10)
        try:
            while True:
                d = c.sock.recv(65536)
                if not d:
                    break
                data += d
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError("client connection hangs")
    assert not data.endswith(b"0\r\n\r\n"), "truncated chunked body terminated as if complete"


KILL_SCRIPT = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d:
            break
        data += d
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 100000)
    time.sleep(60)
"""


def test_upstream_process_killed_mid_response(mg, echo):
    p = subprocess.Popen([PY, "-c", KILL_SCRIPT], stdout=subprocess.PIPE)
    try:
        port = int(p.stdout.readline())
        m = mg(routes=[{"id": "doomed", "path": "/doomed/**", "to": "doomed"},
                       {"id": "api", "path": "/api/**", "to": "ok"}],
               clusters={"doomed": cluster(f"127.0.0.1:{port}"), "ok": cluster(echo)})
        with Client(m.port) as c:
            c.send(build_request("GET", "/doomed/x"))
            v, status, reason, headers, raw = c.read_head(timeout=10)
            assert status == 200
            deadline = time.monotonic() + 10
            while len(c.buf) < 50000 and time.monotonic() < deadline:
                c._fill(deadline)
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
            got = len(c.buf)
            c.buf.clear()
            c.sock.settimeout(10)
            try:
                while True:
                    d = c.sock.recv(1 << 20)
                    if not d:
                        break
                    got += len(d)
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise AssertionError("client connection hangs after the upstream was killed")
            assert got < 10000000
        assert http_request(m.port, "GET", "/api/fine").status == 200
        r, dt = timed_request(m.port, "/doomed/again")
        assert r.status in (502, 503), r
        assert dt < 5
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


# --- invalid upstream responses -------------------------------------------------

BAD_RESPONSES = [
    ("cl_alpha", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello"),
    ("cl_negative", b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"),
    ("cl_plus", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
    ("cl_duplicate_differs", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("cl_and_te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("status_two_digits", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
    ("status_999", b"HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n"),
    ("status_alpha", b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"),
    ("version_garbage", b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("not_http", b"garbage garbage\r\n\r\n"),
    ("space_before_colon", b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 5\r\n\r\nhello"),
    ("nul_in_value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"),
    ("bare_cr", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 5\r\n\r\nhello"),
    ("no_colon", b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 5\r\n\r\nhello"),
]


def bad_response_handler(raw):
    def handler(ctx, req):
        if req.path.startswith("/api/bad"):
            ctx.send(raw)
            return True  # keep the connection: meshgate must be the one closing it
        return echo_handler(ctx, req)
    return handler


@pytest.mark.parametrize("name,raw", BAD_RESPONSES, ids=[b[0] for b in BAD_RESPONSES])
def test_invalid_upstream_response_is_502(mg, upstream_factory, name, raw):
    u = upstream_factory(bad_response_handler(raw))
    m = mg.simple(u, workers=1)
    r, dt = timed_request(m.port, "/api/bad")
    assert_json_error(r, 502)
    assert dt < 5
    bad_conn = u.requests[0].conn_id
    ctx = u.conns[bad_conn]
    assert ctx.closed.wait(5), f"{name}: meshgate kept the upstream connection open after a bad response"
    d = http_request(m.port, "GET", "/api/good").json()
    assert d["conn_id"] != bad_conn


def test_upstream_bad_chunked_framing(mg, upstream_factory):
    """Invalid chunked framing in the upstream body: 502 if the head was not
    sent yet, otherwise the client connection is closed without a complete
    message. Either way the upstream connection is closed."""
    u = upstream_factory(bad_response_handler(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"))
    m = mg.simple(u, workers=1)
    with Client(m.port) as c:
        c.send(build_request("GET", "/api/bad"))
        try:
            r = c.read_response(timeout=10)
            assert r.status == 502, r
        except IncompleteResponse:
            assert c.wait_closed(5)
        except ResponseTimeout:
            raise AssertionError("client hangs after invalid upstream chunk framing")
    assert u.conns[u.requests[0].conn_id].closed.wait(5)


def test_upstream_closes_without_response_is_502(mg, upstream_factory):
    def handler(ctx, req):
        if req.path.startswith("/api/bad"):
            return False
        return echo_handler(ctx, req)
    u = upstream_factory(handler)
    m = mg.simple(u)
    r, dt = timed_request(m.port, "/api/bad")
    assert_json_error(r, 502)
    assert dt < 5
    assert http_request(m.port, "GET", "/api/good").status == 200


def test_upstream_partial_head_then_close_is_502(mg, upstream_factory):
    def handler(ctx, req):
        ctx.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        return False
    u = upstream_factory(handler)
    m = mg.simple(u)
    r, dt = timed_request(m.port, "/api/bad")
    assert_json_error(r, 502)


NO_BODY_CASES = [
    ("204_with_cl", "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
    ("204_unframed", "GET", b"HTTP/1.1 204 No Content\r\n\r\nhello"),
    ("204_chunked", "GET", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("304_with_cl", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"),
    ("head_with_body", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
]


def nobody_handler(raw):
    def handler(ctx, req):
        if req.path.startswith("/api/nobody"):
            ctx.send(raw)
            return True
        return echo_handler(ctx, req)
    return handler


@pytest.mark.parametrize("name,method,raw", NO_BODY_CASES, ids=[c[0] for c in NO_BODY_CASES])
def test_body_on_bodiless_response_ignored_and_conn_not_reused(mg, upstream_factory, name, method, raw):
    u = upstream_factory(nobody_handler(raw))
    m = mg.simple(u, workers=1)
    with Client(m.port) as c:
        c.send(build_request(method, "/api/nobody"))
        r = c.read_response(method=method, timeout=5)
        assert r.status == int(raw[9:12]), r
    # a new client connection, same worker: must not get the tainted upstream connection
    r2 = http_request(m.port, "GET", "/api/next")
    assert r2.status == 200, r2
    d = r2.json()
    first = u.requests[0].conn_id
    assert d["conn_id"] != first, f"{name}: upstream connection reused after a body on a bodiless response"
    assert u.conns[first].closed.wait(5), f"{name}: upstream connection not closed"


@pytest.mark.parametrize("name,method,raw", NO_BODY_CASES, ids=[c[0] for c in NO_BODY_CASES])
def test_body_on_bodiless_response_not_leaked_to_client(mg, upstream_factory, name, method, raw):
    """The ignored body bytes must not reach the client: the next response
    on the same client connection is clean."""
    u = upstream_factory(nobody_handler(raw))
    m = mg.simple(u, workers=1)
    with Client(m.port) as c:
        c.send(build_request(method, "/api/nobody"))
        r = c.read_response(method=method, timeout=5)
        assert r.status == int(raw[9:12]), r
        assert not c.buf or not c.buf.startswith(b"hello"), f"body bytes leaked: {bytes(c.buf)!r}"
        r2 = c.request("GET", "/api/next")
        assert r2.status == 200, r2
        assert r2.json()["path"] == "/api/next"


def test_head_response_content_length_passed(mg, upstream_factory):
    def handler(ctx, req):
        ctx.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    with Client(m.port) as c:
        c.send(build_request("HEAD", "/api/h"))
        r = c.read_response(method="HEAD", timeout=5)
        assert r.status == 200
        assert r.header("content-length") in ("1234", None)
        c.send(build_request("HEAD", "/api/h2"))
        assert c.read_response(method="HEAD", timeout=5).status == 200


def test_response_trailers_dropped(mg, upstream_factory):
    def handler(ctx, req):
        ctx.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                 b"5;e=1\r\nhello\r\n0\r\nX-Sum: abc\r\n\r\n")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    with Client(m.port) as c:
        r = c.request("GET", "/api/trailers")
        assert r.body == b"hello"
        assert r.trailers == [], r.trailers
        assert b";e=1" not in r.raw_body
        assert c.request("GET", "/api/trailers").body == b"hello"


def test_upstream_informational_then_final(mg, upstream_factory):
    def handler(ctx, req):
        ctx.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    with Client(m.port) as c:
        r = c.request("GET", "/api/hints")
        assert r.status == 200 and r.body == b"ok"
        assert c.request("GET", "/api/hints").status == 200


def test_upstream_error_status_passed_through(gw):
    r = http_request(gw.port, "GET", "/api/err?status=500")
    assert r.status == 500
    assert r.json()["path"] == "/api/err"


def test_large_upstream_response_header_passed(mg, upstream_factory):
    big = "v" * 20000

    def handler(ctx, req):
        send_response(ctx, 200, [("X-Big", big)], b"ok")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    r = http_request(m.port, "GET", "/api/bighead")
    assert r.status == 200 and r.header("x-big") == big


def test_oversized_upstream_response_head_is_502(mg, upstream_factory):
    def handler(ctx, req):
        send_response(ctx, 200, [(f"X-Big{i}", "v" * 8000) for i in range(8)], b"ok")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    r, dt = timed_request(m.port, "/api/hugehead")
    assert_json_error(r, 502)
