"""Black-box integration harness for meshgate.

Everything here talks to the real binary (build/meshgate, or $MESHGATE) over
real sockets on 127.0.0.1, with upstream servers started by the tests
themselves. Only the Python standard library is used.

Pieces:
  free_port()            a port nothing listens on (right now)
  to_yaml()              tiny block-YAML emitter for config dicts
  Meshgate               writes a config, runs `meshgate run -c`, waits for
                         readiness, collects stderr, stops, reloads, RSS
  Upstream               threaded raw HTTP/1.1 server; the default handler is
                         an echo that answers JSON describing what it saw;
                         any handler(ctx, req) can write raw bytes instead
  Client                 raw-socket HTTP/1.1 client: send bytes, parse a
                         response exactly, detect connection close
"""
import errno
import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MESHGATE = os.environ.get("MESHGATE", os.path.join(ROOT, "build", "meshgate"))

def _make_block(n=1 << 20):
    out = bytearray()
    seed = b"meshgate-block"
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


# 1 MiB of fixed pseudo-random bytes used for generated bodies.
BLOCK = _make_block()


def pattern_bytes(n):
    """The first n bytes of the endless repetition of BLOCK (as bytes)."""
    q, r = divmod(n, len(BLOCK))
    return BLOCK * q + BLOCK[:r]


def pattern_crc(n):
    crc = 0
    left = n
    while left:
        k = min(left, len(BLOCK))
        crc = zlib.crc32(BLOCK[:k] if k < len(BLOCK) else BLOCK, crc)
        left -= k
    return crc


def pattern_iter(n, piece=len(BLOCK)):
    """Yield memoryviews covering the first n pattern bytes."""
    mv = memoryview(BLOCK)
    left = n
    off = 0
    while left:
        k = min(left, piece, len(BLOCK) - off)
        yield mv[off:off + k]
        off = (off + k) % len(BLOCK)
        left -= k


# ---------------------------------------------------------------------------
# ports, YAML
# ---------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PLAIN = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:*{}?\-]*$")


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and not s.endswith(":"):
        return s
    return json.dumps(s)


def to_yaml(obj, indent=0):
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict):
                if not v:
                    lines.append(f"{pad}{k}: {{}}")
                else:
                    lines.append(f"{pad}{k}:")
                    lines.append(to_yaml(v, indent + 1))
            elif isinstance(v, list):
                if all(not isinstance(x, (dict, list)) for x in v):
                    lines.append(f"{pad}{k}: [{', '.join(_scalar(x) for x in v)}]")
                else:
                    lines.append(f"{pad}{k}:")
                    lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                sub = to_yaml(item, indent + 1).split("\n")
                lines.append(pad + "- " + sub[0].lstrip())
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(obj))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# raw HTTP client
# ---------------------------------------------------------------------------

class IncompleteResponse(Exception):
    """The connection ended (EOF/RST) before a complete response arrived."""

    def __init__(self, msg, partial=b"", head=None):
        super().__init__(msg)
        self.partial = partial
        self.head = head


class ResponseTimeout(Exception):
    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


