"""L7 matchers compiled once per rule: does one request satisfy a rule's `l7` block, and if not, why.

A request (see `podwall.policy.l7context`) is admitted when the `l7` section of its protocol
exists and every constraint of that section holds: within a list any entry may match (OR),
across lists all must (AND), and every header test must hold. gRPC calls are judged by the
`grpc` section, or by `http` when the rule has no `grpc` section (a gRPC call is an HTTP/2
POST to /<service>/<method>). SQL requests are admitted when every statement kind they carry
is listed. HTTP paths are compared without their query string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from podwall.policy.l7context import TRUNCATED
from podwall.policy.l7model import HeaderMatch, HttpMatch, L7Match, PathMatch
from podwall.policy.specs import name_matches

Request = Mapping[str, object]
MAX_SHOWN = 80  # characters of a request value quoted in explanations


def _path_test(p: PathMatch) -> Callable[[str], bool]:
    if p.exact is not None:
        exact = p.exact
        return lambda v: v == exact
    if p.prefix is not None:
        prefix = p.prefix
        return lambda v: v.startswith(prefix)
    rx = re.compile(p.regex or "")
    return lambda v: rx.fullmatch(v) is not None


def _header_test(h: HeaderMatch) -> Callable[[tuple[tuple[str, str], ...]], bool]:
    name = h.name.lower()
    if h.value is not None:
        value = h.value
        return lambda hs: any(n == name and v == value for n, v in hs)
    if h.regex is not None:
        rx = re.compile(h.regex)
        return lambda hs: any(n == name and rx.fullmatch(v) is not None for n, v in hs)
    return lambda hs: any(n == name for n, _ in hs)


def _str(req: Request, key: str) -> str | None:
    value = req.get(key)
    return value if isinstance(value, str) else None


def _show(value: str | None) -> str:
    if value is None:
        return "none"
    return value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "…"


def describe(req: Request) -> str:
    """A short description of a request for explanations: `GET /api (shop.example)`, `redis GET`, ..."""
    proto = req.get("protocol")
    if proto == "http":
        host = _str(req, "host")
        text = f"HTTP {_str(req, 'method') or '?'} {_show(_str(req, 'path'))}"
        return f"{text} (host {host})" if host else text
    if proto == "grpc":
        return f"gRPC {_str(req, 'service') or '?'}/{_str(req, 'method') or '?'}"
    if proto == "dns":
        return f"DNS query {_show(_str(req, 'name'))}"
    if proto == "redis":
        return f"Redis {_str(req, 'command') or '?'}"
    if proto == "sql":
        kinds = req.get("kinds")
        kind_text = ", ".join(str(k) for k in kinds) if isinstance(kinds, tuple | list) else "?"
        return f"SQL {kind_text}: {_show(_str(req, 'sql'))}"
    if proto == "tls":
        return f"TLS client hello (SNI {_str(req, 'sni') or 'none'})"
    if proto == TRUNCATED:
        return "requests beyond the DPI's limit"
    return f"{proto} request"


@dataclass(frozen=True, slots=True)
class _Http:
    methods: frozenset[str]
    paths: tuple[Callable[[str], bool], ...]
    path_text: str
    hosts: tuple[str, ...]
    headers: tuple[tuple[str, Callable[[tuple[tuple[str, str], ...]], bool]], ...]

    def why_not(self, method: str | None, path: str | None, host: str | None, headers: object) -> str | None:
        if self.methods and (method or "").upper() not in self.methods:
            return f"method {method or 'none'} is not among {', '.join(sorted(self.methods))}"
        if self.paths:
            bare = (path or "").partition("?")[0]
            if not any(t(bare) for t in self.paths):
                return f"path {_show(bare)} matches none of {self.path_text}"
        if self.hosts and (host is None or not any(name_matches(p, host) for p in self.hosts)):
            return f"host {host or 'none'} is not among {', '.join(self.hosts)}"
        if self.headers:
            hs = headers if isinstance(headers, tuple) else ()
            for name, test in self.headers:
                if not test(hs):
                    return f"header {name} does not match"
        return None


def _compile_http(m: HttpMatch) -> _Http:
    texts = []
    for p in m.paths:
        if p.exact is not None:
            texts.append(f"exact {p.exact}")
        elif p.prefix is not None:
            texts.append(f"prefix {p.prefix}")
        else:
            texts.append(f"regex {p.regex}")
    return _Http(
        methods=frozenset(m.methods),
        paths=tuple(_path_test(p) for p in m.paths),
        path_text=", ".join(texts),
        hosts=tuple(m.hosts),
        headers=tuple((h.name.lower(), _header_test(h)) for h in m.headers),
    )


class L7Matcher:
    """A rule's `l7` block, compiled; `why_not(request)` is None when the request is admitted."""

    __slots__ = ("_dns", "_grpc_methods", "_grpc_services", "_http", "_redis", "_sql", "_tls", "match", "sections")

    def __init__(self, match: L7Match) -> None:
        self.match = match
        self.sections = frozenset(match.sections)
        self._http = _compile_http(match.http) if match.http is not None else None
        self._grpc_services = frozenset(match.grpc.services) if match.grpc is not None else frozenset()
        self._grpc_methods = frozenset(match.grpc.methods) if match.grpc is not None else frozenset()
        self._dns = tuple(match.dns.names) if match.dns is not None else ()
        self._redis = frozenset(match.redis.commands) if match.redis is not None else frozenset()
        self._sql = frozenset(match.sql.kinds) if match.sql is not None else frozenset()
        self._tls = tuple(match.tls.sni) if match.tls is not None else ()

    def admits(self, req: Request) -> bool:
        return self.why_not(req) is None

    def why_not(self, req: Request) -> str | None:
        proto = req.get("protocol")
        if proto == TRUNCATED:
            return "the flow carried more distinct requests than the DPI keeps; the rest cannot be judged"
        if proto == "http":
            if self._http is None:
                return self._no_section("http")
            return self._http.why_not(_str(req, "method"), _str(req, "path"), _str(req, "host"), req.get("headers"))
        if proto == "grpc":
            if "grpc" in self.sections:
                service, method = _str(req, "service"), _str(req, "method")
                if self._grpc_services and service not in self._grpc_services:
                    return f"gRPC service {service or 'none'} is not among {', '.join(sorted(self._grpc_services))}"
                if self._grpc_methods and method not in self._grpc_methods:
                    return f"gRPC method {method or 'none'} is not among {', '.join(sorted(self._grpc_methods))}"
                return None
            if self._http is not None:
                return self._http.why_not(
                    _str(req, "http_method"), _str(req, "path"), _str(req, "host"), req.get("headers")
                )
            return self._no_section("grpc")
        if proto == "dns":
            if "dns" not in self.sections:
                return self._no_section("dns")
            name = _str(req, "name")
            if self._dns and (name is None or not any(name_matches(p, name) for p in self._dns)):
                return f"DNS name {_show(name)} is not among {', '.join(self._dns)}"
            return None
        if proto == "redis":
            if "redis" not in self.sections:
                return self._no_section("redis")
            command = _str(req, "command")
            if self._redis and (command or "").upper() not in self._redis:
                return f"Redis command {command or 'none'} is not among {', '.join(sorted(self._redis))}"
            return None
        if proto == "sql":
            if "sql" not in self.sections:
                return self._no_section("sql")
            kinds = req.get("kinds")
            seen = [str(k) for k in kinds] if isinstance(kinds, tuple | list) else ["other"]
            extra = [k for k in seen if k not in self._sql]
            if self._sql and extra:
                return f"SQL statement kind {', '.join(extra)} is not among {', '.join(sorted(self._sql))}"
            return None
        if proto == "tls":
            if "tls" not in self.sections:
                return self._no_section("tls")
            sni = _str(req, "sni")
            if self._tls and (sni is None or not any(name_matches(p, sni) for p in self._tls)):
                return f"TLS SNI {sni or 'none'} is not among {', '.join(self._tls)}"
            return None
        return f"its l7 matchers do not cover {proto} requests"

    def _no_section(self, proto: str) -> str:
        return f"its l7 matchers have no {proto} section (only {', '.join(sorted(self.sections))})"
