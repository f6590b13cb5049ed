"""podwall's narrowing of Debian's CRS 3.3.4 rules that CRS 4 has since made stricter.

Debian ships CRS 3.3.4. Several of its SQLi/XSS rules match shapes that CRS 4 stopped
treating as attacks (a keyword that is only the tail or head of a longer word, `union` not
followed by SELECT, a `--` inside a JWT or URL slug, ...). podwall cannot change the 3.3.4
rule text, so it re-examines what such a rule matched: ModSecurity logs the matched text
(`TX.0`) and the value it was found in (`MATCHED_VAR`, after the rule's transformations), and
each narrowing below says when that match is one of the shapes CRS 4 no longer flags. A
vetoed match is dropped from the findings and its anomaly points are taken off the score; the
result keeps it in `narrowed` so nothing disappears silently.

Every narrowing is written for podwall from what CRS 4 changed (a word boundary added, a
chained exclusion, a stricter follow-up, a transformation), never from a test string; the few
that go beyond CRS 4 say "podwall" in their reason and are argued from SQL grammar (a keyword
that is the head of a longer word, a function that takes no argument). libinjection's weakest
verdicts (942100) go through libinjection_allow.py. Rules that CRS 4 removed outright are
removed at load time (crs4.py). Pure: strings in, decisions out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from podwall.inspect.waf.libinjection_allow import TOKEN, libinjection_benign

__all__ = ["NARROWINGS", "Narrowing", "libinjection_benign", "narrowing_for"]

Veto = Callable[[str, str], bool]  # (matched text TX.0, matched value MATCHED_VAR) -> drop the match


@dataclass(frozen=True, slots=True)
class Narrowing:
    """When a CRS 3.3.4 rule's match is a shape CRS 4 no longer flags, and why."""

    rule_id: int
    reason: str  # what CRS 4 changed, in a sentence
    veto: Veto


def _before(matched: str, value: str) -> str:
    """The character just before the matched text in the value ("" when at the start or not found)."""
    at = value.find(matched)
    return value[at - 1] if at > 0 else ""


def _is_word(ch: str) -> bool:
    return bool(ch) and (ch.isalnum() or ch == "_")


def _glued_keyword(matched: str, value: str) -> bool:
    """The match starts with a keyword that is only the tail of a longer word (`for` -> `or`, `appUser(`)."""
    return bool(matched[:1].isalpha()) and _is_word(_before(matched, value))


# --- 942440 SQL comment sequence (PL2) ------------------------------------------------------------
# CRS 4 exempts JWTs (a chained `!@rx ^ey...\.ey...\....$`) and the Facebook/Google click ids
# (942441, 942442), and later stopped matching `--` between word characters. podwall generalises
# that to every single-token value made of URL-safe/base64url characters: with no whitespace,
# quote, `#`, `*`, `;` or NUL it cannot close a string or comment out a statement, unless it ends
# in `--` (a numeric `1--` still cuts the rest of a WHERE clause).
def _veto_942440(matched: str, value: str) -> bool:
    return TOKEN.fullmatch(value) is not None and not value.endswith("--")


def _veto_942100(matched: str, value: str) -> bool:
    return libinjection_benign(matched, value)


# --- 942190 MSSQL code execution and information gathering (PL1) -----------------------------------
_QUOTE_BANG = re.compile(r"""["'`]\s*!\s*\w""")
_QUOTE_UNION = re.compile(r"""["'`];?\s*union\b""", re.I)
_UNION_SELECT = re.compile(r"union\s*(?:all|distinct|select)\b", re.I)
_GLUED_IIF = re.compile(r"\wiif\s*\(", re.I)
_UNION_THEN_SELECT = re.compile(r"union[\s\w(]*?select", re.I)
# MySQL's USER(), DATABASE(), SCHEMA(), CURRENT_USER() and CONNECTION_ID() take no argument.
_NO_ARGUMENT_CALL = re.compile(r"(?:c(?:onnection_id|urrent_user)|database|schema|user)\s*\(", re.I)


def _after(matched: str, value: str) -> str:
    """The text of the value just after the matched text ("" when not found)."""
    at = value.find(matched)
    return value[at + len(matched) :] if at >= 0 else ""


def _veto_942190(matched: str, value: str) -> bool:
    # podwall (SQL grammar): after a closed string `!` can only start `!=`, `!<`, `!>`; `'x' !word` is no SQL
    if _QUOTE_BANG.fullmatch(matched):
        return True
    # CRS 4: quote + `union` counts only when ALL, DISTINCT or SELECT follows
    if _QUOTE_UNION.match(matched):
        at = value.lower().find("union", max(value.find(matched), 0))
        return at < 0 or not _UNION_SELECT.match(value, at)
    # CRS 4 requires a non-word character before `iif(` (3.3.4 required a word character)
    if _GLUED_IIF.fullmatch(matched):
        return True
    # CRS 4 puts a word boundary before user(, database(, schema(, union ... select
    if _glued_keyword(matched, value):
        return True
    # podwall: `union ... selected` has no SELECT (the keyword is the head of a longer word)
    if _UNION_THEN_SELECT.fullmatch(matched):
        return _is_word(_after(matched, value)[:1])
    # podwall: these functions take no argument, so `User(foo)` is a name, not a call
    if _NO_ARGUMENT_CALL.fullmatch(matched):
        rest = _after(matched, value).lstrip()
        return bool(rest) and not rest.startswith((")", "/*", "--", "#"))
    return False


