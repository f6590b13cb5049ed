"""L7 matchers for each protocol, per-request semantics, flows without requests, SQL kinds and request extraction."""

from __future__ import annotations

from typing import Any

import pytest

from podwall.core.types import Direction, Observation
from podwall.dpi.base import L7Event
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.l7context import requests_of, server_name_of
from podwall.policy.sql import classify_sql, statement_kinds
from tests.unit.policy.policy_testkit import make_policy, rule, svc_grp, wl

CLIENT, SERVER = wl("client", ip="10.1.0.1"), wl("server", ip="10.1.0.2")
GROUPS = [svc_grp("client", mode="protect"), svc_grp("server", mode="protect")]


def http(method: str = "GET", path: str = "/", host: str | None = None, **headers: str) -> dict[str, Any]:
    return {"protocol": "http", "method": method, "path": path, "host": host, "headers": tuple(headers.items())}


def l7_rule(l7: dict[str, Any], rule_id: int = 1, action: str = "allow") -> dict[str, Any]:
    return {**rule(rule_id, "nv.client.demo", "nv.server.demo", action=action), "l7": l7}


def decide(rules: list[dict[str, Any]], requests: tuple[dict[str, Any], ...], app: str = "http") -> Any:
    engine = PolicyEngine(make_policy(GROUPS, rules))
    return engine.evaluate(Observation(CLIENT, SERVER, 6, 8080, app, requests))


MATCH_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("http-method", {"http": {"methods": ["get"]}}, http("GET"), True),
    ("http-method-miss", {"http": {"methods": ["GET"]}}, http("POST"), False),
    ("http-path-exact", {"http": {"paths": [{"exact": "/health"}]}}, http(path="/health?x=1"), True),
    ("http-path-exact-miss", {"http": {"paths": [{"exact": "/health"}]}}, http(path="/healthz"), False),
    ("http-path-prefix", {"http": {"paths": [{"prefix": "/api/"}]}}, http(path="/api/v1/items"), True),
    ("http-path-regex-full", {"http": {"paths": [{"regex": "/v[0-9]+"}]}}, http(path="/v2/x"), False),
    ("http-path-regex", {"http": {"paths": [{"regex": "/v[0-9]+/.*"}]}}, http(path="/v2/x"), True),
    ("http-host-wildcard", {"http": {"hosts": ["*.shop.example"]}}, http(host="eu.shop.example"), True),
    ("http-host-miss", {"http": {"hosts": ["shop.example"]}}, http(host="evil.example"), False),
    ("http-header-value", {"http": {"headers": [{"name": "X-Team", "value": "pay"}]}}, http(**{"x-team": "pay"}), True),
    ("http-header-regex", {"http": {"headers": [{"name": "x-v", "regex": "[0-9]+"}]}}, http(**{"x-v": "1a"}), False),
    ("http-header-present", {"http": {"headers": [{"name": "authorization"}]}}, http(), False),
    ("http-and-across-lists", {"http": {"methods": ["GET"], "paths": [{"prefix": "/a"}]}}, http("GET", "/b"), False),
    (
        "grpc-service",
        {"grpc": {"services": ["shop.Cart"]}},
        {"protocol": "grpc", "service": "shop.Cart", "method": "Add"},
        True,
    ),
    (
        "grpc-method-miss",
        {"grpc": {"methods": ["Get"]}},
        {"protocol": "grpc", "service": "shop.Cart", "method": "Drop"},
        False,
    ),
    (
        "grpc-by-http-section",
        {"http": {"paths": [{"prefix": "/shop.Cart/"}]}},
        {"protocol": "grpc", "service": "shop.Cart", "method": "Add", "http_method": "POST", "path": "/shop.Cart/Add"},
        True,
    ),
    (
        "dns-wildcard",
        {"dns": {"names": ["*.svc.cluster.local"]}},
        {"protocol": "dns", "name": "db.ns.svc.cluster.local"},
        True,
    ),
    ("dns-miss", {"dns": {"names": ["example.com"]}}, {"protocol": "dns", "name": "evil.com"}, False),
    ("redis-command", {"redis": {"commands": ["get", "SET"]}}, {"protocol": "redis", "command": "GET"}, True),
    ("redis-miss", {"redis": {"commands": ["GET"]}}, {"protocol": "redis", "command": "FLUSHALL"}, False),
    ("sql-kind", {"sql": {"kinds": ["select"]}}, {"protocol": "sql", "kinds": ("select",)}, True),
    ("sql-every-statement", {"sql": {"kinds": ["select"]}}, {"protocol": "sql", "kinds": ("select", "ddl")}, False),
    ("tls-sni", {"tls": {"sni": ["*.example.com"]}}, {"protocol": "tls", "sni": "api.example.com"}, True),
    ("tls-no-sni", {"tls": {"sni": ["*.example.com"]}}, {"protocol": "tls", "sni": None}, False),
    ("other-protocol-section", {"redis": {}}, http(), False),
    ("empty-section-any-request", {"redis": {}}, {"protocol": "redis", "command": "DEL"}, True),
]


