"""A small HTTP service for lab pods: fixed answers by path, or a Redis command relayed to a backend.

    python -m podwall.lab.services.http_service CONFIG.json

CONFIG: {"port": 8888, "ipv6": false, "routes": {"/": {"status": 200, "body": "ok\\n",
"contentType": "text/plain"}, "/cart": {"redis": "redis:6379", "command": ["PING"]}}}.
A relayed route answers 200 with the Redis reply as text, or 502 when the backend fails, so
that a chain such as nginx -> node -> redis carries real traffic on every hop.
"""

from __future__ import annotations

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_MAX_REPLY = 1 << 20


def resp_command(args: list[str]) -> bytes:
    """A Redis command as a RESP array of bulk strings."""
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        data = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(f: Any) -> str:
    line = f.readline(_MAX_REPLY)
    if not line.endswith(b"\r\n"):
        raise ValueError("truncated reply")
    kind, body = line[:1], line[1:-2].decode(errors="replace")
    if kind in (b"+", b":"):
        return body
    if kind == b"-":
        return "ERR " + body
    if kind == b"$":
        n = int(body)
        return "(nil)" if n < 0 else f.read(n + 2)[:n].decode(errors="replace")
    if kind == b"*":
        n = int(body)
        return "\n".join(_read_reply(f) for _ in range(max(n, 0)))
    raise ValueError(f"unexpected reply type {kind!r}")


def redis_call(target: str, command: list[str], timeout: float = 3.0) -> str:
    """Send one command to host:port and return its reply as text."""
    host, _, port = target.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(resp_command(command))
        with sock.makefile("rb") as f:
            return _read_reply(f)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, dict[str, Any]] = {}
    server_version = "podwall-lab-http/1"

    def _answer(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, _MAX_REPLY))
        if route is None:
            status, body, ctype = 404, "not found\n", "text/plain"
        elif route.get("redis"):
            try:
                status, body = 200, redis_call(route["redis"], list(route.get("command") or ["PING"])) + "\n"
            except (OSError, ValueError) as exc:
                status, body = 502, f"backend {route['redis']}: {exc}\n"
            ctype = "text/plain"
        else:
            status, body, ctype = (
                route.get("status", 200),
                route.get("body", ""),
                route.get("contentType", "text/plain"),
            )
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer


class _DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m podwall.lab.services.http_service CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        config = json.load(f)
    _Handler.routes = dict(config.get("routes") or {})
    port = int(config.get("port", 8080))
    dual = bool(config.get("ipv6"))
    server = _DualStackServer(("::", port), _Handler) if dual else _Server(("0.0.0.0", port), _Handler)
    print(f"listening on port {port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
