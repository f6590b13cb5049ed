"""A small SQL tokenizer for injected fragments: any text in, a list of classified SQL tokens out.

podwall's SQL-fragment detector (sqlshape.py) needs to see a request value the way a database
would if the value were pasted into a query. This lexer knows the union of the common dialects
(MySQL, PostgreSQL, SQL Server, SQLite, Oracle): quoted strings with doubled-quote and
backslash escapes, prefixed strings (`N'..'`, `E'..'`, `X'..'`, `B'..'`), PostgreSQL dollar
quoting, quoted identifiers (backticks, `"..."` when not a string, `[..]`), numbers (decimal,
hex, binary, exponent), `@var` / `@@var` variables, the three comment forms (`--`, `#`,
`/* */`), MySQL's versioned comments (`/*!50000 ... */`, whose content runs), and the
operators, including PostgreSQL/MySQL/SQLite JSON operators (`->`, `->>`, `#>`, `#>>`, `@>`,
`<@`, `?|`, `?&`).

Each token has a kind (one character, after libinjection's fingerprint letters where they
exist) and its text:

| kind | what |
|---|---|
| `s` | string literal (`closed` false when the value ends inside it) |
| `n` | number |
| `v` | variable (`@x`, `@@version`) |
| `b` | bareword: an identifier that is no keyword |
| `i` | quoted identifier (backticks, brackets) |
| `f` | function call: a known SQL function directly followed by `(` |
| `k` | statement or clause keyword (SELECT, UNION, FROM, WHERE, ...) |
| `&` | logical operator (AND, OR, XOR, NOT, `&&`, `||`) |
| `o` | comparison or arithmetic operator, word operators (LIKE, REGEXP, IS, IN, BETWEEN, ...) |
| `j` | JSON operator (`?` included) |
| `(` `)` `,` `;` `.` | punctuation |
| `c` | comment that runs to the end (`--`, `#`, an unclosed `/*`); closed `/* */` comments are whitespace |
| `?` | any other character |

Bounded (at most `max_tokens` tokens) and pure: text in, tokens out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FUNCTIONS", "KEYWORDS", "LOGIC_WORDS", "OPERATOR_WORDS", "Token", "tokenize", "words"]


@dataclass(frozen=True, slots=True)
class Token:
    """One SQL token: its kind letter (see the module table) and its text (strings: their content)."""

    kind: str
    text: str
    closed: bool = True  # a string literal whose closing quote was found


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of `text` as a set (keyword tables)."""
    return frozenset(text.split())


# Statement and clause keywords: words that only make sense in a query.
KEYWORDS = words(
    """select union insert update delete drop create alter truncate replace merge exec execute declare
    shutdown grant revoke call values from where having group order by limit offset into set join
    inner outer left right cross natural on using case when then else end as distinct distinctrow
    all any some exists procedure handler load outfile dumpfile waitfor delay table database schema
    view user returning fetch top with recursive begin commit rollback intersect except minus asc desc
    pragma attach analyse analyze print null true false unknown"""
)

LOGIC_WORDS = frozenset({"and", "or", "xor", "not"})

# Word operators: comparison and pattern operators written as words.
OPERATOR_WORDS = words(
    """like ilike rlike regexp glob match sounds between is in div mod collate escape similar
    isnull notnull"""
)

