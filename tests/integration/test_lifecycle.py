"""Process lifecycle: SIGHUP reload (atomic, in-flight on the old snapshot,
invalid config refused), SIGTERM drain, client timeouts (header deadline,
idle, body), max_connections."""
import os
import re
import select
import signal
import socket
import threading
import time

import pytest

from conftest import (Client, IncompleteResponse, ResponseTimeout, build_request, cluster,
                      connect_refused, http_request, wait_until)


def cfg_a(base, e1):
    cfg = dict(base)
    cfg["routes"] = [{"id": "api", "path": "/api/**", "to": "one"}]
    cfg["clusters"] = {"one": cluster(e1)}
    return cfg


def cfg_b(base, e1, e2):
    cfg = dict(base)
    cfg["routes"] = [{"id": "api", "path": "/api/**", "to": "one"},
                     {"id": "new", "path": "/new/**", "to": "two"}]
    cfg["clusters"] = {"one": cluster(e1), "two": cluster(e2)}
    return cfg


def route_ids(m):
    return [r["id"] for r in m.routes()]


def wait_routes(m, ids, timeout=5.0):
    def ok():
        try:
            return route_ids(m) == ids
        except Exception:
            return False
    return wait_until(ok, timeout)


# --- reload -------------------------------------------------------------------

def test_sighup_reload_adds_route(mg, upstream_factory):
    e1 = upstream_factory(name="one")
    e2 = upstream_factory(name="two")
    m = mg.simple(e1)
    base = {k: v for k, v in m.config.items() if k not in ("routes", "clusters")}
    assert http_request(m.port, "GET", "/new/x").status == 404
    m.reload(cfg_b(base, e1, e2))
    assert wait_routes(m, ["api", "new"]), f"reload not applied: {m.routes()}\n{m.stderr_tail()}"
    r = http_request(m.port, "GET", "/new/x")
    assert r.status == 200 and r.header("x-upstream") == "two"
    assert http_request(m.port, "GET", "/api/x").header("x-upstream") == "one"
    m.reload(cfg_a(base, e1))
    assert wait_routes(m, ["api"])
    assert http_request(m.port, "GET", "/new/x").status == 404


def test_inflight_request_finishes_on_old_config(mg, upstream_factory):
    e1 = upstream_factory(name="one")
    e2 = upstream_factory(name="two")
    m = mg.simple(e1)
    base = {k: v for k, v in m.config.items() if k not in ("routes", "clusters")}
    with Client(m.port, timeout=15) as slow:
        slow.send(build_request("GET", "/api/slow?delay_ms=2000"))
        assert e1.wait_heads(1, 5)
        new = dict(base)
        new["routes"] = [{"id": "api2", "path": "/api/**", "to": "two"}]
        new["clusters"] = {"two": cluster(e2)}
        m.reload(new)
        assert wait_routes(m, ["api2"]), m.stderr_tail()
        assert http_request(m.port, "GET", "/api/now").header("x-upstream") == "two"
        r = slow.read_response(timeout=15)
        assert r.status == 200 and r.header("x-upstream") == "one"


@pytest.mark.parametrize("kind", ["yaml_syntax", "unknown_cluster", "bad_duration", "unknown_key"])
def test_invalid_reload_keeps_old_config(mg, echo, kind):
    m = mg.simple(echo)
    base = {k: v for k, v in m.config.items() if k not in ("routes", "clusters")}
    good = dict(m.config)
    if kind == "yaml_syntax":
        bad = "listen: [unclosed\nroutes: {\n"
    elif kind == "unknown_cluster":
        bad = dict(base, routes=[{"id": "x", "path": "/x/**", "to": "nosuch"}],
                   clusters={"backend": cluster(echo)}, discovery={"registry": False})
    elif kind == "bad_duration":
        bad = dict(good, timeouts={"connect": "2 parsecs"})
    else:
        bad = dict(good, bogus_key=1)
    mark = m.stderr_mark()
    m.write_config(bad)
    m.signal(signal.SIGHUP)
    assert m.wait_stderr(re.escape(os.path.basename(m.config_path)) + r":\d+:\d+: ", 5, start=mark), \
        f"no FILE:LINE:COL error logged for the refused reload:\n{m.stderr_tail()}"
    time.sleep(0.3)
    assert m.alive()
    assert route_ids(m) == ["api"]
    for i in range(5):
        assert http_request(m.port, "GET", f"/api/still/{i}").status == 200
    # a valid config afterwards is applied
    m.config = good
    m.reload(dict(good, routes=[{"id": "api", "path": "/api/**", "to": "backend"},
                                {"id": "extra", "path": "/extra/**", "to": "backend"}]))
    assert wait_routes(m, ["api", "extra"])


