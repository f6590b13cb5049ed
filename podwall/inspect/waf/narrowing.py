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
chained exclusion, a stricter follow-up), never from a test string. Rules that CRS 4 removed
outright are removed at load time (crs4.py). Pure: strings in, decisions out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["NARROWINGS", "Narrowing", "libinjection_benign", "narrowing_for"]

Veto = Callable[[str, str], bool]  # (matched text TX.0, matched value MATCHED_VAR) -> drop the match

# One token of URL-safe / base64url characters: no whitespace, quote, `#`, `*`, `;` or NUL.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")


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
    return _TOKEN.fullmatch(value) is not None and not value.endswith("--")


# --- libinjection's smallest fingerprints (942100 and podwall's own layer) -------------------------
# libinjection's author calls 2- and 3-token fingerprints "very small SQLi ... hard to tell from
# normal input" and advises checking the fingerprint against one's own allow-list. podwall does
# that for two shapes libinjection's own code comments describe as benign, which the older
# libinjection bundled here still flags:
# - `sos` / `s&s` where the "operator" is one quoted word at the very start or end of the value
#   (`"LIKE" stamp`, `Browning "IS"`): a quoted search word, not `x' LIKE 'y` with data on both
#   sides of the quotes;
# - `1c` on a single base64-looking token whose number is not directly followed by whitespace,
#   `--` or `/*` (`1611-IioX...--`): libinjection documents these values as not SQLi.
_QUOTED_WORD = re.compile(r"""(["'`])[A-Za-z]+\1""")
_LEADING_NUMBER = re.compile(r"\s*[-+]?\d+(?:\.\d+)?")


def libinjection_benign(fingerprint: str, value: str) -> bool:
    """libinjection flagged `value` with `fingerprint`, but the hit is one of the shapes podwall allows."""
    if fingerprint in ("sos", "s&s"):
        text = value.strip()
        for m in _QUOTED_WORD.finditer(text):
            if m.start() == 0 or m.end() == len(text):
                rest = text[m.end() :] if m.start() == 0 else text[: m.start()]
                return rest.count(m.group(1)) == 0
        return False
    if fingerprint == "1c":
        number = _LEADING_NUMBER.match(value)
        if number is None or _TOKEN.fullmatch(value) is None:
            return False
        after = value[number.end() : number.end() + 2]
        return not (after.startswith(("--", "/*")) or after[:1].isspace())
    return False


def _veto_942100(matched: str, value: str) -> bool:
    return libinjection_benign(matched, value)


# --- 942190 MSSQL code execution and information gathering (PL1) -----------------------------------
_QUOTE_BANG = re.compile(r"""["'`]\s*!\s*\w""")
_QUOTE_UNION = re.compile(r"""["'`];?\s*union\b""", re.I)
_UNION_SELECT = re.compile(r"union\s*(?:all|distinct|select)\b", re.I)
_GLUED_IIF = re.compile(r"\wiif\s*\(", re.I)


def _veto_942190(matched: str, value: str) -> bool:
    # CRS 4: quote + `!` counts only before `=`, `<`, `>` or a quote, not before a letter or digit
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
    return _glued_keyword(matched, value)


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
            "libinjection's smallest fingerprints on a quoted word or a base64-looking token (see libinjection_benign)",
            _veto_942100,
        ),
        Narrowing(
            942440,
            "CRS 4 exempts JWTs and click ids; podwall exempts every single URL-safe token not ending in --",
            _veto_942440,
        ),
        Narrowing(
            942190,
            "CRS 4: quote-! only before =<> or a quote, UNION only before ALL/DISTINCT/SELECT,"
            " keywords on a word boundary",
            _veto_942190,
        ),
        Narrowing(942230, "CRS 4: CASE needs WHEN ... THEN and HAVING needs a preceding SELECT", _veto_942230),
        Narrowing(
            942260,
            "CRS 4 dropped the quote-punctuation-word and quote-star branches (a quote must precede an operator word)",
            _veto_942260,
        ),
        Narrowing(942300, "CRS 4: operators and CHAR( only on a word boundary", _veto_942300),
        Narrowing(942330, "CRS 4: the probing operator must be a whole word", _veto_942330),
        Narrowing(941130, "CRS 4: attribute keywords on a word boundary, `pattern` directly before =", _veto_941130),
    )
}


def narrowing_for(rule_id: int) -> Narrowing | None:
    """The narrowing podwall applies to a CRS rule, if any."""
    return NARROWINGS.get(rule_id)