# Functions injected to probe, exfiltrate, delay or reach the system: a call of one is SQL syntax.
FUNCTIONS = words(
    # probing, delaying, reading the system
    """sleep pg_sleep benchmark version database schema user current_user session_user system_user
    connection_id last_insert_id row_count found_rows load_file lo_import lo_export lo_get lo_from_bytea
    pg_read_file pg_read_binary_file pg_ls_dir current_setting set_config current_database current_schema
    inet_server_addr inet_client_addr pg_client_encoding txid_current has_table_privilege dblink dblink_exec
    query_to_xml database_to_xml extractvalue updatexml name_const uuid uuid_short schema_name db_name
    user_name suser_name suser_sname host_name object_id object_name col_name is_srvrolemember
    has_dbaccess serverproperty openrowset opendatasource openquery xp_cmdshell sp_executesql
    dbms_pipe dbms_lock utl_http utl_inaddr sys_context dbms_xmlgen xmltype sqlite_version
    sqlite_source_id sqlite_compileoption_used load_extension changes total_changes last_insert_rowid
    """
    # string building and conversion
    """char chr nchar concat concat_ws group_concat string_agg array_agg ascii ord hex unhex bin conv
    substring substr mid left right length len char_length octet_length bit_length lower upper lcase ucase
    trim ltrim rtrim lpad rpad repeat replicate reverse space soundex difference quotename stuff translate
    initcap instr locate position strcmp replace insert format printf quote unicode typeof rawtohex
    to_char to_number to_date cast convert convert_from convert_to encode decode to_base64 from_base64
    md5 sha sha1 sha2 crc32 compress uncompress aes_encrypt aes_decrypt des_encrypt password
    old_password encrypt randomblob zeroblob string_to_array array_to_string regexp_like regexp_substr
    regexp_replace regexp_instr regexp_matches generate_series pg_typeof xmlagg xmlelement
    """
    # numbers, conditions, aggregates, dates
    """count sum avg min max abs ceil ceiling floor round sign sqrt exp ln log log10 log2 pow power pi
    rand random mod div greatest least coalesce ifnull nullif isnull nvl nvl2 iif if elt field make_set
    likelihood likely unlikely glob like exists now curdate curtime sysdate getdate date_add date_sub
    datediff dateadd datepart from_unixtime unix_timestamp str_to_date date_format extract
    """
    # JSON
    """json_extract json_contains json_keys json_search json_valid json_value json_query json_object
    json_array json_type json_length json_unquote json_each json_tree json_overlaps json_contains_path
    json_array_length json_extract_path json_extract_path_text jsonb_path_exists jsonb_path_query
    jsonb_exists jsonb_extract_path jsonb_extract_path_text jsonb_each to_json to_jsonb row_to_json
    jsonb_build_object json_build_object openjson isjson json_modify"""
)

_MULTI_OPERATORS = (
    ("->>", "j"),
    ("#>>", "j"),
    ("<=>", "o"),
    ("->", "j"),
    ("#>", "j"),
    ("@>", "j"),
    ("<@", "j"),
    ("?|", "j"),
    ("@?", "j"),
    ("@@", "j"),
    ("?&", "j"),
    ("||", "&"),
    ("&&", "&"),
    ("<>", "o"),
    ("!=", "o"),
    ("<=", "o"),
    (">=", "o"),
    ("<<", "o"),
    (">>", "o"),
    ("::", "o"),
    (":=", "o"),
    ("!<", "o"),
    ("!>", "o"),
    ("~*", "o"),
    ("!~", "o"),
)
_SINGLE_OPERATORS = frozenset("=<>+-*/%&|^~!")
_PUNCT = frozenset("(),;.")
_SPACE = frozenset(" \t\r\n\x0b\x0c\xa0")
_QUOTES = frozenset("'\"")


def _is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_" or ch == "$"