@pytest.mark.slow
def test_100_reloads_under_load_zero_failures(mg, upstream_factory):
    e1 = upstream_factory(name="one")
    e2 = upstream_factory(name="two")
    m = mg.simple(e1)
    base = {k: v for k, v in m.config.items() if k not in ("routes", "clusters")}
    A = cfg_a(base, e1)
    B = cfg_b(base, e1, e2)
    stop = threading.Event()
    stats = {"ok": 0, "fail": []}
    lock = threading.Lock()

    def loop(keepalive):
        c = None
        n = 0
        t_end = time.monotonic() + 180
        while not stop.is_set() and time.monotonic() < t_end:
            n += 1
            try:
                if c is None or not keepalive:
                    if c:
                        c.close()
                    c = Client(m.port, timeout=10)
                r = c.request("GET", f"/api/load/{n}")
                if r.status != 200:
                    raise AssertionError(f"status {r.status}")
                with lock:
                    stats["ok"] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                with lock:
                    stats["fail"].append(f"{'ka' if keepalive else 'new'}#{n}: {e!r}")
                if c:
                    c.close()
                c = None
        if c:
            c.close()

    threads = [threading.Thread(target=loop, args=(ka,), daemon=True) for ka in (True, False)]
    for t in threads:
        t.start()
    fds_before = len(os.listdir(f"/proc/{m.pid}/fd"))
    t0 = time.monotonic()
    try:
        for i in range(100):
            target = B if i % 2 == 0 else A
            want = ["api", "new"] if target is B else ["api"]
            with lock:
                before = stats["ok"] + len(stats["fail"])
            m.reload(target)
            assert wait_routes(m, want, 5), f"reload #{i} not applied\n{m.stderr_tail()}"
            # let some requests run against each snapshot
            wait_until(lambda: stats["ok"] + len(stats["fail"]) >= before + 4, 2, 0.005)
            if i % 10 == 0:
                st = http_request(m.port, "GET", "/new/probe").status
                assert st == (200 if target is B else 404), (i, st)
            assert time.monotonic() - t0 < 150, "reloads too slow / stalled"
            assert m.alive()
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert stats["ok"] > 100, stats["ok"]
    assert not stats["fail"], f"{len(stats['fail'])} failed requests during reloads: {stats['fail'][:10]}"
    time.sleep(0.5)
    fds_after = len(os.listdir(f"/proc/{m.pid}/fd"))
    assert fds_after <= fds_before + 16, f"fd leak across reloads: {fds_before} -> {fds_after}"
    # final state A (i=98 -> B, i=99 -> A)
    assert http_request(m.port, "GET", "/new/final").status == 404
    m.reload(B)
    assert wait_routes(m, ["api", "new"])
    assert http_request(m.port, "GET", "/new/final").header("x-upstream") == "two"


# --- SIGTERM --------------------------------------------------------------------

def test_sigterm_drains_inflight_and_exits_0(mg, echo):
    m = mg.simple(echo)
    with Client(m.port, timeout=20) as slow:
        slow.send(build_request("GET", "/api/slow?delay_ms=3000"))
        assert echo.wait_heads(1, 5)
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        m.expect_exit = True
        refused = wait_until(lambda: connect_refused(m.port, 0.5), 2.5, 0.05)
        t_refused = time.monotonic() - t0
        r = slow.read_response(timeout=20)
        assert r.status == 200, r
        assert refused, "listener still accepting after SIGTERM"
        assert t_refused < 2.9, "new connections only refused after the drain"
        assert slow.wait_closed(5), "drained connection kept open after its response"
    rc = m.wait_exit(15)
    assert rc == 0, f"exit code {rc}\n{m.stderr_tail()}"


def test_sigterm_with_idle_keepalive_connections_exits_promptly(mg, echo):
    m = mg.simple(echo)
    idle = [Client(m.port) for _ in range(3)]
    try:
        for c in idle:
            assert c.request("GET", "/api/warm").status == 200
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        rc = m.wait_exit(10)
        dt = time.monotonic() - t0
        assert rc == 0, f"rc={rc} after {dt:.1f}s (drain default is 30s; idle connections must not hold it)"
        for c in idle:
            assert c.wait_closed(2)
    finally:
        for c in idle:
            c.close()


def test_sigterm_drain_is_bounded(mg, echo):
    m = mg.simple(echo, timeouts={"drain": "1s"})
    with Client(m.port, timeout=30) as slow:
        slow.send(build_request("GET", "/api/slow?delay_ms=20000"))
        assert echo.wait_heads(1, 5)
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        rc = m.wait_exit(10)
        dt = time.monotonic() - t0
        assert rc is not None, "drain of 1s not enforced: still running after 10s"
        assert dt < 8


def test_sigterm_without_traffic_exits_0(mg, echo):
    m = mg.simple(echo)
    assert m.stop(timeout=10) == 0


def test_sigint_drains_and_exits_0(mg, echo):
    m = mg.simple(echo)
    with Client(m.port, timeout=20) as slow:
        slow.send(build_request("GET", "/api/slow?delay_ms=1000"))
        assert echo.wait_heads(1, 5)
        m.signal(signal.SIGINT)
        m.expect_exit = True
        assert slow.read_response(timeout=20).status == 200
    assert m.wait_exit(15) == 0


