"""SQL injection in the query text that MySQL and PostgreSQL clients send.

A whole statement is not user input: libinjection (Nick Galbreath's tokenizer-fingerprint
library, run through the libinjection-python binding) flags ordinary statements such as
`SELECT * FROM t WHERE id = 5` because it is built for the fragments users type. So the
statement is lexed (string literals, comments, quoted identifiers, the dialect's rules) and
judged by the shapes injection leaves behind in it:

- `tautology`: `OR` followed by a comparison of two equal constants (`OR 1=1`, `OR 'a'='a'`)
  or by a bare true constant (`OR 1`, `OR TRUE`);
- `union`: `UNION [ALL] SELECT` whose column list is NULLs or constants only, or that reads
  the catalog (information_schema, pg_catalog, mysql.user, @@version, version(), user() ...);
- `time_delay`: SLEEP(, BENCHMARK(, pg_sleep(, WAITFOR DELAY/TIME outside literals;
- `stacked`: a second statement that changes or destroys data after a SELECT (or a DROP,
  TRUNCATE or SHUTDOWN after any data statement); scripts that start with DDL (migrations)
  are left alone;
- `comment`: a trailing line comment holding a quote (the rest of the
  statement commented away), an unterminated block comment, or a comment glued between
  words (`SELECT/**/password`);
- `unbalanced_quote`: a string literal that never ends (a probe or a broken escape);
- `libinjection`: a string literal whose content, unescaped, holds a quote and is an
  injection by libinjection (an escaped payload: the attempt reached the database).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import libinjection

__all__ = ["Dialect", "SqliHit", "check_sql"]

Dialect = Literal["mysql", "postgresql"]
MAX_LITERALS = 64  # string literals checked with libinjection per statement

_COMMON = (
    r"(?P<ws>\s+)"
    r"|(?P<cblock>/\*(?!!).*?(?:\*/|\Z))"
    r"|(?P<num>0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*)"
    r"|(?P<semi>;)"
    r"|(?P<op><=>|<>|!=|<=|>=|==|\|\||&&|::|\S)"
)
_MYSQL = re.compile(
    r"(?P<cline>(?:--(?=\s|\Z)|\#)[^\n]*)"
    r"|(?P<exec>/\*!\d*)|(?P<execend>\*/)"
    r"|(?P<str>'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\")"
    r"|(?P<ustr>['\"].*)"
    r"|(?P<qid>`(?:[^`]|``)*`)"
    r"|(?P<var>@@?[\w.$]+|\?|:\w+)|" + _COMMON,
    re.DOTALL,
)
_POSTGRES = re.compile(
    r"(?P<cline>--[^\n]*)"
    r"|(?P<str>\$\$.*?\$\$|\$(?P<tag>[A-Za-z_]\w*)\$.*?\$(?P=tag)\$|[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')"
    r"|(?P<ustr>[eE]?'.*)"
    r"|(?P<qid>\"(?:[^\"]|\"\")*\")"
    r"|(?P<var>\$\d+|:\w+|\?)|" + _COMMON,
    re.DOTALL,
)
_CONSTANT = frozenset({"str", "num"})
_TIME_FUNCS = frozenset({"SLEEP", "BENCHMARK", "PG_SLEEP", "PG_SLEEP_FOR", "PG_SLEEP_UNTIL"})
_CATALOG_SCHEMAS = frozenset({"INFORMATION_SCHEMA", "PG_CATALOG", "MYSQL", "SYSIBM", "SYS"})  # read as `schema.x`
_CATALOG_TABLES = frozenset({"PG_SHADOW", "PG_USER", "PG_AUTHID", "PG_TABLES", "SQLITE_MASTER", "ALL_TABLES"})
_CATALOG_FUNCS = frozenset(
    {"VERSION", "USER", "CURRENT_USER", "SESSION_USER", "SYSTEM_USER", "DATABASE", "SCHEMA", "LOAD_FILE",
     "CURRENT_DATABASE", "PG_READ_FILE", "PG_LS_DIR"}
)  # fmt: skip
_WRITES = frozenset(
    {"DROP", "DELETE", "TRUNCATE", "ALTER", "UPDATE", "INSERT", "REPLACE", "CREATE", "GRANT", "REVOKE",
     "SHUTDOWN", "EXEC", "EXECUTE", "DECLARE", "COPY", "LOAD", "RENAME", "CALL", "SET"}
)  # fmt: skip
_DESTROYS = frozenset({"DROP", "TRUNCATE", "SHUTDOWN"})
_DATA = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"})
_COMPARE = frozenset({"=", "==", "<=>", "LIKE", "IS", "<>", "!=", "<", ">", "<=", ">="})


@dataclass(frozen=True, slots=True)
class SqliHit:
    """One injection shape found in a statement: what kind, a short excerpt, where it starts."""

    kind: str
    detail: str
    offset: int


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    start: int

    @property
    def upper(self) -> str:
        return self.text.upper()


def _lex(text: str, dialect: Dialect) -> list[_Tok]:
    pattern = _POSTGRES if dialect == "postgresql" else _MYSQL
    out: list[_Tok] = []
    for m in pattern.finditer(text):
        kind = m.lastgroup
        if kind == "tag":  # the dollar-quote tag group of PostgreSQL: the match is the whole string
            kind = "str"
        if kind in (None, "ws", "exec", "execend"):
            continue  # MySQL's /*! ... */ hides code in a comment: its content is lexed as code
        out.append(_Tok(kind, m.group(), m.start()))
    return out


def _unquote(tok: _Tok) -> tuple[str, str]:
    """A string literal's content with its escapes undone, and its quote character."""
    text = tok.text
    if text.startswith("$"):
        inner = text[text.index("$", 1) + 1 :]
        return inner[: inner.rindex("$", 0, len(inner) - 1)], "$"
    if text[:1] in "eE" and text[1:2] == "'":
        text = text[1:]
    quote = text[0]
    body = text[1:-1]
    body = body.replace(quote * 2, quote)
    if "\\" in body:
        body = re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)
    return body, quote