# --- 942270 basic UNION ... SELECT ... FROM (PL1) ---------------------------------------------------
# podwall: SELECT and FROM must be whole keywords ("... union selected a few ... from" is prose).
_UNION_SELECT_FROM = re.compile(r"union.*?select(?!\w).*?from(?!\w)", re.I | re.S)


def _veto_942270(matched: str, value: str) -> bool:
    return _UNION_SELECT_FROM.search(value) is None


# --- 942230 conditional SQL injection (PL1) ---------------------------------------------------------
_CASE_PAREN = re.compile(r"[\s()]case\s*\(", re.I)
_CASE_WHEN = re.compile(r"\bcase\s+when\b.*?\bthen\b", re.I | re.S)
_HAVING = re.compile(r"having", re.I)
_SELECT = re.compile(r"\bselect\b", re.I)


def _veto_942230(matched: str, value: str) -> bool:
    # CRS 4: CASE needs WHEN ... THEN, not just a parenthesis ("just in case (...)")
    if _CASE_PAREN.fullmatch(matched):
        return _CASE_WHEN.search(value) is None
    # CRS 4: HAVING counts only after a SELECT ("behaving badly/", "having pain!")
    if _HAVING.match(matched):
        at = value.find(matched)
        return _SELECT.search(value, 0, max(at, 0)) is None
    return False


# --- 942260 basic SQL authentication bypass 2/3 (PL2) ------------------------------------------------
# CRS 4 kept only the branches where the quote is followed by a word operator (AND/OR/LIKE/...),
# `like` + quote, and SELECT ... FROM; it dropped "quote, any punctuation, a word, a non-word, a
# word" (`"Quote"! Next sentence`) and "quote, `*`, word ..." (`'*foo bar'`).
_QUOTE_PUNCTUATION = re.compile(r"""["'`]\s*[^\w\s]""")


def _veto_942260(matched: str, value: str) -> bool:
    return _QUOTE_PUNCTUATION.match(matched) is not None


# --- 942300 MySQL comments, conditions and ch(a)r injections (PL2) ----------------------------------
def _veto_942300(matched: str, value: str) -> bool:
    # CRS 4 puts a word boundary before AND/OR/NOT/DIV/LIKE/BETWEEN and CHAR: "for 2021(" is no `or`
    return _glued_keyword(matched, value)


# --- 942350 MySQL UDF injection and other data/structure manipulation (PL1) ------------------------
# CRS 4 adds t:replaceComments: what a C comment holds (`/*';insert into ... */`) is a space to the
# rule (MySQL's own `/*! ... */` form is 942500's job). podwall re-reads the value that way with
# CRS 4's pattern (which also lists DROP and REPLACE) and drops the match when nothing is left.
_C_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
_CRS4_942350 = re.compile(
    r"create\s+function\s.+\sreturns"
    r"|;\s*?(?:alter|create|delete|desc|drop|insert|load|rename|replace|select|truncate|update)\b\s*?[\[(]?\w{2,}",
    re.I | re.S,
)


def _veto_942350(matched: str, value: str) -> bool:
    return "/*" in value and _CRS4_942350.search(_C_COMMENT.sub(" ", value)) is None


# --- 942360 concatenated basic SQL injection and SQLLFI attempts (PL1) ------------------------------
# 3.3.4 flags any value that opens with symbols or digits then a DML/DDL verb (`"CREATE A CRITTER"`,
# `1; select charming`). CRS 4's current source (regex-assembly/942360.ra, after 4.27) requires the
# statement's own shape after the verb, puts word boundaries around the verb + function branch and
# around END, and wants a quote or word character before ` as ... from`.
_LEADING_VERB = re.compile(
    r"[\W\d]+\s*?(?:alter|union|update|truncate|rename|insert|select|delete|desc|load|create)\b", re.I
)
_CRS4_LEADING_STATEMENT = re.compile(
    r"(?:json\.)?[\W\d]+\s*?(?:"
    r"create\s+(?:table|view|index|database|function|procedure|trigger|schema)\s+\w"
    r"|delete\s*.*\s+from\s+\w|desc\s+\w|drop\s+(?:table|view|index|database|trigger)\s+\w|insert\s+into\s+\w"
    r"|load\s+data\s+\w|rename\s+table\s+\w|select\s+.+\s+from|truncate\s+table\s+\w|update\s+\w+\s+set\s+\w"
    r"|union\s*(?:all|select|distinct)\b"
    r"|alter\s*(?:aggregate|application\s*role|assembly|asymmetric\s*key|audit|authorization|availability\s*group"
    r"|broker\s*priority|bufferpool|certificate|cluster|collation|column|conversion|credential"
    r"|cryptographic\s*provider|database|default|dimension|diskgroup|domain|endpoint|extension|external|event"
    r"|flashback|foreign|fulltext|function|hierarchy|group|histogram|index|indextype|inmemory|instance|java"
    r"|language|large|library|lockdown|logfile\s*group|login|mask|master\s*key|materialized|message\s*type"
    r"|method|module|nickname|operator|outline|package|partition|permission|procedure|profile|queue|remote"
    r"|resource|role|rollback|route|schema|search|security|server|service|sequence|session|symmetric\s*key"
    r"|synonym|stogroup|table|tablespace|text|threshold|trigger|trusted|type|usage|user|view|work|workload"
    r"|wrapper|xml\s*schema|xsrobject)\b)",
    re.I | re.S,
)
_VERB_FUNCTION = re.compile(
    r"(?:create|truncate|update|rename|insert|select|delete|desc|alter|load)\s+(?:group_concat|load_file|char)", re.I
)
_AS_FROM = re.compile(r"[\d\W]\s+as\b", re.I)


