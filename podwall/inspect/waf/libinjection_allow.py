"""podwall's allow-list for libinjection's weakest SQLi verdicts (used by the own layer and by the 942100 narrowing).

libinjection judges a value by a fingerprint of its first five tokens. Its author calls the 2-
and 3-token fingerprints "very small SQLi ... hard to tell from normal input" and advises
checking them against one's own allow-list. podwall allows these shapes, each argued from
what the database would do with the value, never from a test string:

- **a quoted search word** (`sos` / `s&s` whose operator is one quoted word at the very start or
  end of the value, `"LIKE" stamp`): a search term, not `x' LIKE 'y` with data on both sides;
- **a base64-looking token** (`1c` on one URL-safe token whose number is not directly followed
  by whitespace, `--` or `/*`, `1611-IioX...--`): libinjection documents these as not SQLi;
- **a string break that cannot be true** (`sos` / `s&s` in a quote context: `...text" OP "text...`,
  the value closing the application's string, applying one operator and re-opening a string
  the application closes): the injected expression is harmless when the operator is a logical
  one (AND/OR/XOR/&&/||), LIKE, or a division (`/`, `%`, MOD, DIV, or a chain of divisions by
  plain words or numbers), and the re-opened string is plain text (it holds a letter, does
  not start with a number and is no boolean word). MySQL and SQLite read such a string as 0
  (false), a division by it is NULL, and `(col = 'x') LIKE 'text'` compares 0 or 1 with a
  pattern holding a letter; PostgreSQL and SQL Server reject the expression. The comparisons,
  `+`, `-`, `*`, the bitwise operators and NOT LIKE are never allowed (`'x'='x'`, `'a'+'b'`
  and `x' NOT LIKE 'y` are the classic tautologies), nor anything libinjection folded away
  between the quotes (`' or 0+1 or '`);
- **percentages in prose** (`35% cotton and 65% polyester`): a number directly followed by
  `%` and a word is a percentage, not a modulo; the value is re-checked with those `%` signs
  dropped, and allowed when libinjection then no longer flags it.

Pure: text in, a decision out (libinjection is called again only for the shapes above).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import libinjection

from podwall.inspect.waf.sqltokens import tokenize

__all__ = ["TOKEN", "libinjection_benign"]

# One token of URL-safe / base64url characters: no whitespace, quote, `#`, `*`, `;` or NUL.
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
_QUOTED_WORD = re.compile(r"""(["'`])[A-Za-z]+\1""")
_LEADING_NUMBER = re.compile(r"\s*[-+]?\d+(?:\.\d+)?")
# A number directly followed by `%` and then a word: a percentage in prose.
_PERCENTAGE = re.compile(r"(?<=\d)%(?=\s+[^\W\d_])")
# How MySQL reads a string as a number: optional whitespace and sign, then a digit or `.digit`.
_NUMERIC_START = re.compile(r"\s*[-+]?\s*\.?\d")
# Strings PostgreSQL accepts as TRUE (any prefix of `true` / `yes`, and `on`).
_TRUE_WORDS = ("true", "yes")

_STRING = ord("s")
_WORD = re.compile(r"\w*")
# Operators whose result, with a plain-text string on the right, is false, NULL or an error.
_HARMLESS_OPERATORS = frozenset({"and", "or", "xor", "&&", "||", "like", "mod", "div", "/", "%"})
_DIVISIONS = frozenset({"mod", "div", "/", "%"})


def _plain_text(text: str) -> bool:
    """A string a database reads as false / 0: it holds a letter, starts with no number and is no boolean word."""
    word = text.strip().lower()
    if not any(ch.isalpha() for ch in word) or _NUMERIC_START.match(word):
        return False
    return not (word == "on" or any(w.startswith(word) for w in _TRUE_WORDS))


def _harmless_middle(middle: str) -> bool:
    """What stands between the two quotes is one harmless operator or a chain of divisions by words or numbers."""
    tokens = tokenize(middle, max_tokens=16)
    if len(tokens) == 1:
        return tokens[0].text.lower() in _HARMLESS_OPERATORS
    if len(tokens) % 2 == 0:
        return False
    operators, operands = tokens[0::2], tokens[1::2]
    return all(t.text.lower() in _DIVISIONS for t in operators) and all(t.kind in "bn" for t in operands)


def _harmless_string_break(value: str, tokens: Sequence[Mapping[str, Any]]) -> bool:
    """`...text" OP "text...` read in a quote context, with an expression that cannot be true (module doc)."""
    if len(tokens) < 3:
        return False
    head, op, tail = tokens[0], tokens[1], tokens[2]
    quote = int(head.get("str_close") or 0)
    if head.get("type") != _STRING or tail.get("type") != _STRING or not quote:
        return False
    if head.get("str_open") or tail.get("str_close") or tail.get("str_open") != quote:
        return False
    # libinjection's positions are byte offsets into the UTF-8 text
    data = value.encode("utf-8", "surrogatepass")
    close = data.rfind(bytes([quote]), 0, int(op.get("pos") or 0))
    reopen = int(tail.get("pos") or 0) - 1
    if close < 0 or reopen <= close or data[reopen] != quote:
        return False
    head_text = data[:close].decode("utf-8", "replace").strip()
    tail_text = data[reopen + 1 :].decode("utf-8", "replace").strip()
    # a probe quotes single words (`a' or 'b`); text around quotes in prose, URLs and HTML has more
    if _WORD.fullmatch(head_text) and _WORD.fullmatch(tail_text):
        return False
    return _plain_text(tail_text) and _harmless_middle(data[close + 1 : reopen].decode("utf-8", "replace"))


def _quoted_search_word(value: str) -> bool:
    text = value.strip()
    for m in _QUOTED_WORD.finditer(text):
        if m.start() == 0 or m.end() == len(text):
            rest = text[m.end() :] if m.start() == 0 else text[: m.start()]
            return rest.count(m.group(1)) == 0
    return False


def _base64_token(value: str) -> bool:
    number = _LEADING_NUMBER.match(value)
    if number is None or TOKEN.fullmatch(value) is None:
        return False
    after = value[number.end() : number.end() + 2]
    return not (after.startswith(("--", "/*")) or after[:1].isspace())


def _sqli(value: str) -> dict[str, Any]:
    found: dict[str, Any] = libinjection.is_sql_injection(value)
    return found


def libinjection_benign(fingerprint: str, value: str) -> bool:
    """libinjection flagged `value` with `fingerprint`, but the hit is one of the shapes podwall allows."""
    if fingerprint in ("sos", "s&s"):
        if _quoted_search_word(value):
            return True
        found = _sqli(value)
        if found.get("fingerprint") == fingerprint and _harmless_string_break(value, found.get("token_vector") or ()):
            return True
    elif fingerprint == "1c" and _base64_token(value):
        return True
    if _PERCENTAGE.search(value):
        return not _sqli(_PERCENTAGE.sub("", value)).get("is_sqli")
    return False