@pytest.mark.parametrize(("l7", "request_", "allowed"), [c[1:] for c in MATCH_CASES], ids=[c[0] for c in MATCH_CASES])
def test_l7_matcher(l7: dict[str, Any], request_: dict[str, Any], allowed: bool) -> None:
    """Each protocol section admits exactly the requests its constraints describe."""
    verdict = decide([l7_rule(l7)], (request_,))
    assert (verdict.rule_id == 1) is allowed
    assert (verdict.action == "allow") is allowed


def test_every_request_must_be_admitted() -> None:
    """A connection is admitted only when every request is; the first request not admitted decides."""
    rules = [l7_rule({"http": {"methods": ["GET"]}})]
    verdict = decide(rules, (http("GET"), http("DELETE", "/users/1"), http("GET")))
    assert (verdict.action, verdict.rule_id) == ("deny", 0)
    l7 = verdict.explanation.to_dict()["l7"]
    assert l7["requests"] == 3
    assert [o["allowed"] for o in l7["outcomes"]] == [True, False, True]
    assert "L7 request 2 of 3 (HTTP DELETE /users/1) is not admitted" in verdict.explanation.text
    assert "method DELETE is not among GET" in verdict.explanation.text


def test_requests_admitted_by_different_rules() -> None:
    """Requests are judged one by one, so two L7 rules together admit a connection that uses both."""
    rules = [l7_rule({"http": {"methods": ["GET"]}}, 1), l7_rule({"http": {"methods": ["POST"]}}, 2)]
    verdict = decide(rules, (http("GET"), http("POST")))
    assert (verdict.action, verdict.rule_id) == ("allow", 1)
    assert [o["rule_id"] for o in verdict.explanation.to_dict()["l7"]["outcomes"]] == [1, 2]


def test_l7_deny_rule_blocks_one_request() -> None:
    """A deny rule with L7 matchers denies the connection when one request matches it."""
    rules = [l7_rule({"redis": {"commands": ["FLUSHALL"]}}, 1, "deny"), rule(2, "nv.client.demo", "nv.server.demo")]
    cmds = tuple({"protocol": "redis", "command": c} for c in ("GET", "FLUSHALL"))
    verdict = decide(rules, cmds, "redis")
    assert (verdict.action, verdict.rule_id) == ("deny", 1)
    assert decide(rules, cmds[:1], "redis").rule_id == 2


def test_no_request_means_l7_rule_does_not_match() -> None:
    """Without a parsed request an L7 rule cannot be decided: it does not match, and the explanation says why."""
    verdict = decide([l7_rule({"http": {"methods": ["GET"]}})], ())
    assert verdict.rule_id == 0
    consulted = verdict.explanation.to_dict()["rules_consulted"]
    assert consulted[0]["failed"] == ["l7"]
    assert "no L7 request was parsed" in consulted[0]["reasons"][0]


def test_no_request_falls_through_to_l3_rule() -> None:
    """When the L7 rule cannot be decided, a later L3/L4 rule still decides."""
    rules = [l7_rule({"http": {"methods": ["GET"]}}, 1), rule(2, "nv.client.demo", "nv.server.demo")]
    assert decide(rules, ()).rule_id == 2


