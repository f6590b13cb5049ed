"""SQL statement kinds for L7 rules: select, insert, update, delete, ddl or other.

Pure text classification of what MySQL or PostgreSQL clients send, not a parser: it skips
comments (`--`, `/* */`; for MySQL also `#`, and the body of `/*! ... */` counts as code),
strings and quoted identifiers in the dialect's own way (backslash escapes in MySQL strings
and PostgreSQL `E'...'` strings only, PostgreSQL dollar quotes), so that a statement hidden
after a quote cannot pass for part of a string, looks at the first keyword of every statement (split on
`;` outside strings), and for `WITH` the statement after the common table expressions,
also reporting data-modifying CTE bodies (PostgreSQL's `WITH d AS (DELETE ...) SELECT`).
"""

from __future__ import annotations

SELECT = "select"
INSERT = "insert"
UPDATE = "update"
DELETE = "delete"
DDL = "ddl"
OTHER = "other"

_KEYWORD_KIND: dict[str, str] = {
    "select": SELECT,
    "values": SELECT,
    "table": SELECT,  # PostgreSQL `TABLE t` is SELECT * FROM t
    "insert": INSERT,
    "replace": INSERT,  # MySQL REPLACE inserts (deleting a conflicting row first)
    "update": UPDATE,
    "delete": DELETE,
    "create": DDL,
    "alter": DDL,
    "drop": DDL,
    "truncate": DDL,
    "rename": DDL,
    "comment": DDL,  # PostgreSQL COMMENT ON changes the catalog
}
_MODIFYING = frozenset({INSERT, UPDATE, DELETE})


def _tokens(text: str, mysql: bool) -> list[str]:
    """Words (lower case), `(`, `)` and `;` outside comments, strings and quoted identifiers."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif (ch == "-" and text.startswith("--", i)) or (ch == "#" and mysql):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "/" and text.startswith("/*", i):
            if mysql and text.startswith("/*!", i):
                # MySQL executes the body of /*! ... */ (after an optional version number).
                i += 3
                while i < n and text[i].isdigit():
                    i += 1
                continue
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch == "*" and text.startswith("*/", i):
            i += 2  # the end of an executable comment whose body was read as code
        elif ch in "'\"`":
            escapes = ch != "`" and (mysql or (ch == "'" and out[-1:] == ["e"] and text[i - 1 : i] in ("e", "E")))
            if escapes and not mysql:
                out.pop()  # the E of E'...' is a prefix, not a word
            i = _skip_quoted(text, i, ch, escapes)
            out.append("?")
        elif not mysql and ch == "$" and (tag_end := _dollar_tag_end(text, i)) > 0:
            tag = text[i:tag_end]
            end = text.find(tag, tag_end)
            i = n if end < 0 else end + len(tag)
            out.append("?")
        elif ch in "();":
            out.append(ch)
            i += 1
        elif ch.isalpha() or ch == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_$"):
                j += 1
            out.append(text[i:j].lower())
            i = j
        else:
            i += 1
            if out and out[-1] != "?":
                out.append("?")
    return out


def _skip_quoted(text: str, i: int, quote: str, escapes: bool) -> int:
    j = i + 1
    n = len(text)
    while j < n:
        ch = text[j]
        if ch == "\\" and escapes:
            j += 2
            continue
        if ch == quote:
            if j + 1 < n and text[j + 1] == quote:  # doubled quote is an escaped quote
                j += 2
                continue
            return j + 1
        j += 1
    return n


def _dollar_tag_end(text: str, i: int) -> int:
    """End of a PostgreSQL dollar-quote tag (`$$` or `$tag$`) starting at i, or 0."""
    j = i + 1
    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
        j += 1
    if j < len(text) and text[j] == "$" and not text[i + 1 : j][:1].isdigit():
        return j + 1
    return 0


def _statements(tokens: list[str]) -> list[list[str]]:
    stmts: list[list[str]] = [[]]
    depth = 0
    for tok in tokens:
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth = max(0, depth - 1)
        elif tok == ";" and depth == 0:
            stmts.append([])
            continue
        stmts[-1].append(tok)
    return [s for s in stmts if s]


def _first_kind(tokens: list[str], start: int) -> tuple[str, int]:
    """Kind of the statement starting at `start`, skipping opening parentheses."""
    i = start
    while i < len(tokens) and tokens[i] == "(":
        i += 1
    if i >= len(tokens):
        return OTHER, i
    return _KEYWORD_KIND.get(tokens[i], OTHER), i


def _statement_kinds(tokens: list[str]) -> list[str]:
    kind, i = _first_kind(tokens, 0)
    if i >= len(tokens) or tokens[i] != "with":
        return [kind]
    kinds: list[str] = []
    i += 1
    if i < len(tokens) and tokens[i] == "recursive":
        i += 1
    # Each CTE: name [(columns)] AS [NOT] [MATERIALIZED] ( body ), separated by commas
    # (which the tokenizer drops); the main statement is the first word at depth 0 after a body.
    depth = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "(":
            if depth == 0 and i > 0 and tokens[i - 1] in ("as", "materialized"):
                body_kind, _ = _first_kind(tokens, i + 1)
                if body_kind in _MODIFYING:
                    kinds.append(body_kind)
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0 and tok in _KEYWORD_KIND and tok not in ("table", "comment"):
            kinds.insert(0, _KEYWORD_KIND[tok])
            return kinds
        i += 1
    kinds.insert(0, OTHER)
    return kinds


def statement_kinds(text: str, dialect: str = "mysql", truncated: bool = False) -> tuple[str, ...]:
    """The kind of every statement in `text`, in order, duplicates removed.

    `dialect` is `mysql` (MariaDB too) or `postgresql`. Empty text is `other`. A truncated
    capture adds `other`: statements past the cut are unknown, so rules listing only some
    kinds do not admit it.
    """
    out: list[str] = []
    for stmt in _statements(_tokens(text, dialect != "postgresql")):
        for kind in _statement_kinds(stmt):
            if kind not in out:
                out.append(kind)
    if not out or (truncated and OTHER not in out):
        out.append(OTHER)
    return tuple(out)


def classify_sql(text: str, dialect: str = "mysql") -> str:
    """The kind of the first statement in `text` (`other` when there is none)."""
    return statement_kinds(text, dialect)[0]
