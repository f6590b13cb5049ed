"""podwall's SQL tokenizer and SQL-fragment shapes: what reads as injected SQL, and what does not."""

from __future__ import annotations

import pytest

from podwall.inspect.waf.detect import OwnDetector
from podwall.inspect.waf.http_request import HttpRequest
from podwall.inspect.waf.signatures import SIGNATURES
from podwall.inspect.waf.sqlshape import SHAPES, sql_shapes
from podwall.inspect.waf.sqltokens import tokenize


def _kinds(text: str, in_string: str = "", backslash: bool = True) -> str:
    return "".join(t.kind for t in tokenize(text, in_string, backslash_escapes=backslash))


TOKENS = [
    pytest.param("a = 'it''s'", "", True, "bos", id="doubled-quote-escape"),
    pytest.param(r"'a\'b' = 1", "", True, "son", id="backslash-escape-mysql"),
    pytest.param(r"x\' or 1=1", "'", False, "s&non", id="no-backslash-escape-standard-sql"),
    pytest.param("1/**/UNION/**/SELECT", "", True, "nkk", id="closed-comment-is-whitespace"),
    pytest.param("1 /*!50000UNION*/ SELECT", "", True, "nkk", id="mysql-versioned-comment-runs"),
    pytest.param("1 or 1=1 -- x", "", True, "n&nonc", id="line-comment"),
    pytest.param("x /* open", "", True, "bc", id="unclosed-comment"),
    pytest.param("$$body$$ || N'x'", "", True, "s&s", id="dollar-and-prefixed-strings"),
    pytest.param("`t`.[c] @> @v", "", True, "i.ijv", id="identifiers-json-operator-variable"),
    pytest.param("@@version ->> 0x1F", "", True, "vjn", id="system-variable-hex"),
    pytest.param("sleep (5) sleep", "", True, "f(n)b", id="function-needs-parenthesis"),
    pytest.param("abc' and x", "'", True, "s&b", id="starts-inside-a-string"),
]


@pytest.mark.parametrize(("text", "in_string", "backslash", "kinds"), TOKENS)
def test_tokenizer_classifies_sql(text: str, in_string: str, backslash: bool, kinds: str) -> None:
    """Strings, comments, identifiers, operators and functions get their kind letters."""
    assert _kinds(text, in_string, backslash) == kinds


def test_tokenizer_is_bounded_and_total() -> None:
    """A long or odd value yields at most max_tokens tokens and never raises."""
    assert len(tokenize("a " * 10_000, max_tokens=48)) == 48
    assert tokenize("\x00\ud800'\\") is not None
    assert tokenize("") == []


SHAPE_HITS = [
    pytest.param("x' or b notnull --", "string-break", id="break-word-operator-comment"),
    pytest.param("x' collate utf8_bin --", "string-break", id="break-collate"),
    pytest.param("x' and 1 in (select 1) --", "string-break", id="break-subquery"),
    pytest.param("x') or ('a'='a", "string-break", id="break-reopened-string"),
    pytest.param("x'; drop table users; --", "string-break", id="break-stacked-drop"),
    pytest.param(r"a@b.c\' or glob(x,y);", "string-break", id="break-after-backslash-standard-sql"),
    pytest.param("1 or '{\"a\":2}' @> '{\"a\":1}'", "json-operator", id="json-contains"),
    pytest.param("' or '{\"a\":1}'::jsonb ? 'a' --", "json-operator", id="json-cast-key-test"),
    pytest.param("or '[1,2]' < '[1,3]' = 1", "json-operator", id="json-literal-compared"),
    pytest.param("x = json_extract('{\"a\":1}', '$.a')", "json-operator", id="json-function"),
    pytest.param("1; insert into t (a) values (1)", "stacked-statement", id="stacked-insert"),
    pytest.param("1;replace/**/t/**/(a,b) values (1,'x')", "stacked-statement", id="stacked-replace-commented"),
    pytest.param("1;select pg_sleep(5)", "stacked-statement", id="stacked-select-call"),
    pytest.param("(1)::int", "type-cast", id="cast-parenthesis"),
    pytest.param("'1'::regclass", "type-cast", id="cast-string"),
]


@pytest.mark.parametrize(("value", "shape"), SHAPE_HITS)
def test_injected_sql_shapes_are_found(value: str, shape: str) -> None:
    """Injected fragments are recognised by the grammar shape they have."""
    assert shape in sql_shapes(value)


SHAPE_BENIGN = [
    pytest.param("It's a 'nice' day, isn't it?", id="prose-apostrophes"),
    pytest.param("O'Reilly and Associates", id="name-apostrophe"),
    pytest.param('He said "yes" or "no" -- maybe', id="quoted-words"),
    pytest.param('\'countdown calendar" and "disney:', id="quoted-phrases-and"),
    pytest.param('software" and "commercial documentation," as such', id="quotes-as-such"),
    pytest.param("Fixed `dpkg-deb --help' and dpkg-deb(1) from reporting --no-check", id="changelog-from"),
    pytest.param('{"name":"x","tags":["a","b"]}', id="json-value"),
    pytest.param("Settings -> 'Advanced' -> 2", id="arrows"),
    pytest.param("echo '{\"a\":1}' | jq .a", id="shell-json"),
    pytest.param("let x = '[1,2]';", id="code-json-assignment"),
    pytest.param("space = '{1,%d}' % (width - 1)", id="format-braces"),
    pytest.param("r'(HTTP)(/)(1\\.[01]|2(?:\\.0)?|3)'", id="regex"),
    pytest.param("fe80::1 and std::string", id="double-colons"),
    pytest.param("Done; select items from the list", id="prose-select"),
    pytest.param("font-family: 'Open Sans', sans-serif;", id="css"),
]


@pytest.mark.parametrize("value", SHAPE_BENIGN)
def test_benign_values_have_no_sql_shape(value: str) -> None:
    """Prose, code and data that merely contain quotes, keywords or operators are not SQL fragments."""
    assert sql_shapes(value) == []


def test_shapes_become_own_layer_hits_on_any_target() -> None:
    """The own layer reports each shape in podwall's sqli id range, in the path as in arguments."""
    detector = OwnDetector()
    req = HttpRequest(
        "GET", "/api/1%20or%20'%7B%22a%22:2%7D'%20@%3E%20'%7B%22a%22:1%7D'?q=x'%20collate%20utf8_bin%20--"
    )
    found = detector.inspect(req)
    hits = {(h.id, h.location) for h in found}
    assert ("waf.podwall.sqli.json-operator", "REQUEST_FILENAME") in hits
    assert ("waf.podwall.sqli.string-break", "ARGS:q") in hits
    # the hit carries the decoded value it was found in
    assert any("@>" in h.value for h in found if h.id.endswith(".json-operator"))
    assert all(h.category == "sqli" for h in found if h.id.rsplit(".", 1)[-1] in SHAPES)


def test_shape_names_do_not_collide_with_signature_names() -> None:
    """Shapes and signatures share the `waf.podwall.sqli.` id range, so their names must differ."""
    assert not set(SHAPES) & {s.name for s in SIGNATURES}
