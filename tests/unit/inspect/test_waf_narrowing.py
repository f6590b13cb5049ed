"""podwall's CRS 4 alignment: narrowed 3.3.4 rules, removed rules, extra targets, paranoia-aware own layer."""

from __future__ import annotations

import pytest

from podwall.inspect.waf.crs import DEFAULT_RULES_DIR
from podwall.inspect.waf.crs4 import EXCLUDED_TARGETS, EXTRA_TARGETS, REMOVED_RULES, crs4_directives
from podwall.inspect.waf.detect import OwnDetector
from podwall.inspect.waf.engine import WafEngine
from podwall.inspect.waf.http_request import HttpRequest, HttpTransaction
from podwall.inspect.waf.narrowing import NARROWINGS, narrowing_for
from podwall.inspect.waf.signatures import SIGNATURES
from podwall.inspect.waf.targets import Target, decodings

needs_crs = pytest.mark.skipif(not DEFAULT_RULES_DIR.is_dir(), reason="Debian's modsecurity-crs is not installed")

# (rule, matched text TX.0, value MATCHED_VAR, vetoed?)
VETOES = [
    pytest.param(942440, "--", "build-2024--rc1-final", True, id="942440-slug-token"),
    pytest.param(942440, "--", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln--bmF0", True, id="942440-jwt"),
    pytest.param(942440, "--", "7--", False, id="942440-number-then-comment"),
    pytest.param(942440, "'--", "admin'--", False, id="942440-quote-comment"),
    pytest.param(942440, "/*", "x /* y */ z", False, id="942440-block-comment"),
    pytest.param(942190, "'! b", "it's 'wow'! b", True, id="942190-quote-bang-letter"),
    pytest.param(942190, '"Union J', 'the "Union Jack" flag', True, id="942190-quote-union-prose"),
    pytest.param(942190, "' union s", "1' union select 2", False, id="942190-quote-union-select"),
    pytest.param(942190, "xiif (", "taxiif (x)", True, id="942190-glued-iif"),
    pytest.param(942190, "user(", "superuser(admin)", True, id="942190-glued-user"),
    pytest.param(942190, "user(", "1 and user()", False, id="942190-user-function"),
    pytest.param(942190, "User(", "User(foo),junk", True, id="942190-user-with-argument"),
    pytest.param(942190, "user(", "user(/**/)", False, id="942190-user-comment-call"),
    pytest.param(942190, "UNION select", "O'Neil UNION selected a few", True, id="942190-union-selected"),
    pytest.param(942190, "union all select", "1 union all select@@version", False, id="942190-union-select"),
    pytest.param(942270, "union selected a from", "union selected a from b", True, id="942270-selected-prose"),
    pytest.param(942270, "union select 1 from", "1 union select 1 from t", False, id="942270-union-select-from"),
    pytest.param(942350, ";insert into", "/*';insert into t values(1)*/", True, id="942350-inside-comment"),
    pytest.param(942350, ";insert into", "1';insert into t values(1)", False, id="942350-stacked-insert"),
    pytest.param(942350, ";insert into", "/**/1;insert into t", False, id="942350-after-comment"),
    pytest.param(942360, '"CREATE A', '"CREATE A CRITTER"', True, id="942360-create-prose"),
    pytest.param(942360, "* update", "* update the docs", True, id="942360-changelog-line"),
    pytest.param(942360, '" create table', '" create table users (a int)', False, id="942360-create-table"),
    pytest.param(942360, "1 union select", "1 union select 2", False, id="942360-union-select"),
    pytest.param(942360, "select char", "x select charming", True, id="942360-char-prefix"),
    pytest.param(942360, "select char", "x select char(65)", False, id="942360-char-call"),
    pytest.param(942360, "end);", "weekend);", True, id="942360-glued-end"),
    pytest.param(942360, ", as usual from", "1), as usual from x", True, id="942360-comma-as-from"),
    pytest.param(942230, " case (", "just in case (x)", True, id="942230-case-prose"),
    pytest.param(942230, " case (", "x (case when 1 then 2 end) case (1)", False, id="942230-case-when"),
    pytest.param(942230, "having fun!", "having fun!", True, id="942230-having-prose"),
    pytest.param(942230, "having 1=1", "select a from t group by a having 1=1", False, id="942230-select-having"),
    pytest.param(942260, '"! Next s', '"Quote"! Next sentence', True, id="942260-quote-punctuation-prose"),
    pytest.param(942260, "'* foo b", "'* foo bar", True, id="942260-quote-star"),
    pytest.param(942260, "' or a=b having ", "x' or a=b having 1", False, id="942260-quote-or-having"),
    pytest.param(942260, "' like '", "x' like 'y", False, id="942260-quote-like"),
    pytest.param(942300, "or 3(", "ideas for 3(three)", True, id="942300-glued-or"),
    pytest.param(942300, "or sleep(", "1 or sleep(5)", False, id="942300-or-function"),
    pytest.param(942330, "42 ande.", "42 ande.x", True, id="942330-operator-in-word"),
    pytest.param(942330, "1' and 1.", "1' and 1.5", False, id="942330-real-operator"),
    pytest.param(941130, "7xmlns", "a7xmlns", True, id="941130-glued-xmlns"),
    pytest.param(941130, " xmlns", "<svg xmlns=x>", False, id="941130-xmlns"),
    pytest.param(941130, " pattern-x=", "a pattern-x=1", True, id="941130-pattern-not-attribute"),
    pytest.param(941130, " pattern=", "<input pattern=x>", False, id="941130-pattern-attribute"),
    pytest.param(942100, "sos", '"LIKE" this', True, id="942100-quoted-word"),
    pytest.param(942100, "sos", "a'LIKE'b", False, id="942100-quote-breakout"),
    pytest.param(942100, "1c", "2024-abcDEF--", True, id="942100-base64-token"),
    pytest.param(942100, "1c", "1--", False, id="942100-number-comment"),
    pytest.param(942100, "sos", '/s?q="MOD"&view=all&page=2', True, id="942100-quoted-operator-in-url"),
    pytest.param(942100, "s&s", "x' or '1", False, id="942100-tautology"),
]


@pytest.mark.parametrize(("rule", "matched", "value", "vetoed"), VETOES)
def test_narrowings_drop_only_the_shapes_crs4_stopped_flagging(
    rule: int, matched: str, value: str, vetoed: bool
) -> None:
    """Each narrowing vetoes the benign shape CRS 4 no longer matches and keeps the injection shape."""
    narrowing = narrowing_for(rule)
    assert narrowing is not None and narrowing.reason
    assert narrowing.veto(matched, value) is vetoed


def test_rules_without_narrowing_are_left_alone() -> None:
    """A CRS rule podwall does not narrow has no narrowing, and every narrowing names its reason."""
    assert narrowing_for(942150) is None
    assert all(n.rule_id == rule and n.reason for rule, n in NARROWINGS.items())


def test_crs4_directives_remove_and_widen() -> None:
    """The directives remove the rules CRS 4 deleted and add XML attributes and CRS 4's extra variables."""
    text = crs4_directives()
    assert all(f"SecRuleRemoveById {rule}" in text for rule in REMOVED_RULES)
    assert 'SecRuleUpdateTargetByTag "attack-sqli" "XML://@*"' in text
    assert all(f"SecRuleUpdateTargetById {rule} " in text for rule in EXTRA_TARGETS)
    assert all(f'SecRuleUpdateTargetById {rule} "!ARGS_NAMES:/' in text for rule in EXCLUDED_TARGETS)


@needs_crs
@pytest.mark.parametrize(
    ("query", "fired"),
    [
        pytest.param("a[b][c][d]=1", False, id="php-array-name"),
        pytest.param("a[b][c][d][e]=1", True, id="deeper-name"),
        pytest.param("x=[a][b][c]", True, id="value"),
    ],
)
def test_942431_skips_php_array_names_like_crs4(query: str, fired: bool) -> None:
    """At PL3, CRS 4's exclusion keeps PHP-style array names out of the special-character count 942431."""
    headers = (("Host", "shop.example"), ("User-Agent", "Mozilla/5.0"), ("Accept", "*/*"))
    result = WafEngine(paranoia=3, own_layer=False).inspect(
        HttpTransaction(HttpRequest("GET", f"/?{query}", "1.1", headers))
    )
    assert any(m.rule == "942431" for m in result.matches) is fired


def _post(body: bytes, content_type: str, cookie: str | None = None) -> HttpTransaction:
    headers = [("Host", "shop.example"), ("User-Agent", "Mozilla/5.0"), ("Accept", "*/*")]
    headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if cookie is not None:
        headers.append(("Cookie", cookie))
    return HttpTransaction(HttpRequest("POST", "/api", "1.1", tuple(headers), body))


@needs_crs
def test_narrowed_match_is_kept_aside_and_not_scored() -> None:
    """A JWT cookie fires 942440 in CRS 3.3.4: podwall keeps it in `narrowed`, off the matches and the score."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYmMifQ.AbC--dEf-gh"
    txn = _post(b"a=1", "application/x-www-form-urlencoded", cookie=f"session={jwt}")
    narrowed = WafEngine(paranoia=2).inspect(txn)
    raw = WafEngine(paranoia=2, narrow_crs=False).inspect(txn)
    assert any(m.rule == "942440" for m in raw.matches)
    assert not any(m.rule == "942440" for m in narrowed.matches)
    assert [m.rule for m in narrowed.narrowed] == ["942440"] and narrowed.narrowed[0].narrowed_by
    assert narrowed.crs_score == raw.crs_score - narrowed.narrowed[0].score
    assert narrowed.category_score("sqli") < raw.category_score("sqli")


@needs_crs
def test_crs_inspects_xml_attributes_and_blocked_as_needs_the_category() -> None:
    """SQLi in an XML attribute value fires CRS rules located at XML://@*; blocked_as names the category."""
    body = b'<?xml version="1.0"?><q><item id="1 union select password from users"/></q>'
    result = WafEngine(paranoia=1, own_layer=False).inspect(_post(body, "application/xml"))
    assert any(m.source == "crs" and m.location == "XML://@*" and m.category == "sqli" for m in result.matches)
    assert result.blocked_as("sqli") and not result.blocked_as("xss")
    assert result.category_score("sqli") >= result.threshold


def test_own_signatures_follow_the_paranoia_level() -> None:
    """A signature runs only when the detector's paranoia level reaches the signature's."""
    noisy = [s for s in SIGNATURES if s.paranoia > 1]
    assert noisy, "no signature above paranoia level 1"
    low, high = OwnDetector(paranoia=1), OwnDetector(paranoia=4)
    assert {s.name for s in noisy}.isdisjoint(s.name for s in low.signatures)
    assert {s.name for s in noisy} <= {s.name for s in high.signatures}
    value = Target("ARGS:q", r"abc\x27def")
    assert not any(h.id.endswith("escaped-meta") for h in low.inspect_value(value))
    assert any(h.id.endswith("escaped-meta") for h in high.inspect_value(value))


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        pytest.param("%u003Cscript%u003E", "<script>", id="percent-u"),
        pytest.param("\uff1cscript\uff1e", "<script>", id="fullwidth"),
    ],
)
def test_decodings_read_iis_escapes_and_fullwidth_forms(value: str, decoded: str) -> None:
    """IIS `%uXXXX` escapes and fullwidth characters decode to the ASCII an attacker means."""
    assert decodings(value)[0] == decoded
