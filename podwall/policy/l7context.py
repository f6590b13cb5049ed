"""A flow's L7 requests as policy reads them: DPI events of the client, normalised per protocol.

`requests_of` maps the client-direction `request`, `query`, `command` and `client_hello`
events of the protocols that L7 matchers know into plain mappings with a `protocol` key:

- `http`: method, path, host (lower case, no port), headers ((lower-case name, value), ...)
- `grpc`: service, method, and the HTTP fields of the call (method as `http_method`)
- `dns`: name (the query name, lower case, no trailing dot)
- `redis`: command (upper case)
- `sql`: dialect (mysql or postgresql), sql (the text), kinds (see `podwall.policy.sql`)
- `tls`: sni (lower case, or None)

Protocol-level messages that carry no statement (MySQL ping or quit, PostgreSQL terminate)
are not requests. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.policy.sql import statement_kinds

REQUEST_KINDS = frozenset({"request", "query", "command", "client_hello"})
MAX_REQUESTS = 4096  # per flow; the DPI's own caps keep real flows far below
TRUNCATED = "truncated"  # the protocol of the marker request standing for requests not kept

_HTTP_APPS = frozenset({"http", "http2"})
_SQL_APPS = {"mysql": "mysql", "postgresql": "postgresql", "mariadb": "mysql"}


def host_only(value: object) -> str | None:
    """A Host/authority value without port or trailing dot, lower case; None if absent."""
    if not isinstance(value, str) or not value:
        return None
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".") or None


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list | tuple):
        return ()
    out: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, list | tuple) and len(item) == 2:
            out.append((str(item[0]).lower(), str(item[1])))
    return tuple(out)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def request_of(event: L7Event) -> dict[str, Any] | None:
    """The policy view of one DPI event, or None when it is not a request L7 rules can judge."""
    if event.direction != Direction.C2S or event.kind not in REQUEST_KINDS:
        return None
    app, kind, f = event.app, event.kind, event.fields
    if app in _HTTP_APPS and kind == "request":
        return {
            "protocol": "http",
            "method": _text(f.get("method")),
            "path": _text(f.get("path")),
            "host": host_only(f.get("host") or f.get("authority")),
            "headers": _headers(f.get("headers")),
        }
    if app == "grpc" and kind == "request":
        return {
            "protocol": "grpc",
            "service": _text(f.get("service")),
            "method": _text(f.get("method")),
            "http_method": _text(f.get("http_method")),
            "path": _text(f.get("path")),
            "host": host_only(f.get("authority") or f.get("host")),
            "headers": _headers(f.get("headers")),
        }
    if app == "dns" and kind == "query":
        name = _text(f.get("qname"))
        return {"protocol": "dns", "name": name.lower().rstrip(".") if name is not None else None}
    if app == "redis" and kind == "command":
        command = _text(f.get("command"))
        return {"protocol": "redis", "command": command.upper() if command else None}
    if app in _SQL_APPS and kind == "query":
        sql = _text(f.get("sql")) or ""
        dialect = _SQL_APPS[app]
        kinds = statement_kinds(sql, dialect, truncated=bool(f.get("truncated")))
        return {"protocol": "sql", "dialect": dialect, "sql": sql, "kinds": kinds}
    if app == "tls" and kind == "client_hello":
        return {"protocol": "tls", "sni": host_only(f.get("sni"))}
    return None


def requests_of(events: Iterable[L7Event], truncated: bool = False) -> tuple[Mapping[str, object], ...]:
    """Every request of a flow's events in order (at most MAX_REQUESTS).

    `truncated` says the DPI saw more distinct requests than it kept: a `truncated` request
    is added, which no L7 matcher admits, so L7 rules fail closed on such a flow.
    """
    out: list[Mapping[str, object]] = []
    for event in events:
        req = request_of(event)
        if req is not None:
            out.append(req)
            if len(out) >= MAX_REQUESTS:
                truncated = True
                break
    if truncated:
        out.append({"protocol": TRUNCATED})
    return tuple(out)


def server_name_of(requests: Iterable[Mapping[str, object]]) -> str | None:
    """The first server name the requests reveal: TLS SNI, then an HTTP host."""
    fallback: str | None = None
    for req in requests:
        if req.get("protocol") == "tls" and isinstance(req.get("sni"), str):
            return str(req["sni"])
        host = req.get("host")
        if fallback is None and isinstance(host, str):
            fallback = host
    return fallback