class HTTPResponse:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []
        self.raw_head = b""
        self.body = b""
        self.raw_body = b""
        self.chunked = False
        self.close_delimited = False
        self.trailers = []
        self.body_len = 0
        self.body_crc = 0
        self.interim = []  # 1xx responses seen before this one

    def header(self, name, default=None):
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return default

    def headers_named(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def has_header(self, name):
        return bool(self.headers_named(name))

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"<HTTPResponse {self.status} {self.reason!r} headers={self.headers!r} body={self.body[:200]!r}>"


def _parse_head(raw):
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    status_line = lines[0]
    m = re.match(r"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", status_line)
    if not m:
        raise AssertionError(f"malformed status line from meshgate: {status_line!r}")
    headers = []
    for ln in lines[1:]:
        if not ln:
            continue
        if ":" not in ln:
            raise AssertionError(f"malformed header line from meshgate: {ln!r}")
        n, v = ln.split(":", 1)
        if n != n.strip() or not n:
            raise AssertionError(f"malformed header name from meshgate: {ln!r}")
        headers.append((n, v.strip(" \t")))
    return m.group(1), int(m.group(2)), m.group(3), headers


class Client:
    """A raw HTTP/1.1 client connection with its own read buffer, so that
    pipelined responses and exact framing can be checked."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, sock=None):
        if sock is None:
            sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    # -- low level --------------------------------------------------------
    def send(self, data, ignore_errors=False):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            if not ignore_errors:
                raise

    def _fill(self, deadline, want=65536):
        """Read more into buf. Returns False at EOF/RST. Raises
        ResponseTimeout if nothing arrived before deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResponseTimeout("timed out waiting for data", bytes(self.buf))
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(max(want, 65536))
        except socket.timeout:
            raise ResponseTimeout("timed out waiting for data", bytes(self.buf))
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _take(self, n):
        d = bytes(self.buf[:n])
        del self.buf[:n]
        return d

    def _read_line(self, deadline, what):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                return self._take(i + 1)
            if not self._fill(deadline):
                raise IncompleteResponse(f"EOF while reading {what}", bytes(self.buf))

    # -- responses ----------------------------------------------------------
    def read_head(self, timeout=10.0):
        """Read one response head (status line + fields). Returns
        (version, status, reason, headers, raw_head)."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                raw = self._take(i + 4)
                v, s, r, h = _parse_head(raw[:-4])
                return v, s, r, h, raw
            if len(self.buf) > 1 << 20:
                raise AssertionError("response head larger than 1 MiB")
            if not self._fill(deadline):
                raise IncompleteResponse("EOF before a complete response head", bytes(self.buf))

    def read_response(self, method="GET", timeout=10.0, keep_body=True, skip_interim=True,
                      max_keep=64 << 20):
        deadline = time.monotonic() + timeout
        resp = HTTPResponse()
        while True:
            v, s, r, h, raw = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= s < 200 and s != 101 and skip_interim:
                resp.interim.append((s, r, h))
                continue
            break
        resp.version, resp.status, resp.reason, resp.headers, resp.raw_head = v, s, r, h, raw
        if method == "HEAD" or 100 <= s < 200 or s in (204, 304):
            return resp
        te = resp.headers_named("transfer-encoding")
        cl = resp.headers_named("content-length")
        if te and cl:
            raise AssertionError(f"meshgate sent both Transfer-Encoding and Content-Length: {resp!r}")
        body = bytearray()
        crc = 0
        total = 0

        def consume(data):
            nonlocal crc, total
            crc = zlib.crc32(data, crc)
            total += len(data)
            if keep_body and len(body) < max_keep:
                body.extend(data)

        if te:
            if len(te) != 1 or te[0].lower() != "chunked":
                raise AssertionError(f"meshgate sent Transfer-Encoding {te!r}")
            resp.chunked = True
            raw_body = bytearray()
            while True:
                line = self._read_line(deadline, "chunk size")
                raw_body += line
                if not line.endswith(b"\r\n"):
                    raise AssertionError(f"chunk-size line not CRLF-terminated: {line!r}")
                size_txt = line[:-2].split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]+", size_txt):
                    raise AssertionError(f"bad chunk size line from meshgate: {line!r}")
                size = int(size_txt, 16)
                if size == 0:
                    break
                left = size
                while left:
                    if not self.buf and not self._fill(deadline):
                        raise IncompleteResponse("EOF inside chunk data", bytes(body), resp)
                    k = min(left, len(self.buf))
                    piece = self._take(k)
                    if len(raw_body) < (1 << 20):
                        raw_body += piece
                    consume(piece)
                    left -= k
                while len(self.buf) < 2:
                    if not self._fill(deadline):
                        raise IncompleteResponse("EOF after chunk data", bytes(body), resp)
                crlf = self._take(2)
                raw_body += crlf
                if crlf != b"\r\n":
                    raise AssertionError(f"chunk data not followed by CRLF: {crlf!r}")
            while True:
                line = self._read_line(deadline, "trailer")
                raw_body += line
                if line == b"\r\n":
                    break
                resp.trailers.append(line)
            resp.raw_body = bytes(raw_body)
        elif cl:
            if len(set(cl)) != 1 or not re.fullmatch(r"\d+", cl[0]):
                raise AssertionError(f"bad Content-Length from meshgate: {cl!r}")
            left = int(cl[0])
            while left:
                if not self.buf and not self._fill(deadline, min(left, 1 << 20)):
                    raise IncompleteResponse(
                        f"EOF with {left} of {cl[0]} body bytes missing", bytes(body), resp)
                k = min(left, len(self.buf))
                consume(self._take(k))
                left -= k
        else:
            resp.close_delimited = True
            while True:
                if self.buf:
                    consume(self._take(len(self.buf)))
                if not self._fill(deadline, 1 << 20):
                    break
        resp.body = bytes(body)
        resp.body_len = total
        resp.body_crc = crc
        return resp

    def wait_closed(self, timeout=5.0):
        """True once the peer closed (EOF or RST) within timeout. Any data
        still arriving is kept in self.extra."""
        self.extra = bytes(self.buf)
        self.buf.clear()
        if self.eof:
            return True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                self.eof = True
                self.reset = True
                return True
            except OSError:
                return True
            if not d:
                self.eof = True
                return True
            self.extra += d

    def is_open(self, wait=0.3):
        """True if the connection shows no EOF within `wait` seconds."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            self.sock.setblocking(False)
            d = self.sock.recv(65536, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)
        return bool(d)

    def request(self, method="GET", path="/", headers=None, body=None, host="test",
                version="HTTP/1.1", timeout=10.0):
        self.send(build_request(method, path, headers, body, host, version))
        return self.read_response(method=method, timeout=timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def build_request(method="GET", path="/", headers=None, body=None, host="test",
                  version="HTTP/1.1"):
    lines = [f"{method} {path} {version}"]
    hdrs = list(headers or [])
    names = {n.lower() for n, _ in hdrs}
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    for n, v in hdrs:
        lines.append(f"{n}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def chunked_body(pieces, ext=None, trailers=None):
    out = bytearray()
    for p in pieces:
        out += f"{len(p):x}".encode()
        if ext:
            out += ext.encode()
        out += b"\r\n" + p + b"\r\n"
    out += b"0"
    if ext:
        out += ext.encode()
    out += b"\r\n"
    for n, v in (trailers or []):
        out += f"{n}: {v}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def http_request(port, method="GET", path="/", headers=None, body=None, host="test",
                 timeout=10.0, version="HTTP/1.1"):
    """One request on a fresh connection; returns the response."""
    with Client(port, timeout=timeout) as c:
        return c.request(method, path, headers, body, host, version, timeout)


def admin_get(port, path, timeout=5.0):
    """GET on the admin API. Returns (status, parsed JSON or None, response)."""
    r = http_request(port, "GET", path, headers=[("Connection", "close")], host="admin",
                     timeout=timeout)
    data = None
    try:
        data = r.json()
    except Exception:
        pass
    return r.status, data, r


class KeepAliveLoad:
    """GET `path` over one keep-alive connection in a thread for at most
    `seconds`, collecting each response status (or the exception that
    ended the loop) in .results. Use: with KeepAliveLoad(port, "/x", 3) as l:"""

    def __init__(self, port, path, seconds):
        self.port, self.path, self.seconds = port, path, seconds
        self.results = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        deadline = time.monotonic() + self.seconds
        req = f"GET {self.path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()
        with Client(self.port) as c:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    c.send(req)
                    self.results.append(c.read_response().status)
                except Exception as e:  # noqa: BLE001 - recorded, ends the loop
                    self.results.append(repr(e))
                    return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.thread.join(self.seconds + 2)
        self.stop.set()

    def failures(self):
        return [s for s in self.results if s != 200]


def wait_until(pred, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def connect_refused(port, timeout=1.0):
    """True if a TCP connect to port is refused (or reset immediately)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# ---------------------------------------------------------------------------
# upstream servers
# ---------------------------------------------------------------------------

class UpstreamRequest:
    def __init__(self):
        self.method = self.target = self.version = None
        self.headers = []
        self.raw_head = b""
        self.body = b""            # kept when small (<= 1 MiB)
        self.raw_body = b""        # framing bytes as received, when small
        self.body_len = 0
        self.body_crc = 0
        self.chunked = False
        self.chunk_sizes = []
        self.chunk_ext_seen = False
        self.trailers = []
        self.conn_id = None
        self.index_on_conn = 0
        self.received_at = 0.0
        self.path = ""
        self.query = {}

    def header(self, name, default=None):
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return default

    def headers_named(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def q(self, key, default=None):
        v = self.query.get(key)
        return v[0] if v else default

    def describe(self):
        return {
            "method": self.method,
            "target": self.target,
            "path": self.path,
            "version": self.version,
            "headers": [[n, v] for n, v in self.headers],
            "body_len": self.body_len,
            "body_crc32": self.body_crc,
            "body_sha256": hashlib.sha256(self.body).hexdigest() if self.body_len == len(self.body) else None,
            "chunked": self.chunked,
            "chunk_ext_seen": self.chunk_ext_seen,
            "trailers": self.trailers,
            "raw_body": self.raw_body.decode("latin-1") if len(self.raw_body) <= 65536 else None,
            "conn_id": self.conn_id,
            "index_on_conn": self.index_on_conn,
            "raw_head": self.raw_head.decode("latin-1"),
        }


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.rbuf = bytearray(1 << 20)

    def fill(self):
        n = self.sock.recv_into(self.rbuf)
        if n == 0:
            return False
        self.buf += memoryview(self.rbuf)[:n]
        return True

    def read_until(self, sep, limit):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                d = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return d
            if len(self.buf) > limit:
                raise ValueError("too long")
            if not self.fill():
                return None

    def read_stream(self, n, sink):
        """Pass exactly n bytes to sink(memoryview). False on EOF."""
        if self.buf:
            k = min(n, len(self.buf))
            sink(memoryview(bytes(self.buf[:k])))
            del self.buf[:k]
            n -= k
        while n:
            want = min(n, len(self.rbuf))
            got = self.sock.recv_into(self.rbuf, want)
            if got == 0:
                return False
            sink(memoryview(self.rbuf)[:got])
            n -= got
        return True


class UpstreamCtx:
    """Per-connection context passed to handlers."""

    def __init__(self, server, sock, conn_id):
        self.server = server
        self.sock = sock
        self.conn_id = conn_id
        self.closed = threading.Event()

    def send(self, data):
        self.sock.sendall(data)

    def reset(self):
        """Close with RST."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class Upstream:
    """Threaded raw HTTP/1.1 upstream.

    handler(ctx, req) -> bool (keep the connection open). The default handler
    is `echo_handler`. Requests are fully read (body streamed and
    checksummed) before the handler runs; `pause_ms` / `pause_after` query
    parameters make the reader stall mid-body (upload backpressure tests).
    """

    def __init__(self, handler=None, backlog=128, name="upstream"):
        self.name = name
        self.handler = handler or echo_handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.requests = []
        self.heads = []            # requests whose head arrived (body maybe not yet)
        self.conns = {}            # conn_id -> UpstreamCtx
        self.next_id = 1
        self.errors = []
        self.stopping = False
        self.cond = threading.Condition(self.lock)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except OSError:
                break
            with self.lock:
                cid = self.next_id
                self.next_id += 1
                ctx = UpstreamCtx(self, s, cid)
                self.conns[cid] = ctx
            threading.Thread(target=self._serve, args=(ctx,), daemon=True).start()

    @property
    def conn_count(self):
        with self.lock:
            return len(self.conns)

    def conn_ids(self):
        with self.lock:
            return [r.conn_id for r in self.requests]

    def wait_requests(self, n, timeout=5.0):
        with self.cond:
            self.cond.wait_for(lambda: len(self.requests) >= n, timeout)
            return len(self.requests) >= n

    def wait_heads(self, n, timeout=5.0):
        with self.cond:
            self.cond.wait_for(lambda: len(self.heads) >= n, timeout)
            return len(self.heads) >= n

    def _serve(self, ctx):
        s = ctx.sock
        rd = _Reader(s)
        idx = 0
        try:
            while not self.stopping:
                req = self._read_request(rd, ctx, idx)
                if req is None:
                    break
                idx += 1
                with self.cond:
                    self.requests.append(req)
                    self.cond.notify_all()
                keep = self.handler(ctx, req)
                if not keep:
                    break
        except (OSError, ValueError) as e:
            with self.lock:
                self.errors.append(repr(e))
        finally:
            ctx.closed.set()
            try:
                s.close()
            except OSError:
                pass

    def _read_request(self, rd, ctx, idx):
        raw = rd.read_until(b"\r\n\r\n", 1 << 20)
        if raw is None:
            return None
        req = UpstreamRequest()
        req.received_at = time.monotonic()
        req.conn_id = ctx.conn_id
        req.index_on_conn = idx
        req.raw_head = raw
        lines = raw[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise ValueError(f"bad request line {lines[0]!r}")
        req.method, req.target, req.version = parts
        u = urlsplit(req.target)
        req.path = u.path
        req.query = parse_qs(u.query)
        for ln in lines[1:]:
            n, v = ln.split(":", 1)
            req.headers.append((n, v.strip(" \t")))
        with self.cond:
            self.heads.append(req)
            self.cond.notify_all()

        pause_ms = int(req.q("pause_ms", "0"))
        pause_after = int(req.q("pause_after", "0"))
        keep_limit = 1 << 20
        body = bytearray()
        state = {"crc": 0, "len": 0, "paused": pause_ms == 0}

        def sink(mv):
            state["crc"] = zlib.crc32(mv, state["crc"])
            state["len"] += len(mv)
            if len(body) < keep_limit:
                body.extend(mv[:keep_limit - len(body)])
            if not state["paused"] and state["len"] >= pause_after:
                state["paused"] = True
                time.sleep(pause_ms / 1000.0)

        te = req.headers_named("transfer-encoding")
        cl = req.headers_named("content-length")
        if te and te[-1].lower().endswith("chunked"):
            req.chunked = True
            raw_body = bytearray()
            while True:
                line = rd.read_until(b"\r\n", 65536)
                if line is None:
                    raise ValueError("EOF in chunked body")
                if len(raw_body) < keep_limit:
                    raw_body += line
                if b";" in line:
                    req.chunk_ext_seen = True
                size = int(line[:-2].split(b";")[0].strip(), 16)
                req.chunk_sizes.append(size)
                if size == 0:
                    break

                def csink(mv):
                    if len(raw_body) < keep_limit:
                        raw_body.extend(mv)
                    sink(mv)
                if not rd.read_stream(size, csink):
                    raise ValueError("EOF in chunk data")
                crlf = rd.read_until(b"\r\n", 2)
                if crlf != b"\r\n":
                    raise ValueError(f"chunk data not followed by CRLF: {crlf!r}")
                if len(raw_body) < keep_limit:
                    raw_body += crlf
            while True:
                line = rd.read_until(b"\r\n", 65536)
                if line is None:
                    raise ValueError("EOF in trailers")
                if len(raw_body) < keep_limit:
                    raw_body += line
                if line == b"\r\n":
                    break
                req.trailers.append(line.decode("latin-1").strip())
            req.raw_body = bytes(raw_body)
        elif cl:
            n = int(cl[0])
            if not rd.read_stream(n, sink):
                raise ValueError("EOF in body")
        req.body = bytes(body)
        req.body_len = state["len"]
        req.body_crc = state["crc"]
        return req

    def close(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns.values())
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.sock.close()
            except OSError:
                pass


def send_response(ctx, status=200, headers=None, body=b"", chunked=False, head_only=False,
                  reason=None):
    reason = reason or {200: "OK", 204: "No Content", 304: "Not Modified", 404: "Not Found",
                        500: "Internal Server Error"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"]
    for n, v in (headers or []):
        lines.append(f"{n}: {v}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif status not in (204, 304) and not (100 <= status < 200):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if head_only or status in (204, 304):
        ctx.send(head)
    elif chunked:
        ctx.send(head + (chunked_body([body]) if body else b"0\r\n\r\n"))
    else:
        ctx.send(head + body)


def echo_handler(ctx, req):
    """Default upstream behaviour, driven by query parameters:
         delay_ms=N   sleep before answering
         size=N       answer N pattern bytes instead of the JSON description
         chunked=1    answer with chunked framing (size= body in 1 MiB chunks)
         status=N     status code
         close=1      add Connection: close and close afterwards
       Otherwise the body is a JSON description of the request seen."""
    delay = int(req.q("delay_ms", "0"))
    if delay:
        time.sleep(delay / 1000.0)
    status = int(req.q("status", "200"))
    close = req.q("close") == "1"
    hdrs = [("X-Upstream", ctx.server.name)]
    if close:
        hdrs.append(("Connection", "close"))
    size = req.q("size")
    chunked = req.q("chunked") == "1"
    if size is not None:
        n = int(size)
        if chunked:
            ctx.send(("HTTP/1.1 %d OK\r\nContent-Type: application/octet-stream\r\n"
                      "Transfer-Encoding: chunked\r\n%s\r\n" % (
                          status, "".join(f"{a}: {b}\r\n" for a, b in hdrs))).encode())
            if req.method != "HEAD":
                for mv in pattern_iter(n):
                    ctx.send(b"%x\r\n" % len(mv))
                    ctx.send(mv)
                    ctx.send(b"\r\n")
                ctx.send(b"0\r\n\r\n")
        else:
            ctx.send(("HTTP/1.1 %d OK\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %d\r\n%s\r\n" % (
                          status, n, "".join(f"{a}: {b}\r\n" for a, b in hdrs))).encode())
            if req.method != "HEAD":
                for mv in pattern_iter(n):
                    ctx.send(mv)
    else:
        body = json.dumps(req.describe()).encode()
        hdrs.append(("Content-Type", "application/json"))
        send_response(ctx, status, hdrs, body, chunked=chunked, head_only=req.method == "HEAD")
    return not close


# ---------------------------------------------------------------------------
# meshgate process
# ---------------------------------------------------------------------------

def read_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _descendants(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    for c in f.read().split():
                        out.append(int(c))
                        out.extend(_descendants(int(c)))
            except OSError:
                pass
    except OSError:
        pass
    return out


class Meshgate:
    def __init__(self, tmpdir, config, name="meshgate"):
        self.tmpdir = str(tmpdir)
        self.name = name
        self.config_path = os.path.join(self.tmpdir, f"{name}.yaml")
        self.proc = None
        self.stderr_lines = []
        self.stderr_lock = threading.Lock()
        self.expect_exit = False
        self.config = None
        self.write_config(config)

    # -- config -----------------------------------------------------------
    def write_config(self, config, path=None):
        path = path or self.config_path
        text = config if isinstance(config, str) else to_yaml(config) + "\n"
        if not isinstance(config, str):
            self.config = config
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    @property
    def port(self):
        lst = self.config["listen"]
        if isinstance(lst, list):
            lst = lst[0]
        return int(lst.rsplit(":", 1)[1])

    @property
    def admin_port(self):
        return int(str(self.config["admin"]).rsplit(":", 1)[1])

    # -- process ----------------------------------------------------------
    def start(self, wait=True, timeout=15.0, extra_args=()):
        if not os.path.exists(MESHGATE):
            pytest.fail(f"meshgate binary not found at {MESHGATE} (set MESHGATE)")
        args = [MESHGATE, "run", "-c", self.config_path, *extra_args]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=self.tmpdir)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _read_stderr(self):
        for line in iter(self.proc.stdout.readline, b""):
            with self.stderr_lock:
                self.stderr_lines.append(line.decode("utf-8", "replace"))
                if len(self.stderr_lines) > 200000:
                    del self.stderr_lines[:100000]

    def stderr_text(self):
        with self.stderr_lock:
            return "".join(self.stderr_lines)

    def stderr_tail(self, n=60):
        with self.stderr_lock:
            return "".join(self.stderr_lines[-n:])

    def wait_stderr(self, pattern, timeout=5.0, start=0):
        rx = re.compile(pattern)

        def found():
            with self.stderr_lock:
                lines = self.stderr_lines[start:]
            return any(rx.search(l) for l in lines)
        return wait_until(found, timeout)

    def stderr_mark(self):
        with self.stderr_lock:
            return len(self.stderr_lines)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        admin = self.config.get("admin") if isinstance(self.config, dict) else None
        use_admin = admin not in (None, "off", False)
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"meshgate exited during startup rc={self.proc.returncode}\n{self.stderr_tail()}")
            try:
                if use_admin:
                    st, _, _ = admin_get(self.admin_port, "/health", timeout=1.0)
                    if st == 200 and not connect_refused(self.port):
                        return
                else:
                    if not connect_refused(self.port):
                        return
            except (OSError, IncompleteResponse, ResponseTimeout, AssertionError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"meshgate not ready after {timeout}s\n{self.stderr_tail()}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, config):
        self.write_config(config)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, sig=None, timeout=20.0):
        sig = sig or signal.SIGTERM
        self.expect_exit = True
        if not self.alive():
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"meshgate did not exit {timeout}s after signal {sig}\n{self.stderr_tail()}")

    def wait_exit(self, timeout):
        self.expect_exit = True
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        self.expect_exit = True
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)

    # -- memory -------------------------------------------------------------
    def rss_kb(self):
        tot = 0
        for p in [self.pid] + _descendants(self.pid):
            tot += read_status_kb(p, "VmRSS") or 0
        return tot

    def hwm_kb(self):
        tot = 0
        for p in [self.pid] + _descendants(self.pid):
            tot += read_status_kb(p, "VmHWM") or 0
        return tot

    # -- admin ----------------------------------------------------------------
    def admin(self, path):
        return admin_get(self.admin_port, path)

    def routes(self):
        st, data, r = self.admin("/routes")
        assert st == 200, r
        if isinstance(data, dict):
            data = data.get("routes", data)
        return data


# ---------------------------------------------------------------------------
# the seed's gateway config (examples/seed-gateway.yaml) and its local file
# ---------------------------------------------------------------------------

SEED = os.path.join(ROOT, "examples", "seed-gateway.yaml")


def seed_without(*names):
    """The seed's text minus its filter items `- name: N` for each N (each
    item is 4 lines: the name, "args:" and its two arguments)."""
    out, skip = [], 0
    for line in open(SEED).read().splitlines(keepends=True):
        if line.strip() in {f"- name: {n}" for n in names}:
            skip = 4
        if skip:
            skip -= 1
            continue
        out.append(line)
    return "".join(out)


def seed_local_yaml(port, admin_port, users, orders, workers=1, redis_port=None, zones=False, access_log=True):
    """The second file a user keeps next to the untouched seed: ports, and
    simple-discovery instances for user-service and order-service (user
    instances labelled zone: z<i> with zones=True), optionally Redis."""
    lines = [
        f"server:\n  port: {port}\n",
        f"management:\n  server:\n    port: {admin_port}\n",
        f"workers: {workers}\n",
    ]
    if not access_log:
        lines.append("access_log: off\n")
    lines.append("spring:\n")
    if redis_port:
        lines.append(f"  data:\n    redis:\n      host: 127.0.0.1\n      port: {redis_port}\n")
    lines.append("  cloud:\n    discovery:\n      client:\n        simple:\n          instances:\n")
    lines.append("            user-service:\n")
    for i, u in enumerate(users):
        lines.append(f"              - uri: http://{u.addr}\n")
        if zones:
            lines.append(f"                metadata: {{zone: z{i}}}\n")
    lines.append("            order-service:\n")
    for u in orders:
        lines.append(f"              - uri: http://{u.addr}\n")
    return "".join(lines)


def make_config(listen_port, admin_port, routes, clusters, **top):
    cfg = {
        "listen": f"127.0.0.1:{listen_port}",
        "admin": f"127.0.0.1:{admin_port}",
        "workers": top.pop("workers", 2),
        "access_log": top.pop("access_log", "stderr"),
    }
    cfg.update(top)
    cfg["routes"] = routes
    cfg["clusters"] = clusters
    return cfg


def cluster(*upstreams, **kw):
    eps = [u if isinstance(u, str) else u.addr for u in upstreams]
    c = {"endpoints": eps}
    c.update(kw)
    return c


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long streaming / reload tests (run by default)")


@pytest.fixture
def upstream_factory():
    made = []

    def make(handler=None, **kw):
        u = Upstream(handler, **kw)
        made.append(u)
        return u
    yield make
    for u in made:
        u.close()


@pytest.fixture
def upstreams(upstream_factory):
    """upstreams(name) -> an echo upstream called name."""
    return lambda name: upstream_factory(name=name)


@pytest.fixture
def echo(upstream_factory):
    return upstream_factory(name="echo")


class MeshgateFactory:
    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.made = []

    def config(self, routes=None, clusters=None, **top):
        return make_config(free_port(), free_port(), routes or [], clusters or {}, **top)

    def __call__(self, config=None, *, routes=None, clusters=None, start=True, name=None, **top):
        if config is None:
            config = self.config(routes, clusters, **top)
        m = Meshgate(self.tmpdir, config, name=name or f"mg{len(self.made)}")
        self.made.append(m)
        if start:
            m.start()
        return m

    def simple(self, upstream, path="/api/**", **top):
        """meshgate with one route `api` -> cluster `backend` -> upstream."""
        return self(routes=[{"id": "api", "path": path, "to": "backend"}],
                    clusters={"backend": cluster(upstream)}, **top)

    def cleanup(self):
        problems = []
        for m in self.made:
            if m.proc is None:
                continue
            died = m.proc.poll() is not None and not m.expect_exit
            rc = m.proc.returncode
            if m.alive():
                m.proc.send_signal(signal.SIGTERM)
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait(5)
            if died:
                problems.append(f"meshgate {m.name} died unexpectedly (rc={rc})\n{m.stderr_tail()}")
            text = m.stderr_text()
            if "AddressSanitizer" in text or "runtime error:" in text:
                problems.append(f"sanitizer report from {m.name}:\n{m.stderr_tail(200)}")
        return problems


@pytest.fixture
def mg(tmp_path):
    f = MeshgateFactory(tmp_path)
    yield f
    problems = f.cleanup()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def gw(mg, echo):
    """A running meshgate (2 workers) routing /api/** to the echo upstream."""
    m = mg.simple(echo)
    m.echo = echo
    return m


# ---------------------------------------------------------------------------
# redis-server (rate limiting, shared registry)
# ---------------------------------------------------------------------------

REDIS_SERVER = "/usr/bin/redis-server"


class Redis:
    """A real redis-server on a free port (no persistence); start() again
    after kill() restarts it empty on the same port."""
    def __init__(self, tmp_path, extra_args=()):
        self.port = free_port()
        self.dir = str(tmp_path)
        self.proc = None
        self.extra_args = list(extra_args)

    def start(self):
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", self.dir, *self.extra_args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: self.cmd("PING") in (b"+PONG", b"-NOAUTH Authentication required."), 5.0), \
            "redis-server did not start"

    def cmd(self, *args):
        """One command; the raw reply (up to 4 KiB), stripped, or None."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                out = f"*{len(args)}\r\n".encode() + b"".join(
                    f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
                s.sendall(out)
                return s.recv(4096).strip()
        except OSError:
            return None

    def query(self, *args):
        """One command, its reply parsed (bytes, int, list, None for nil;
        an error reply raises RuntimeError); None when Redis is down."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as s:
                s.sendall(f"*{len(args)}\r\n".encode() + b"".join(
                    f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args))
                f = s.makefile("rb")

                def read():
                    line = f.readline().rstrip(b"\r\n")
                    t, rest = line[:1], line[1:]
                    if t == b"+":
                        return rest
                    if t == b"-":
                        raise RuntimeError(rest.decode())
                    if t == b":":
                        return int(rest)
                    if t == b"$":
                        n = int(rest)
                        return None if n < 0 else f.read(n + 2)[:-2]
                    if t == b"*":
                        n = int(rest)
                        return None if n < 0 else [read() for _ in range(n)]
                    raise RuntimeError(f"bad reply {line!r}")
                return read()
        except OSError:
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self):
        self.kill()


@pytest.fixture
def redis(tmp_path):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server not installed")
    r = Redis(tmp_path)
    r.start()
    yield r
    r.stop()