def _short(text: str, start: int, size: int = 60) -> str:
    return text[start : start + size]


def check_sql(
    text: str, dialect: Dialect = "mysql", *, check_literals: bool = True, truncated: bool = False
) -> list[SqliHit]:
    """The injection shapes in one statement (or script) as a client sent it; empty when none.

    `truncated` says the text was cut (the DPI keeps the first 4096 characters): a literal or
    comment left open at the cut is then not held against it.
    """
    toks = _lex(text, dialect)
    hits: list[SqliHit] = []
    code = [t for t in toks if t.kind not in ("cline", "cblock", "ustr")]
    _tautologies(code, text, dialect, hits)
    _unions(code, text, hits)
    _time_delays(code, text, hits)
    _stacked(code, text, hits)
    if truncated:
        toks = toks[:-1]  # whatever the cut left open (a literal, a comment) is not the client's doing
    _comments(toks, text, hits)
    for tok in toks:
        if tok.kind == "ustr":
            finger = libinjection.is_sql_injection(tok.text)
            hits.append(SqliHit("unbalanced_quote", f"{_short(text, tok.start)} [{finger['fingerprint']}]", tok.start))
    if check_literals:
        _literals(toks, hits)
    return hits


def _is_true_constant(tok: _Tok) -> bool:
    if tok.kind == "num":
        try:
            return float.fromhex(tok.text) != 0 if tok.text[:2] in ("0x", "0X") else float(tok.text) != 0
        except ValueError:
            return False
    return tok.kind == "word" and tok.upper == "TRUE"


def _constant_value(tok: _Tok) -> str | float:
    if tok.kind == "num":
        try:
            return float(tok.text)
        except ValueError:
            return tok.text.lower()
    body, _ = _unquote(tok)
    return body


def _compare(a: str | float, op: str, b: str | float) -> bool:
    if op in ("=", "==", "<=>", "LIKE", "IS"):
        return a == b
    if op in ("<>", "!="):
        return a != b
    if isinstance(a, float) and isinstance(b, float):
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    return False


def _tautologies(code: list[_Tok], text: str, dialect: Dialect, hits: list[SqliHit]) -> None:
    for i, tok in enumerate(code):
        is_or = (tok.kind == "word" and tok.upper == "OR") or (dialect == "mysql" and tok.text == "||")
        if not is_or or i + 1 >= len(code):
            continue
        a = code[i + 1]
        nxt = code[i + 2] if i + 2 < len(code) else None
        op = nxt.upper if nxt is not None else ""
        if a.kind in _CONSTANT and op in _COMPARE and i + 3 < len(code) and code[i + 3].kind in _CONSTANT:
            if _compare(_constant_value(a), op, _constant_value(code[i + 3])):
                hits.append(SqliHit("tautology", _short(text, tok.start), tok.start))
        elif _is_true_constant(a) and (nxt is None or nxt.kind in ("semi",) or op not in _COMPARE):
            hits.append(SqliHit("tautology", _short(text, tok.start), tok.start))


