"""SQL-fragment shapes: does a request value read as a piece of SQL grafted onto a query?

libinjection judges a value by the fingerprint of its first few tokens against a fixed list, so
it misses operators and statements its list does not know (PostgreSQL JSON operators and casts,
word operators such as NOTNULL, ILIKE, COLLATE, a stacked REPLACE). This module reads the value
with podwall's SQL tokenizer (sqltokens.py) and checks general grammar facts instead of strings:

- `string-break`: read as the inside of a quoted SQL string (`'` or `"`, with and without
  MySQL's backslash escapes), the value closes the string and continues as well-formed SQL
  that ends where a query can end and carries enough evidence: a trailing comment, a re-opened
  string, a `;`, a logical operator, a comparison with a literal, a clause (UNION, ORDER BY,
  FROM after SELECT, ...), a known SQL function call, a stacked statement;
- `json-operator`: a JSON document written as an SQL string literal (`'{"a":1}'`) cast to
  JSON, or compared in a value that is well-formed SQL throughout; a JSON operator (`@>`,
  `<@`, `?|`, `?&`, `#>`, `#>>`, `@?`, `@@`) between SQL operands; `->` / `->>` / `?` with a
  JSON path (`'$.a'`) on the right;
- `stacked-statement`: a `;` followed by a statement with its own grammar (INSERT/REPLACE
  ... VALUES, UPDATE ... SET, DELETE FROM, DROP/CREATE/ALTER/TRUNCATE TABLE, EXEC proc,
  SELECT ... FROM as a whole expression, DECLARE @v, SHUTDOWN, WAITFOR DELAY);
- `type-cast`: a PostgreSQL `::` cast to an SQL type name after a literal, a variable, a
  quoted identifier or a parenthesis.

"Well-formed" is a walk through a small expression grammar: an operand (string, number,
identifier, variable) is never followed directly by another operand, an operator is followed
by an operand, a parenthesis or a unary operator, a function name by `(`, IS by NULL/NOT/TRUE/
FALSE, COLLATE by a collation name, UNION by ALL/DISTINCT/SELECT, FROM and WHERE only after a
SELECT, and no character outside SQL appears. Prose with apostrophes (`don't`, `1950's`) fails
at once. Pure: text in, the names of the shapes found out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from podwall.inspect.waf.sqltokens import Token, tokenize, words

__all__ = ["SHAPES", "sql_shapes"]

SHAPES = ("string-break", "json-operator", "stacked-statement", "type-cast")

_MAX_TOKENS = 48
_OPERAND = frozenset("snvbi")
_UNARY = frozenset({"-", "+", "~", "!", "not"})
_STATEMENT_START = frozenset(
    {"select", "insert", "replace", "update", "delete", "drop", "create", "alter", "truncate", "exec", "execute",
     "declare", "shutdown", "waitfor"}
)  # fmt: skip
# Keywords that stand as a value (an operand) rather than open a clause.
_VALUE_WORDS = frozenset({"null", "true", "false", "user", "database", "schema", "unknown", "dual"})
_SQL_TYPES = words(
    """int int2 int4 int8 integer bigint smallint text varchar char character bool boolean numeric decimal
    real float float4 float8 json jsonb regclass regproc regtype oid bytea date timestamp timestamptz interval
    uuid xml inet cidr money tsvector tsquery"""
)
_COMPARISON = frozenset({"=", "<", ">", "<=", ">=", "<>", "!=", "<=>", "!<", "!>", "like", "ilike", "rlike",
                         "regexp", "glob", "in", "between", "similar", "match", "sounds"})  # fmt: skip
# Word operators NOT may negate (`NOT LIKE`, `NOT IN`, ...).
_NEGATABLE = frozenset({"like", "ilike", "rlike", "regexp", "glob", "in", "between", "similar", "match"})
# Operators a JSON literal meets in an injected condition (comparisons and PostgreSQL's `?` key test).
_JSON_COMPARISONS = frozenset({"=", "<", ">", "<=", ">=", "<>", "!=", "?"})
# Text without any of these holds no JSON-operator shape (a quoted JSON literal or a JSON operator).
_JSON_HINTS = ("'{", "'[", '"{', '"[', "@>", "<@", "?|", "?&", "#>", "@?", "@@", "->")

# JSON functions of MySQL, PostgreSQL, SQLite and SQL Server (json_extract, jsonb_path_exists, openjson, ...).
_JSON_FUNCTION = re.compile(r"(?:jsonb?_|openjson$|isjson$)", re.I)

# The grammar walk's states: what may come next.
(EXPR, AFTER, NAME, UNION, BY, ARGS, STMT, NOT_OP, WAIT, IS, DECLARE, TYPE, FILE, COLLATION, MEMBER) = range(15)
# Keywords that may follow a complete operand: the state each leads to, and whether it is clause evidence.
_AFTER_OPERAND_KEYWORDS: dict[str, tuple[int, bool]] = {
    "union": (UNION, True), "intersect": (UNION, True), "except": (UNION, True), "minus": (UNION, True),
    "into": (NAME, True), "procedure": (NAME, True), "order": (BY, True), "group": (BY, True),
    "having": (EXPR, True), "limit": (EXPR, True), "offset": (EXPR, True),
    "as": (NAME, False), "when": (EXPR, False), "then": (EXPR, False), "else": (EXPR, False),
    "end": (AFTER, False), "desc": (AFTER, False), "asc": (AFTER, False),
}  # fmt: skip
# FROM and WHERE continue a SELECT, never a condition (`x' and f(1) from y` is prose).
_SELECT_CLAUSES = {"from": NAME, "where": EXPR}
# Keywords that open an expression.
_EXPRESSION_KEYWORDS = frozenset({"select", "case", "exists", "distinct", "all", "any", "some", "top"})
# SQL Server runs a statement after another without a `;`: these may follow a closed string directly.
_BARE_STATEMENTS = frozenset({"waitfor", "exec", "execute", "declare", "shutdown", "select"})


@dataclass(slots=True)
class _Walk:
    """What a grammar walk over a token run saw: whether it stayed well-formed, and the evidence."""

    ok: bool = True
    complete: bool = False  # it ended where a query may end (after an operand, a `;` or a whole statement)
    logic: int = 0  # AND / OR / XOR / && / ||
    comparisons: int = 0  # complete `operand <comparison> operand` (or a postfix NOTNULL, IS NULL, COLLATE x)
    literal_comparisons: int = 0  # ... with a number or string literal on one side
    clauses: int = 0  # UNION / ORDER BY / FROM after SELECT ... in a grammatical place
    calls: int = 0  # known SQL function calls
    tokens: int = 0
    select: bool = False
    statement: bool = False  # a stacked statement (`; DROP TABLE x`) ended the walk


def _is_operand(tok: Token) -> bool:
    return tok.kind in _OPERAND or tok.kind == ")" or (tok.kind == "k" and tok.text.lower() in _VALUE_WORDS)


def _expression_step(w: _Walk, state: int, tok: Token, prev: Token | None) -> int:
    """The state after `tok` where an expression may start (EXPR, ARGS), or -1."""
    kind, low = tok.kind, tok.text.lower()
    if kind in _OPERAND or (kind == "k" and low in _VALUE_WORDS):
        return AFTER
    if kind == "f":
        w.calls += 1
        return ARGS
    if kind == "(":
        return EXPR
    if kind == ")" and state == ARGS and prev is not None and prev.kind == "(":
        return AFTER
    if kind in "o&" and low in _UNARY:
        return EXPR
    if low == "*" and prev is not None and prev.text.lower() == "select":
        return AFTER
    if kind == "k" and low == "declare" and prev is not None and prev.kind in ";k":
        return DECLARE
    if kind == "k" and low in _EXPRESSION_KEYWORDS:
        if low == "select":
            w.select = True
            w.clauses += 1
        return EXPR
    return -1


def _after_operand_step(w: _Walk, tok: Token, prev: Token | None) -> int:
    """The state after `tok` following a complete operand, or -1."""
    kind, low = tok.kind, tok.text.lower()
    if low == "not":
        return NOT_OP
    if kind == "f" and low in _NEGATABLE:
        return EXPR  # `x LIKE (...)`: the word operator, not SQLite's like() function
    if kind in "oj&":
        if low in ("notnull", "isnull"):
            w.comparisons += 1
            return AFTER
        if low == "is":
            return IS
        if low == "collate":
            return COLLATION
        if kind == "&" and low != "&":
            w.logic += 1
        return EXPR
    if kind == "s" and prev is not None and prev.kind == "s":
        return AFTER  # adjacent string literals concatenate
    if kind == ")":
        return AFTER
    if kind == ",":
        return EXPR
    if kind == "(" and prev is not None and prev.kind == "b":
        return ARGS  # a call of a function podwall does not name
    if kind == ";":
        return STMT
    if kind == "k" and low in _AFTER_OPERAND_KEYWORDS:
        state, evidence = _AFTER_OPERAND_KEYWORDS[low]
        w.clauses += evidence
        return state
    if kind == "k" and low in _SELECT_CLAUSES and w.select:
        w.clauses += 1
        return _SELECT_CLAUSES[low]
    if kind == "k" and low in _BARE_STATEMENTS:
        w.clauses += 1
        w.select = w.select or low == "select"
        return WAIT if low == "waitfor" else NAME if low.startswith("exec") else EXPR
    if kind == "." and prev is not None and prev.kind in "bi":
        return MEMBER  # `table.column`, `schema.table`
    if kind == "i" and prev is not None and prev.text.lower() == "array":
        return AFTER  # PostgreSQL's array['a','b'] (the brackets read as a quoted identifier)
    if kind == "b" and prev is not None and prev.kind == ")":
        return AFTER  # a derived table's alias: `(select ...) x`
    return -1


def _walk(tokens: list[Token], state: int, select: bool = False) -> _Walk:
    """Walk `tokens` through the small expression grammar from `state`; stops being ok at the first misfit."""
    w = _Walk(select=select)
    prev: Token | None = None
    pending = False  # a comparison operator waiting for its right operand
    left: Token | None = None  # the operand before it
    for at, tok in enumerate(tokens):
        kind, low = tok.kind, tok.text.lower()
        if kind == "c":
            break  # the rest is commented out
        w.tokens += 1
        nxt = -1
        if state in (EXPR, ARGS):
            nxt = _expression_step(w, state, tok, prev)
            if nxt == AFTER and pending and left is not None:
                w.comparisons += 1
                w.literal_comparisons += left.kind in "sn" or kind in "sn"
                pending = False
        elif state == AFTER:
            nxt = _after_operand_step(w, tok, prev)
            if nxt == NOT_OP:
                left = prev
            elif nxt == EXPR and (kind == "j" or low in _COMPARISON or kind == "f"):
                pending, left = True, prev
        elif state == NOT_OP:
            if low in _NEGATABLE:
                nxt, pending = EXPR, True
        elif state == NAME:
            if low in ("outfile", "dumpfile"):
                nxt = FILE
            elif kind in "bivs" or low == "dual":
                nxt = AFTER
            elif kind == "(":
                nxt = EXPR
        elif state == MEMBER:
            if kind in "bi" or low == "*":
                nxt = AFTER
            elif kind == "f":
                nxt = ARGS  # `dbms_xmlgen.getxml(`, `sys.fn_x(`
        elif state == FILE:
            nxt = AFTER if kind == "s" else -1
        elif state == COLLATION:
            # collation names: MySQL/SQL Server `charset_..._ci`, SQLite BINARY/NOCASE/RTRIM, PostgreSQL "C"
            if kind in "si" or (kind == "b" and "_" in low) or low in ("binary", "nocase", "rtrim"):
                nxt = AFTER
                w.comparisons += 1
        elif state == IS:
            if low == "not":
                nxt = IS
            elif low in ("null", "true", "false", "unknown"):
                nxt = AFTER
                w.comparisons += 1
            elif low == "distinct":
                nxt = NAME
        elif state == UNION:
            if low in ("all", "distinct", "distinctrow"):
                nxt = UNION
            elif low == "select" or kind == "(":
                nxt = EXPR
                w.select = True
        elif state == BY:
            nxt = EXPR if low == "by" else -1
        elif state == WAIT:
            nxt = EXPR if low in ("delay", "time") else -1
        elif state == DECLARE:
            nxt = TYPE if kind == "v" else -1
        elif state == TYPE:
            nxt = AFTER if kind in "bk" else -1
        elif state == STMT and kind == "k" and _statement([t for t in tokens[at:] if t.kind != "c"]):
            w.clauses += 1
            w.statement = w.complete = True
            return w  # a whole statement follows: the rest is its own grammar
        if nxt < 0:
            w.ok = False
            return w
        state = nxt
        prev = tok
    w.complete = state in (AFTER, STMT)
    return w


def _statement(tokens: list[Token]) -> bool:
    """Tokens that open with a statement keyword and follow that statement's grammar for a few tokens."""
    if not tokens or tokens[0].kind != "k":
        return False
    verb = tokens[0].text.lower()
    rest = tokens[1:12]
    words = [t.text.lower() for t in rest]
    kinds = "".join(t.kind for t in rest)
    if verb in ("insert", "replace"):
        if words[:1] == ["into"]:
            words, kinds = words[1:], kinds[1:]
        return kinds[:1] in ("b", "i") and ("values" in words or "select" in words)
    if verb == "update":
        return kinds[:1] in ("b", "i") and words[1:2] == ["set"]
    if verb == "delete":
        return words[:1] == ["from"] and kinds[1:2] in ("b", "i")
    if verb in ("drop", "create", "alter", "truncate"):
        objects = ("table", "database", "schema", "view", "user", "procedure", "function", "index", "trigger")
        return bool(words) and words[0] in objects and kinds[1:2] in ("b", "i", "k")
    if verb in ("exec", "execute"):
        return kinds[:1] in ("b", "i") and (
            len(kinds) == 1 or kinds[1] in "snv;(" or words[0].startswith(("xp_", "sp_"))
        )
    if verb == "select":
        w = _walk(tokens[1:], EXPR, select=True)
        return w.ok and w.complete and (w.clauses > 0 or w.calls > 0 or w.tokens == 1)
    if verb == "declare":
        return kinds[:1] == "v"
    return verb in ("shutdown", "waitfor") and (not kinds or kinds[0] in ";c" or words[0] in ("delay", "time"))