SQL_CASES: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("select", "SELECT 1", "mysql", ("select",)),
    ("lower-whitespace", "  \n\tselect * from t", "mysql", ("select",)),
    ("block-comment", "/* hi */ INSERT INTO t VALUES (1)", "mysql", ("insert",)),
    ("line-comment", "-- note\nUPDATE t SET a = 1", "postgresql", ("update",)),
    ("hash-comment-mysql", "# note\nDELETE FROM t", "mysql", ("delete",)),
    ("hash-not-comment-pg", "SELECT 1 # 2\n; DROP TABLE t", "postgresql", ("select", "ddl")),
    ("ddl", "create table t (a int)", "mysql", ("ddl",)),
    ("truncate", "TRUNCATE t", "postgresql", ("ddl",)),
    ("with-select", "WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b", "postgresql", ("select",)),
    (
        "with-recursive-insert",
        "WITH RECURSIVE r(n) AS (VALUES (1)) INSERT INTO t SELECT n FROM r",
        "postgresql",
        ("insert",),
    ),
    ("with-modifying-cte", "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "postgresql", ("select", "delete")),
    ("stacked", "SELECT 1; DROP TABLE users", "mysql", ("select", "ddl")),
    ("semicolon-in-string", "SELECT ';DROP TABLE x'", "mysql", ("select",)),
    ("pg-backslash-literal", "SELECT 'a\\' ; DROP TABLE x", "postgresql", ("select", "ddl")),
    ("mysql-backslash-escape", "SELECT 'a\\' ; DROP TABLE x'", "mysql", ("select",)),
    ("pg-dollar-quote", "SELECT $$ ; DROP TABLE x $$", "postgresql", ("select",)),
    ("parenthesised", "(SELECT 1) UNION (SELECT 2)", "mysql", ("select",)),
    ("mysql-executable-comment", "/*!40101 SET NAMES utf8 */", "mysql", ("other",)),
    ("replace-is-insert", "REPLACE INTO t VALUES (1)", "mysql", ("insert",)),
    ("other", "SHOW TABLES", "mysql", ("other",)),
    ("empty", "  ", "mysql", ("other",)),
]


@pytest.mark.parametrize(("text", "dialect", "kinds"), [c[1:] for c in SQL_CASES], ids=[c[0] for c in SQL_CASES])
def test_sql_statement_kinds(text: str, dialect: str, kinds: tuple[str, ...]) -> None:
    """Statement kinds skip comments, strings and CTEs in the dialect's own way and report every statement."""
    assert statement_kinds(text, dialect) == kinds
    assert classify_sql(text, dialect) == kinds[0]


def test_truncated_sql_counts_as_other() -> None:
    """A truncated capture adds `other`, so a select-only rule does not admit what it cannot see."""
    assert statement_kinds("SELECT 1", truncated=True) == ("select", "other")


EVENTS: list[tuple[str, L7Event, dict[str, Any] | None]] = [
    (
        "http",
        L7Event(
            "http",
            "request",
            Direction.C2S,
            {"method": "GET", "path": "/a", "host": "Shop.Example:8080", "headers": [("X-A", "1")]},
        ),
        {"protocol": "http", "method": "GET", "path": "/a", "host": "shop.example", "headers": (("x-a", "1"),)},
    ),
    (
        "grpc",
        L7Event(
            "grpc",
            "request",
            Direction.C2S,
            {
                "service": "s.S",
                "method": "M",
                "http_method": "POST",
                "path": "/s.S/M",
                "authority": "svc:50051",
                "headers": [],
            },
        ),
        {
            "protocol": "grpc",
            "service": "s.S",
            "method": "M",
            "http_method": "POST",
            "path": "/s.S/M",
            "host": "svc",
            "headers": (),
        },
    ),
    (
        "dns",
        L7Event("dns", "query", Direction.C2S, {"qname": "Example.COM."}),
        {"protocol": "dns", "name": "example.com"},
    ),
    ("redis", L7Event("redis", "command", Direction.C2S, {"command": "get"}), {"protocol": "redis", "command": "GET"}),
    (
        "mysql",
        L7Event("mysql", "query", Direction.C2S, {"sql": "select 1", "truncated": False}),
        {"protocol": "sql", "dialect": "mysql", "sql": "select 1", "kinds": ("select",)},
    ),
    ("mysql-ping-not-request", L7Event("mysql", "command", Direction.C2S, {"command": "ping"}), None),
    (
        "tls",
        L7Event("tls", "client_hello", Direction.C2S, {"sni": "API.example.com"}),
        {"protocol": "tls", "sni": "api.example.com"},
    ),
    ("response-ignored", L7Event("http", "response", Direction.S2C, {"status": 200}), None),
    ("server-direction-ignored", L7Event("redis", "command", Direction.S2C, {"command": "GET"}), None),
]


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in EVENTS], ids=[c[0] for c in EVENTS])
def test_requests_of(event: L7Event, expected: dict[str, Any] | None) -> None:
    """Client requests of known protocols become normalised mappings; everything else is left out."""
    got = requests_of([event])
    assert got == ((expected,) if expected is not None else ())


def test_server_name_prefers_sni() -> None:
    """The server name comes from the TLS SNI first, else the first HTTP host."""
    reqs = ({"protocol": "http", "host": "a.example"}, {"protocol": "tls", "sni": "b.example"})
    assert server_name_of(reqs) == "b.example"
    assert server_name_of(reqs[:1]) == "a.example"
    assert server_name_of(()) is None