def _unions(code: list[_Tok], text: str, hits: list[SqliHit]) -> None:
    for i, tok in enumerate(code):
        if tok.kind != "word" or tok.upper != "UNION":
            continue
        j = i + 1
        if j < len(code) and code[j].upper in ("ALL", "DISTINCT"):
            j += 1
        if j >= len(code) or code[j].upper != "SELECT":
            continue
        items: list[list[_Tok]] = [[]]
        k = j + 1
        depth = 0
        while k < len(code):
            t = code[k]
            if depth == 0 and (t.kind == "semi" or t.upper in ("FROM", "UNION", "WHERE", "LIMIT", "ORDER", "INTO")):
                break
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                if depth == 0:
                    break
                depth -= 1
            if depth == 0 and t.text == ",":
                items.append([])
            else:
                items[-1].append(t)
            k += 1
        constants = all(len(item) == 1 and (item[0].kind in _CONSTANT or item[0].upper == "NULL") for item in items)
        nulls = sum(1 for item in items if len(item) == 1 and item[0].upper == "NULL")
        rest = code[j + 1 :]
        catalog = any(
            (t.kind == "word" and t.upper in _CATALOG_SCHEMAS and n + 1 < len(rest) and rest[n + 1].text == ".")
            or (t.kind == "word" and t.upper in _CATALOG_TABLES)
            or (t.kind == "var" and t.text.lower().startswith("@@"))
            or (t.kind == "word" and t.upper in _CATALOG_FUNCS and n + 1 < len(rest) and rest[n + 1].text == "(")
            for n, t in enumerate(rest)
        )
        if (constants and len(items) >= 2) or nulls >= 2 or catalog:
            hits.append(SqliHit("union", _short(text, tok.start), tok.start))


def _time_delays(code: list[_Tok], text: str, hits: list[SqliHit]) -> None:
    for i, tok in enumerate(code):
        if tok.kind != "word":
            continue
        name = tok.upper
        nxt = code[i + 1] if i + 1 < len(code) else None
        if nxt is None:
            continue
        if (name in _TIME_FUNCS and nxt.text == "(") or (name == "WAITFOR" and nxt.upper in ("DELAY", "TIME")):
            hits.append(SqliHit("time_delay", _short(text, tok.start), tok.start))


def _stacked(code: list[_Tok], text: str, hits: list[SqliHit]) -> None:
    statements: list[list[_Tok]] = [[]]
    for tok in code:
        if tok.kind == "semi":
            statements.append([])
        else:
            statements[-1].append(tok)
    statements = [s for s in statements if s]
    if len(statements) < 2:
        return
    first = statements[0][0].upper
    for stmt in statements[1:]:
        verb = stmt[0].upper
        if (first == "SELECT" and verb in _WRITES) or (first in _DATA and verb in _DESTROYS):
            hits.append(SqliHit("stacked", _short(text, stmt[0].start), stmt[0].start))


def _comments(toks: list[_Tok], text: str, hits: list[SqliHit]) -> None:
    if not toks:
        return
    last = toks[-1]
    if (last.kind == "cline" and ("'" in last.text or '"' in last.text)) or (
        last.kind == "cblock" and not last.text.endswith("*/")
    ):
        hits.append(SqliHit("comment", _short(text, last.start), last.start))
    for i, tok in enumerate(toks[1:-1], start=1):
        if tok.kind != "cblock":
            continue
        before, after = toks[i - 1], toks[i + 1]
        glued = before.start + len(before.text) == tok.start and tok.start + len(tok.text) == after.start
        if glued and before.kind in ("word", "num", "qid") and after.kind in ("word", "num", "qid"):
            hits.append(SqliHit("comment", _short(text, tok.start), tok.start))


def _literals(toks: list[_Tok], hits: list[SqliHit]) -> None:
    checked = 0
    for tok in toks:
        if tok.kind != "str":
            continue
        body, _ = _unquote(tok)
        if "'" not in body and '"' not in body:
            continue  # without a quote the content could not have left its literal
        checked += 1
        if checked > MAX_LITERALS:
            return
        result = libinjection.is_sql_injection(body)
        if result["is_sqli"]:
            hits.append(SqliHit("libinjection", f"{body[:60]} [{result['fingerprint']}]", tok.start))