def _strong_comment(tok: Token) -> bool:
    """A comment the way injections end: `--` then space, end, `-` or `+`; `#`; an unclosed `/*`."""
    return not tok.text.startswith("--") or len(tok.text) == 2 or tok.text[2] in " \t\r\n-+"


def _string_break_tail(tail: list[Token]) -> bool:
    """Does the SQL after a closed string look injected? Well-formed, complete, and enough evidence."""
    ending = ""
    comment: Token | None = None
    for i, tok in enumerate(tail):
        if tok.kind == "c":
            tail, comment, ending = tail[:i], tok, "comment"
            break
    else:
        if len(tail) > 1 and tail[-1].kind == "s" and not tail[-1].closed:
            ending = "open-string"  # the application's own closing quote completes it
        elif len(tail) > 1 and tail[-1].kind == ";":
            ending = "semicolon"
    if not tail:
        return False
    w = _walk(tail, AFTER)
    if not (w.ok and w.complete):
        return False
    score = (1 + _strong_comment(comment)) if comment is not None else ending != ""
    score += (w.logic > 0) + (w.calls > 0) + 2 * w.statement
    score += (1 + (w.tokens > 2)) * (w.clauses > 0)  # a lone `x' UNION 'y` is thin
    score += w.literal_comparisons > 0 or (w.comparisons > 0 and ending != "")
    score += w.logic > 0 and w.literal_comparisons > 0  # `x' OR 1=1`: a tautology or contradiction
    return score >= 3


