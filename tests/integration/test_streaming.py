"""Bodies stream both ways with bounded buffers and backpressure."""
import os
import threading
import time
import zlib

import pytest

from conftest import MESHGATE, Client, build_request, chunked_body, pattern_crc, pattern_iter

GiB = 1 << 30
MiB = 1 << 20
RSS_LIMIT_KB = 64 * 1024
STREAM_BOUND_S = 150  # a hang guard, not a speed assertion


class RssSampler:
    def __init__(self, m, interval=0.1):
        self.m = m
        self.interval = interval
        self.max_rss = 0
        self.samples = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_ev.is_set():
            v = self.m.rss_kb()
            if v:
                self.max_rss = max(self.max_rss, v)
                self.samples += 1
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)
        return self.max_rss


def _sanitized_binary():
    """ASan/valgrind builds have no meaningful RSS bound."""
    if os.environ.get("MESHGATE_SKIP_RSS"):
        return True
    try:
        with open(MESHGATE, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def check_memory(m, sampler):
    max_rss = sampler.stop()
    hwm = m.hwm_kb()
    assert sampler.samples > 0
    if _sanitized_binary():
        return
    assert max_rss < RSS_LIMIT_KB, f"meshgate RSS reached {max_rss} kB while streaming"
    assert hwm < RSS_LIMIT_KB, f"meshgate VmHWM {hwm} kB >= {RSS_LIMIT_KB} kB"


def upload(m, path, total, chunked=False, piece=MiB):
    c = Client(m.port, timeout=60)
    t0 = time.monotonic()
    try:
        if chunked:
            c.send(build_request("POST", path, headers=[("Transfer-Encoding", "chunked")]))
            for mv in pattern_iter(total, piece):
                c.send(b"%x\r\n" % len(mv) + bytes(mv) + b"\r\n")
                assert time.monotonic() - t0 < STREAM_BOUND_S, "upload too slow / stalled"
            c.send(b"0\r\n\r\n")
        else:
            c.send(build_request("POST", path, headers=[("Content-Length", str(total))]))
            for mv in pattern_iter(total, piece):
                c.send(mv)
                assert time.monotonic() - t0 < STREAM_BOUND_S, "upload too slow / stalled"
        r = c.read_response(timeout=60)
    finally:
        c.close()
    assert r.status == 200, r
    d = r.json()
    assert d["body_len"] == total
    assert d["body_crc32"] == pattern_crc(total)
    return d


def download(m, path, total, pause_at=None, pause_s=0.0, sampler=None):
    """GET and count/crc the body without keeping it. Returns (resp head info, crc)."""
    c = Client(m.port, timeout=60)
    t0 = time.monotonic()
    try:
        c.send(build_request("GET", path))
        v, status, reason, headers, raw = c.read_head(timeout=30)
        assert status == 200, raw
        hd = {n.lower(): val for n, val in headers}
        crc = 0
        got = 0
        paused = pause_at is None
        buf = bytearray(MiB)
        mvb = memoryview(buf)
        if "content-length" in hd:
            assert int(hd["content-length"]) == total
            pending = bytes(c.buf)
            c.buf.clear()
            crc = zlib.crc32(pending, crc)
            got += len(pending)
            s = c.sock
            s.settimeout(60)
            while got < total:
                if not paused and got >= pause_at:
                    paused = True
                    time.sleep(pause_s)  # stalled reader: meshgate must stop reading upstream
                n = s.recv_into(mvb, min(len(buf), total - got))
                if n == 0:
                    raise AssertionError(f"EOF after {got} of {total} bytes")
                crc = zlib.crc32(mvb[:n], crc)
                got += n
                assert time.monotonic() - t0 < STREAM_BOUND_S, "download too slow / stalled"
        else:
            assert hd.get("transfer-encoding", "").lower() == "chunked", headers
            if pause_at is not None:
                time.sleep(pause_s)
            # reuse the chunked decoder: push the parsed head back and re-read
            c.buf[0:0] = raw
            resp = c.read_response(timeout=STREAM_BOUND_S, keep_body=False)
            got, crc = resp.body_len, resp.body_crc
    finally:
        c.close()
    assert got == total
    assert crc == pattern_crc(total)
    return got


@pytest.mark.slow
def test_upload_1gib_content_length_bounded_memory(mg, echo):
    m = mg.simple(echo, workers=2)
    s = RssSampler(m)
    upload(m, "/api/upload", GiB)
    check_memory(m, s)


@pytest.mark.slow
def test_download_1gib_content_length_bounded_memory(mg, echo):
    m = mg.simple(echo, workers=2)
    s = RssSampler(m)
    download(m, f"/api/download?size={GiB}", GiB, pause_at=100 * MiB, pause_s=2.0)
    check_memory(m, s)


def test_upload_with_stalled_upstream_backpressure(mg, echo):
    """The upstream stops reading for 2 s after 32 MiB: meshgate must push
    back on the client instead of buffering."""
    m = mg.simple(echo, workers=1)
    s = RssSampler(m)
    upload(m, f"/api/stall?pause_ms=2000&pause_after={32 * MiB}", 256 * MiB)
    check_memory(m, s)


def test_upload_256mib_chunked(mg, echo):
    m = mg.simple(echo, workers=1)
    s = RssSampler(m)
    d = upload(m, "/api/upchunked", 256 * MiB, chunked=True, piece=64 * 1024)
    assert d["chunked"] is True
    check_memory(m, s)


def test_download_256mib_chunked(mg, echo):
    m = mg.simple(echo, workers=1)
    s = RssSampler(m)
    download(m, f"/api/downchunked?size={256 * MiB}&chunked=1", 256 * MiB, pause_at=0, pause_s=2.0)
    check_memory(m, s)


def test_chunked_response_is_streamed_not_buffered(mg, upstream_factory):
    go_on = threading.Event()

    def handler(ctx, req):
        ctx.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        go_on.wait(10)
        ctx.send(b"6\r\nsecond\r\n0\r\n\r\n")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    with Client(m.port) as c:
        c.send(build_request("GET", "/api/stream"))
        v, status, reason, headers, raw = c.read_head(timeout=5)
        assert status == 200
        deadline = time.monotonic() + 5
        while b"first" not in c.buf and time.monotonic() < deadline:
            try:
                c._fill(deadline)
            except Exception:
                break
        got_first = b"first" in c.buf
        go_on.set()
        assert got_first, "first chunk not delivered before the upstream finished (buffered?)"
        c.buf[0:0] = raw
        r = c.read_response(timeout=10)
        assert r.body == b"firstsecond"


def test_content_length_response_is_streamed(mg, upstream_factory):
    go_on = threading.Event()

    def handler(ctx, req):
        ctx.send(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfirst")
        go_on.wait(10)
        ctx.send(b"-second")
        return True
    u = upstream_factory(handler)
    m = mg.simple(u)
    with Client(m.port) as c:
        c.send(build_request("GET", "/api/stream"))
        v, status, reason, headers, raw = c.read_head(timeout=5)
        deadline = time.monotonic() + 5
        while b"first" not in c.buf and time.monotonic() < deadline:
            try:
                c._fill(deadline)
            except Exception:
                break
        got_first = b"first" in c.buf
        go_on.set()
        assert got_first, "partial body not delivered before the upstream finished"
        c.buf[0:0] = raw
        assert c.read_response(timeout=10).body == b"first-second"


def test_request_head_forwarded_before_body_complete(gw):
    with Client(gw.port) as c:
        c.send(build_request("POST", "/api/partial", headers=[("Content-Length", "10")]) + b"hello")
        assert gw.echo.wait_heads(1, 5), "request head not forwarded until the body completed"
        c.send(b"world")
        d = c.read_response().json()
        assert d["body_len"] == 10 and d["body_crc32"] == zlib.crc32(b"helloworld")


def test_slow_chunked_upload_trickle(gw):
    """A body trickling in small pieces still arrives intact."""
    with Client(gw.port) as c:
        c.send(build_request("POST", "/api/trickle", headers=[("Transfer-Encoding", "chunked")]))
        data = chunked_body([b"a" * 10, b"b" * 20, b"c" * 30], ext=None)
        for i in range(0, len(data), 9):
            c.send(data[i:i + 9])
            time.sleep(0.02)
        d = c.read_response().json()
    assert d["body_len"] == 60
