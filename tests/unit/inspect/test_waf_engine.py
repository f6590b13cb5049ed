"""The WAF engine: ModSecurity + CRS driven without a web server, podwall's layer, verdicts and findings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.inspect.findings import Action, FindingKind
from podwall.inspect.waf.crs import DEFAULT_RULES_DIR, DEFAULT_SETUP, WafConfigError, locate_crs
from podwall.inspect.waf.engine import MAX_MATCH, WafEngine
from podwall.inspect.waf.http_request import parse_http

pytestmark = pytest.mark.skipif(not DEFAULT_RULES_DIR.is_dir(), reason="Debian's modsecurity-crs is not installed")

HDRS = b"Host: shop.example\r\nUser-Agent: Mozilla/5.0\r\nAccept: text/html\r\n"


@pytest.fixture(scope="module")
def engine() -> WafEngine:
    return WafEngine(paranoia=1, threshold=5)


def _get(target: str, extra: bytes = b"") -> bytes:
    return b"GET " + target.encode() + b" HTTP/1.1\r\n" + HDRS + extra + b"\r\n"


def test_plain_get_passes_with_score_zero(engine: WafEngine) -> None:
    """An ordinary GET has no match, score 0 and verdict pass."""
    result = engine.inspect_raw(_get("/products/42?page=2&sort=price"))
    assert result.matches == []
    assert result.anomaly_score == 0
    assert result.verdict == "pass"


ATTACKS = [
    pytest.param(_get("/item?id=1'%20OR%201=1--"), "942", "sqli", "ARGS:id", id="sqli-query-arg"),
    pytest.param(_get("/search?q=%3Cscript%3Ealert(1)%3C/script%3E"), "941", "xss", "ARGS:q", id="xss-script-tag"),
    pytest.param(
        b"POST /login HTTP/1.1\r\n"
        + HDRS
        + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 25\r\n\r\n"
        b"user=admin'--&password=xx",
        "942",
        "sqli",
        "ARGS:user",
        id="sqli-form-body",
    ),
]


@pytest.mark.parametrize(("raw", "family", "category", "location"), ATTACKS)
def test_attacks_block_with_crs_rule_family(
    engine: WafEngine, raw: bytes, family: str, category: str, location: str
) -> None:
    """A classic injection is blocked, CRS's rule family fires and podwall names the category and place."""
    result = engine.inspect_raw(raw)
    assert result.verdict == "block"
    assert result.anomaly_score >= engine.threshold
    crs = [m for m in result.matches if m.source == "crs"]
    assert any(m.rule.startswith(family) and m.category == category for m in crs)
    assert any(m.location == location for m in crs)


def test_paranoia_level_changes_which_rules_fire() -> None:
    """A CRS rule of paranoia level 2 is silent at level 1 and fires at level 2 (CRS alone)."""
    raw = _get("/get?a=11!=11")
    low = WafEngine(paranoia=1, own_layer=False).inspect_raw(raw)
    high = WafEngine(paranoia=2, own_layer=False).inspect_raw(raw)
    assert not [m for m in low.matches if m.category == "sqli"]
    fired = [m for m in high.matches if m.category == "sqli"]
    assert fired and all(m.paranoia is not None and m.paranoia <= 2 for m in fired)
    assert high.crs_score > low.crs_score


def test_response_leak_is_checked(engine: WafEngine) -> None:
    """A response that leaks a SQL error fires a RESPONSE-95x rule, the outbound score and a block."""
    body = b"<html>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server</html>"
    raw = (
        _get("/item?id=7")
        + b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % (len(body))
        + body
    )
    result = engine.inspect_raw(raw)
    leaks = [m for m in result.matches if m.response]
    assert leaks and all(m.rule.startswith("95") and m.category == "leakage" for m in leaks)
    assert result.outbound_score >= engine.outbound_threshold
    assert result.verdict == "block"
    assert result.l7["status"] == 500
    assert {f.direction for f in result.findings() if f.id == leaks[0].id} == {Direction.S2C}


OWN = [
    pytest.param(_get("/api/1%20UNION%20SELECT%20password%20FROM%20users"), "REQUEST_FILENAME", "sqli", id="sqli-path"),
    pytest.param(_get("/", b"X-Forwarded-For: <svg/onload=alert(1)>\r\n"), "REQUEST_HEADERS:X-Forwarded-For", "xss",
                 id="xss-custom-header"),
    pytest.param(_get("/", b"Cookie: sid=1' or sleep(5)#\r\n"), "REQUEST_COOKIES:sid", "sqli", id="sqli-cookie"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "location", "category"), OWN)
def test_own_layer_flags_with_podwall_ids(engine: WafEngine, raw: bytes, location: str, category: str) -> None:
    """podwall's layer reports its hits with ids in its own range, a category and the location."""
    result = engine.inspect_raw(raw)
    own = [m for m in result.matches if m.source == "podwall" and m.location == location]
    assert own, [(m.id, m.location) for m in result.matches]
    assert all(m.id.startswith(f"waf.podwall.{m.category}.") for m in own)
    assert category in {m.category for m in own}
    assert result.verdict == "block"


