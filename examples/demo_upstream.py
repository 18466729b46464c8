#!/usr/bin/python3
"""A demo service for `make run`: answers every request with JSON that
describes what it received (which instance, method, path, headers)."""
import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-service"

    def setup(self):
        super().setup()
        # Head and body go out in two writes: without this, Nagle holds the
        # body until the proxy's delayed ACK (40 ms per request).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        out = json.dumps({
            "service": self.server.service_name,
            "instance": "%s:%d" % self.server.server_address[:2],
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body_bytes": len(body),
        }, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, fmt, *args):
        pass


def main():
    port = int(sys.argv[1])
    name = sys.argv[2] if len(sys.argv) > 2 else "user-service"
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.service_name = name
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