def _is_ident(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def _string_end(text: str, i: int, quote: str, backslash: bool = True) -> tuple[int, bool]:
    """Index just past the string whose content starts at i, and whether its closing quote was found."""
    n = len(text)
    j = i
    while True:
        q = text.find(quote, j)
        if backslash:
            b = text.find("\\", j, n if q < 0 else q)
            if b >= 0:
                j = b + 2  # a backslash escapes the next character (MySQL's default)
                continue
        if q < 0:
            return n, False
        if q + 1 < n and text[q + 1] == quote:
            j = q + 2  # doubled quote: an escaped quote inside the string
            continue
        return q + 1, True


def _number_end(text: str, i: int) -> int:
    n = len(text)
    if text.startswith(("0x", "0X", "0b", "0B"), i) and i + 2 < n and text[i + 2].isalnum():
        j = i + 2
        while j < n and text[j].isalnum():
            j += 1
        return j
    j = i
    while j < n and (text[j].isdigit() or text[j] == "."):
        j += 1
    if j < n and text[j] in "eE" and j + 1 < n and (text[j + 1].isdigit() or text[j + 1] in "+-"):
        j += 2
        while j < n and text[j].isdigit():
            j += 1
    return j


def _skip_space(text: str, i: int) -> int:
    """The index of the next character that is neither whitespace nor inside a closed `/* */` comment."""
    n = len(text)
    while i < n:
        if text[i] in _SPACE:
            i += 1
        elif text.startswith("/*", i) and not text.startswith("/*!", i) and (end := text.find("*/", i + 2)) >= 0:
            i = end + 2
        else:
            break
    return i


def _word_kind(word: str, text: str, after: int) -> str:
    low = word.lower()
    # a function name counts as a call only when `(` follows (whitespace and comments allowed in SQL)
    j = _skip_space(text, after)
    if low in FUNCTIONS and j < len(text) and text[j] == "(":
        return "f"
    if low in LOGIC_WORDS:
        return "&"
    if low in OPERATOR_WORDS:
        return "o"
    if low in KEYWORDS:
        return "k"
    return "b"


def tokenize(text: str, in_string: str = "", max_tokens: int = 64, backslash_escapes: bool = True) -> list[Token]:
    """The SQL tokens of `text` (at most `max_tokens`).

    With `in_string` set to a quote, lexing starts inside a string opened by that quote (the
    value pasted between quotes). `backslash_escapes` follows MySQL, where `\\'` does not close a
    string; standard SQL (PostgreSQL, SQL Server, SQLite, Oracle) has no backslash escapes.
    """
    bs = backslash_escapes
    out: list[Token] = []
    n = len(text)
    i = 0
    if in_string:
        end, closed = _string_end(text, 0, in_string, bs)
        out.append(Token("s", text[: end - 1 if closed else end], closed))
        i = end
    while i < n and len(out) < max_tokens:
        ch = text[i]
        if ch in _SPACE:
            i += 1
            continue
        if text.startswith("/*", i):
            if text.startswith("/*!", i):
                # MySQL versioned comment: the server runs what is inside; skip only the opener
                i += 3
                while i < n and text[i].isdigit():
                    i += 1
                continue
            end = text.find("*/", i + 2)
            if end < 0:
                out.append(Token("c", text[i:]))  # an unclosed comment cuts off the rest of the query
                i = n
            else:
                i = end + 2  # a closed comment is whitespace to SQL (`UNION/**/SELECT`)
            continue
        if text.startswith("*/", i):
            i += 2  # the close of a versioned comment
            continue
        if text.startswith("--", i) or (ch == "#" and not text.startswith(("#>", "#>>"), i)):
            end = text.find("\n", i)
            out.append(Token("c", text[i : n if end < 0 else end]))
            i = n if end < 0 else end + 1
            continue
        if ch in _QUOTES:
            end, closed = _string_end(text, i + 1, ch, bs)
            out.append(Token("s", text[i + 1 : end - 1 if closed else end], closed))
            i = end
            continue
        if ch == "`" or ch == "[":
            close = "`" if ch == "`" else "]"
            end = text.find(close, i + 1)
            if end < 0:
                out.append(Token("?", ch))
                i += 1
                continue
            out.append(Token("i", text[i + 1 : end]))
            i = end + 1
            continue
        if ch == "$" and i + 1 < n and text[i + 1] == "$":
            end = text.find("$$", i + 2)
            out.append(Token("s", text[i + 2 : n if end < 0 else end], end >= 0))
            i = n if end < 0 else end + 2
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            end = _number_end(text, i)
            if end < n and _is_ident(text[end]):
                # digits glued to letters (`1abc`) read as one bareword, as in MySQL identifiers
                while end < n and _is_ident(text[end]):
                    end += 1
                out.append(Token("b", text[i:end]))
            else:
                out.append(Token("n", text[i:end]))
            i = end
            continue
        if ch == "@":
            j = i + 1
            if j < n and text[j] == "@":
                j += 1
            start = j
            while j < n and (_is_ident(text[j]) or text[j] == "."):
                j += 1
            if j > start:
                out.append(Token("v", text[i:j]))
                i = j
                continue
        if _is_ident_start(ch):
            j = i + 1
            while j < n and _is_ident(text[j]):
                j += 1
            word = text[i:j]
            # prefixed string literals: N'..', E'..', X'..', B'..', U&'..'
            if j < n and text[j] in _QUOTES and word.lower() in ("n", "e", "x", "b", "_utf8", "_latin1"):
                end, closed = _string_end(text, j + 1, text[j], bs)
                out.append(Token("s", text[j + 1 : end - 1 if closed else end], closed))
                i = end
                continue
            out.append(Token(_word_kind(word, text, j), word))
            i = j
            continue
        for op, kind in _MULTI_OPERATORS:
            if text.startswith(op, i):
                out.append(Token(kind, op))
                i += len(op)
                break
        else:
            if ch in _SINGLE_OPERATORS:
                out.append(Token("o", ch))
            elif ch == "?":
                out.append(Token("j", ch))  # PostgreSQL's jsonb key test (also a bind placeholder)
            elif ch in _PUNCT:
                out.append(Token(ch, ch))
            else:
                out.append(Token("?", ch))
            i += 1
    return out