def _veto_942360(matched: str, value: str) -> bool:
    if _LEADING_VERB.match(matched) and value.startswith(matched):
        return _CRS4_LEADING_STATEMENT.match(value) is None
    if _VERB_FUNCTION.match(matched) or matched[:3].lower() == "end":
        at = value.find(matched)
        glued_end = matched[-1:].isalpha() and _is_word(value[at + len(matched) : at + len(matched) + 1])
        return _glued_keyword(matched, value) or (at >= 0 and glued_end)
    if _AS_FROM.match(matched):
        return matched[0] not in "\"'`" and not _is_word(matched[0])
    return False


# --- 942330 classic SQL injection probings (PL2) -----------------------------------------------------
_PROBE_OPERATOR = re.compile(r"(n(?:and|ot)|(?:x?x)?or|between|like|and|div)\s*?[\w\"'`][+&!@(),.-]$", re.I)


def _veto_942330(matched: str, value: str) -> bool:
    # CRS 4 puts word boundaries around the operator: "05111222333 andy.surname@..." has no `and`
    m = _PROBE_OPERATOR.search(matched)
    if m is None:
        return False
    start, end = m.span(1)
    return _is_word(matched[start - 1 : start]) or _is_word(matched[end : end + 1])


# --- 941130 XSS attribute vector (PL1) ----------------------------------------------------------------
_ATTRIBUTE_WORD = re.compile(r"(?:x(?:link:href|html|mlns)|data:text/html|formaction)", re.I)
_PATTERN_EQ = re.compile(r"pattern\s*=", re.I)


def _veto_941130(matched: str, value: str) -> bool:
    body = matched[1:]
    # CRS 4 requires a word boundary before xmlns/xhtml/xlink:href/data:text/html/formaction
    if _ATTRIBUTE_WORD.match(body):
        return _is_word(matched[:1])
    # CRS 4 matches `pattern` only directly before `=`
    if body.lower().startswith("pattern"):
        return _PATTERN_EQ.match(body) is None
    return False


NARROWINGS: dict[int, Narrowing] = {
    n.rule_id: n
    for n in (
        Narrowing(
            942100,
            "libinjection's weakest fingerprints on shapes that cannot be an injection (see libinjection_allow.py)",
            _veto_942100,
        ),
        Narrowing(
            942440,
            "CRS 4 exempts JWTs and click ids; podwall exempts every single URL-safe token not ending in --",
            _veto_942440,
        ),
        Narrowing(
            942190,
            "CRS 4: UNION only before ALL/DISTINCT/SELECT, keywords on a word boundary; podwall: no quote-!-word,"
            " SELECT whole, USER()/DATABASE()/SCHEMA() without argument",
            _veto_942190,
        ),
        Narrowing(942270, "podwall: SELECT and FROM must be whole keywords (not `selected`, `fromage`)", _veto_942270),
        Narrowing(942230, "CRS 4: CASE needs WHEN ... THEN and HAVING needs a preceding SELECT", _veto_942230),
        Narrowing(
            942260,
            "CRS 4 dropped the quote-punctuation-word and quote-star branches (a quote must precede an operator word)",
            _veto_942260,
        ),
        Narrowing(942300, "CRS 4: operators and CHAR( only on a word boundary", _veto_942300),
        Narrowing(942330, "CRS 4: the probing operator must be a whole word", _veto_942330),
        Narrowing(942350, "CRS 4 reads the value with C comments replaced by a space", _veto_942350),
        Narrowing(
            942360,
            "CRS 4: a leading DML/DDL verb must start its statement (CREATE TABLE x, INSERT INTO x, SELECT ... FROM),"
            " verbs, functions and END on word boundaries",
            _veto_942360,
        ),
        Narrowing(941130, "CRS 4: attribute keywords on a word boundary, `pattern` directly before =", _veto_941130),
    )
}


def narrowing_for(rule_id: int) -> Narrowing | None:
    """The narrowing podwall applies to a CRS rule, if any."""
    return NARROWINGS.get(rule_id)