def _string_break(text: str) -> bool:
    for quote in ("'", '"'):
        if quote not in text:
            continue
        for backslash in (True, False):
            tokens = tokenize(text, in_string=quote, max_tokens=_MAX_TOKENS, backslash_escapes=backslash)
            if tokens[0].closed and _string_break_tail(tokens[1:]):
                return True
            if "\\" not in text:
                break
    return False


def _json_literal(tok: Token) -> bool:
    """A string literal holding a JSON object or array (`'{"a":1}'`, `'[1,2]'`)."""
    text = tok.text.strip()
    if not (tok.kind == "s" and tok.closed and len(text) >= 2 and (text[0], text[-1]) in (("{", "}"), ("[", "]"))):
        return False
    try:
        json.loads(text)
    except ValueError:
        return False  # `'{1,%d}'`, `'[>!]'`: braces or brackets, but no JSON document
    return True


def _well_formed(tokens: list[Token], state: int) -> bool:
    if _walk(tokens, state).ok:
        return True
    # a value in a numeric context may open with an operator (` OR '{..}' ...`)
    return state == EXPR and _walk(tokens, AFTER).ok


def _json_operator(tokens: list[Token], state: int) -> bool:
    """A JSON literal cast to JSON or compared in well-formed SQL, or a JSON operator between operands."""
    n = len(tokens)
    for i, tok in enumerate(tokens):
        if _json_literal(tok):
            j = i + 1
            if j + 1 < n and tokens[j].text == "::" and tokens[j + 1].kind == "b":
                if tokens[j + 1].text.lower() in ("json", "jsonb"):
                    return True  # '{..}'::jsonb is SQL and nothing else
                j += 2
            after = tokens[j] if j < n else None
            before = tokens[i - 1] if i else None
            compared = (after is not None and (after.kind == "j" or after.text in _JSON_COMPARISONS)) or (
                before is not None and (before.kind == "j" or before.text in _JSON_COMPARISONS)
            )
            if compared and _well_formed(tokens, state):
                return True
        elif tok.kind == "f" and _JSON_FUNCTION.match(tok.text) and i + 2 < n and tokens[i + 1].kind == "(":
            # json_extract('{"a":1}', '$.a'): a JSON function given a JSON document or path literal
            argument = tokens[i + 2]
            if (_json_literal(argument) or (argument.kind == "s" and argument.text.startswith("$"))) and _well_formed(
                tokens, state
            ):
                return True
        elif tok.kind == "j" and 0 < i < n - 1:
            before, after = tokens[i - 1], tokens[i + 1]
            if not (_is_operand(before) and (_is_operand(after) or after.kind == "(")):
                continue
            if tok.text not in ("->", "->>", "?"):
                # @>, <@, ?|, ?&, #>, #>>, @?, @@ test a JSON document against a literal (`col @> '{..}'`);
                # between a parenthesis and a digit they are regular-expression text (`(x)?|3`)
                if (before.kind == "s" or after.kind == "s" or after.text.lower() == "array") and _well_formed(
                    tokens, state
                ):
                    return True
                continue
            # arrows and `?` are common in prose; in SQL a JSON path follows them
            if after.kind == "s" and after.text.startswith("$") and before.kind in "bi)":
                return True
    return False