# --- client timeouts ----------------------------------------------------------------

def test_header_timeout_is_total_not_per_read(mg, echo):
    m = mg.simple(echo, timeouts={"header": "1s"})
    with Client(m.port, timeout=10) as c:
        t0 = time.monotonic()
        c.send(b"GET /api/slowloris HTTP/1.1\r\nHost: t\r\nX-Drip: ")
        got = None
        while time.monotonic() - t0 < 8:
            try:
                c.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            r, _, _ = select.select([c.sock], [], [], 0.3)
            if r:
                break
        dt = time.monotonic() - t0
        try:
            got = c.read_response(timeout=3)
        except (IncompleteResponse, ResponseTimeout) as e:
            raise AssertionError(f"no 408 after {dt:.1f}s of drip-fed header bytes: {e!r}")
        assert got.status == 408, got
        assert dt < 6, f"408 only after {dt:.1f}s with header timeout 1s (per-read timer?)"
        assert dt >= 0.5, f"408 after {dt:.2f}s, before the 1s header timeout"
        assert c.wait_closed(5)
    assert echo.heads == []


def test_header_timeout_partial_head(mg, echo):
    m = mg.simple(echo, timeouts={"header": "1s"})
    with Client(m.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /api/x HTTP/1.1\r\n")
        r = c.read_response(timeout=6)
        assert r.status == 408
        assert c.wait_closed(5)
        assert time.monotonic() - t0 < 6


def test_connection_without_bytes_closed(mg, echo):
    m = mg.simple(echo, timeouts={"header": "1s", "idle": "1s"})
    with Client(m.port) as c:
        assert c.wait_closed(6), "silent connection never closed"


def test_idle_keepalive_timeout_closes(mg, echo):
    m = mg.simple(echo, timeouts={"idle": "1s"})
    with Client(m.port) as c:
        assert c.request("GET", "/api/x").status == 200
        t0 = time.monotonic()
        assert c.wait_closed(6), "idle keep-alive connection not closed"
        assert time.monotonic() - t0 >= 0.5


def test_active_keepalive_not_closed_by_idle_timeout(mg, echo):
    m = mg.simple(echo, timeouts={"idle": "1s"})
    with Client(m.port) as c:
        for i in range(8):
            assert c.request("GET", f"/api/busy/{i}").status == 200
            time.sleep(0.3)


def test_body_timeout_stalled_upload(mg, echo):
    m = mg.simple(echo, timeouts={"body": "1s"})
    with Client(m.port) as c:
        c.send(build_request("POST", "/api/stall", headers=[("Content-Length", "10")]) + b"hello")
        t0 = time.monotonic()
        try:
            r = c.read_response(timeout=8)
            assert r.status in (408, 400), r
        except IncompleteResponse:
            pass
        except ResponseTimeout:
            raise AssertionError("stalled request body never timed out")
        assert c.wait_closed(5)
        assert time.monotonic() - t0 < 8
    # the upstream connection carrying the half request is not reused
    if echo.heads:
        cid = echo.heads[0].conn_id
        assert echo.conns[cid].closed.wait(5)


# --- max_connections ------------------------------------------------------------------

def _extra_outcome(port):
    extra = None
    try:
        extra = Client(port, timeout=3)
        extra.send(build_request("GET", "/api/extra"), ignore_errors=True)
        return extra.read_response(timeout=2).status
    except (IncompleteResponse, ConnectionError):
        return "closed"
    except (ResponseTimeout, socket.timeout):
        return "not served"
    finally:
        if extra:
            extra.close()


@pytest.mark.parametrize("workers,rounds", [(1, 1), (2, 4)], ids=["1worker", "2workers"])
def test_max_connections(mg, echo, workers, rounds):
    """max_connections: 3 is a total across workers: 3 connections are
    served whichever workers accept them, a 4th is not."""
    m = mg.simple(echo, workers=workers, limits={"max_connections": 3})
    for rnd in range(rounds):
        held = []
        try:
            for i in range(3):
                c = Client(m.port)
                held.append(c)
                try:
                    st = c.request("GET", "/api/held").status
                except (IncompleteResponse, ConnectionError) as e:
                    raise AssertionError(f"round {rnd}: connection #{i + 1} refused with "
                                         f"max_connections: 3 ({e!r})")
                assert st == 200
            outcome = _extra_outcome(m.port)
            assert outcome != 200, f"round {rnd}: a 4th connection was served with max_connections: 3"
            # the held connections still work
            assert held[0].request("GET", "/api/held2").status == 200
        finally:
            for c in held:
                c.close()

        def served():
            try:
                return http_request(m.port, "GET", "/api/after", timeout=2).status == 200
            except Exception:
                return False
        assert wait_until(served, 8, 0.2), "connection slots not released after clients closed"
        time.sleep(0.2)