def test_high_threshold_lets_a_match_pass() -> None:
    """The verdict follows the threshold: a match below it is reported but passes."""
    result = WafEngine(threshold=1000).inspect_raw(_get("/item?id=1'%20OR%201=1--"))
    assert result.matches
    assert result.verdict == "pass"
    assert {f.action for f in result.findings()} == {Action.ALERT}


def test_findings_carry_ids_context_and_clipped_match(engine: WafEngine) -> None:
    """Findings are kind waf, with CRS/podwall ids, the HTTP context, a location and a match of at most 120 chars."""
    payload = "1'%20OR%201=1--" + "A" * 300
    findings = engine.inspect_raw(_get(f"/item?id={payload}")).findings(ts=12.5, frame=3)
    ids = {f.id for f in findings}
    assert any(i.startswith("waf.crs.942") for i in ids)
    assert "waf.podwall.sqli.libinjection" in ids
    for f in findings:
        assert f.kind is FindingKind.WAF
        assert f.action is Action.DENY
        assert f.l7 == {"method": "GET", "path": "/item", "host": "shop.example"}
        assert f.match is not None and len(f.match) <= MAX_MATCH
        assert f.location and (f.ts, f.frame) == (12.5, 3)


def test_inspect_events_uses_dpi_fields(engine: WafEngine) -> None:
    """The DPI's HTTP request event (headers and body included) is enough to inspect a transaction."""
    event = L7Event(
        "http",
        "request",
        Direction.C2S,
        {
            "method": "POST",
            "path": "/comment",
            "version": "1.1",
            "host": "blog",
            "headers": [("host", "blog"), ("content-type", "application/json"), ("user-agent", "x")],
            "body": b'{"text": "<img src=x onerror=alert(1)>"}',
        },
    )
    result = engine.inspect_events(event)
    assert "xss" in result.categories()
    assert any(m.location == "ARGS:json.text" for m in result.matches)
    assert result.verdict == "block"


def test_rules_load_once_and_engine_is_reusable(engine: WafEngine) -> None:
    """One engine inspects many transactions; results do not leak from one to the next."""
    attack = engine.inspect_raw(_get("/item?id=1'%20OR%201=1--"))
    clean = engine.inspect_raw(_get("/"))
    assert attack.verdict == "block" and clean.verdict == "pass" and clean.anomaly_score == 0
    assert engine.modsec.load.rule_count > 500


@pytest.mark.parametrize(("kwargs", "needle"), [
    pytest.param({"paranoia": 5}, "paranoia level 5", id="paranoia"),
    pytest.param({"threshold": 0}, "threshold 0", id="threshold"),
])  # fmt: skip
def test_bad_settings_are_rejected(kwargs: dict[str, int], needle: str) -> None:
    """Out-of-range settings raise WafConfigError naming the setting."""
    with pytest.raises(WafConfigError, match=needle):
        WafEngine(paranoia=kwargs.get("paranoia", 1), threshold=kwargs.get("threshold", 5))


def test_missing_rule_set_is_a_clear_error(tmp_path: Path) -> None:
    """Without CRS files the error names the folder and how to fix it."""
    with pytest.raises(WafConfigError, match="modsecurity-crs"):
        locate_crs(tmp_path / "none", DEFAULT_SETUP)


def test_unloadable_rule_file_is_skipped_with_reason(tmp_path: Path) -> None:
    """A rule file needing a missing feature is skipped with a warning; the rest still works."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for f in DEFAULT_RULES_DIR.iterdir():
        os.symlink(f, rules / f.name)
    (rules / "REQUEST-950-ZZZ-BROKEN.conf").write_text("SecNoSuchDirective On\n")
    engine = WafEngine(crs=locate_crs(rules, DEFAULT_SETUP))
    skipped = [w for w in engine.warnings if "REQUEST-950-ZZZ-BROKEN.conf" in w]
    assert len(skipped) == 1
    assert engine.inspect_raw(_get("/item?id=1'%20OR%201=1--")).verdict == "block"


def test_parse_then_inspect_matches_inspect_raw(engine: WafEngine) -> None:
    """inspect_raw is parse_http followed by inspect."""
    raw = _get("/search?q=%3Cscript%3E")
    assert engine.inspect_raw(raw).to_dict() == engine.inspect(parse_http(raw)).to_dict()


@pytest.mark.parametrize(("content_type", "verdict"), [
    pytest.param("application/grpc", "pass", id="grpc-allowed"),
    pytest.param("application/x-unheard-of", "block", id="unknown-type-blocked"),
])  # fmt: skip
def test_service_content_types_are_allowed(engine: WafEngine, content_type: str, verdict: str) -> None:
    """gRPC/protobuf bodies pass CRS's content-type policy (920420); unknown types still do not."""
    from podwall.inspect.waf.http_request import HttpRequest, HttpTransaction

    headers = (("host", "svc"), ("content-type", content_type), ("user-agent", "grpc-go/1.60"))
    req = HttpRequest("POST", "/greet.Greeter/SayHello", "2.0", headers, b"\x00\x00\x00\x00\x05hello")
    result = engine.inspect(HttpTransaction(req))
    assert result.verdict == verdict
    assert ("waf.crs.920420" in {m.id for m in result.matches}) == (verdict == "block")