def _stacked_statement(tokens: list[Token]) -> bool:
    for i, tok in enumerate(tokens):
        following = tokens[i + 1].text.lower() if i + 1 < len(tokens) else ""
        if (
            tok.kind == ";"
            and following in _STATEMENT_START
            and _statement([t for t in tokens[i + 1 :] if t.kind != "c"])
        ):
            return True
    return False


def _type_cast(tokens: list[Token]) -> bool:
    for i in range(1, len(tokens) - 1):
        if tokens[i].text == "::" and tokens[i + 1].text.lower() in _SQL_TYPES and tokens[i - 1].kind in "snvi)":
            return True
    return False


def sql_shapes(text: str) -> list[str]:
    """The SQL-fragment shapes (names from SHAPES) found in one decoded value."""
    found: list[str] = []
    quoted = "'" in text or '"' in text
    if quoted and _string_break(text):
        found.append("string-break")
    stacked, cast = ";" in text, "::" in text
    jsonish = any(op in text for op in _JSON_HINTS)
    if not (stacked or cast or jsonish):
        return found
    tokens = tokenize(text, max_tokens=_MAX_TOKENS)
    if jsonish and (
        _json_operator(tokens, EXPR)
        or any(_json_operator(tokenize(text, q, _MAX_TOKENS)[1:], AFTER) for q in "'\"" if q in text)
    ):
        found.append("json-operator")
    if stacked and _stacked_statement(tokens):
        found.append("stacked-statement")
    if cast and _type_cast(tokens):
        found.append("type-cast")
    return found
