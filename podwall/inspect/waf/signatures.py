"""podwall's generic SQL injection and XSS signatures: what libinjection's tokenizer does not see.

libinjection judges a value by the shape of its first tokens, so it misses attacks that open
with ordinary words, split keywords with comments, or live in JavaScript rather than HTML.
These signatures name the constructs themselves: UNION SELECT, time-delay and file functions,
stacked statements, database catalog names, PostgreSQL casts; script tags, event handlers,
script URIs, dangerous elements, JavaScript sinks, template-literal calls and JSFuck.
Each is matched caselessly against every decoded form of a value (see targets.decodings), all
compiled once into one hyperscan database. The patterns are written for podwall, in the
subset hyperscan accepts (no back-references or lookaround). Like CRS rules, a signature has a
paranoia level: the noisier constructs only run when the engine's level is at least theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIGNATURES", "Signature"]


@dataclass(frozen=True, slots=True)
class Signature:
    """One own-layer pattern: its short name (the finding id ends with it), category and message."""

    name: str
    category: str  # "sqli" or "xss"
    message: str
    pattern: str
    paranoia: int = 1  # the lowest CRS paranoia level the signature runs at


_SQL_VERB = r"(?:select|insert|update|delete|drop|alter|create|truncate|exec|execute|declare|shutdown|grant|revoke)"

SIGNATURES: tuple[Signature, ...] = (
    # --- SQL injection
    Signature(
        "union-select",
        "sqli",
        "SQL UNION SELECT",
        r"\bunion\s*(?:all|distinct|distinctrow)?\s*\(?\s*select\b",
    ),
    Signature(
        "time-delay",
        "sqli",
        "SQL time-delay function",
        r"\b(?:sleep|pg_sleep|benchmark|dbms_lock\.sleep|dbms_pipe\.receive_message)\s*\(|\bwaitfor\s+(?:delay|time)\s+['\"\d]",
    ),
    Signature(
        "stacked-query",
        "sqli",
        "stacked SQL statement after a semicolon",
        r";\s*(?:select\s+(?:\*|@|[\w.]+\s*(?:,|\(|\bfrom\b)|\d+\s*$)|insert\s+into|delete\s+from|drop\s+(?:table|database)|update\s+[\w.`\"\[\]]+\s+set"
        r"|exec(?:ute)?\s+(?:xp_|sp_|master\.)|shutdown\b|declare\s+@|create\s+(?:table|user)|alter\s+(?:table|user)"
        r"|truncate\s+table|grant\s+\w+\s+on|revoke\s+\w+\s+on)",
    ),
    Signature(
        "ddl-dml",
        "sqli",
        "SQL data-changing statement",
        r"\b(?:drop\s+(?:table|database|schema|view|user)|delete\s+from|insert\s+into|truncate\s+table"
        r"|alter\s+(?:table|user|database)|create\s+(?:table|user|database)|update\s+[\w.`\"\[\]]+\s+set)\s",
    ),
    Signature(
        "drop-terminated",
        "sqli",
        "SQL DROP statement ended by a comment",
        r"\bdrop\s+[\w.`\"\[\]]+\s*;\s*(?:--|#|/\*)",
    ),
    Signature(
        "catalog",
        "sqli",
        "SQL database catalog or system variable",
        r"\binformation_schema\b|\b(?:sysobjects|syscolumns|sys\.tables|pg_catalog|pg_shadow|mysql\.user"
        r"|all_tables|user_tables|sqlite_master)\b|@@(?:version|datadir|hostname|basedir|servername)\b",
    ),
    Signature(
        "file-function",
        "sqli",
        "SQL file or large-object access",
        r"\b(?:load_file|lo_get|lo_import|lo_export|pg_read_file|pg_read_binary_file|pg_ls_dir|utl_http\.request"
        r"|utl_inaddr\.get_host_address)\s*\(|\binto\s+(?:out|dump)file\b",
    ),
    Signature(
        "procedure",
        "sqli",
        "SQL Server extended procedure or remote rowset",
        r"\b(?:xp_cmdshell|xp_regread|xp_dirtree|sp_executesql|sp_oacreate|sp_makewebtask|openrowset|opendatasource"
        r"|msdasql|sqloledb)\b",
    ),
    Signature(
        "pg-cast",
        "sqli",
        "PostgreSQL type cast in input",
        r"\)\s*::\s*(?:int|integer|text|bool|boolean|varchar|bigint|numeric|regclass|bytea)\b",
    ),
    Signature(
        "comment-keyword",
        "sqli",
        "SQL keyword split or hidden by an inline comment",
        r"/\*!\d*\s*(?:select|union|and|or|from|where|insert|update|delete)\b"
        r"|\b(?:select|union|from|where|and|or|insert|update|delete)\s*/\*.{0,40}?\*/\s*(?:\w|\()",
    ),
    Signature(
        "quote-boolean",
        "sqli",
        "quote followed by a boolean SQL condition",
        r"['\"`]\s*\)?\s*(?:or|and|xor|\|\||&&)\s+['\"`]?[\w@]+['\"`]?\s*(?:=|<>|!=|<=|>=|<|>|\blike\b|\bis\b)",
    ),
    Signature(
        "quote-comment",
        "sqli",
        "quote closed then the rest commented out",
        r"['\"`]\s*\)*\s*(?:;\s*)?(?:--[\s\-]|--$|/\*)",
    ),
    Signature(
        "subquery",
        "sqli",
        "SQL sub-select",
        r"\(\s*select\s+[\w*@.`\"(),\s]{1,80}?\bfrom\b",
    ),
    Signature(
        "order-having",
        "sqli",
        "SQL ORDER BY / GROUP BY / HAVING probe",
        r"\b(?:order|group)\s+by\s+\d+\s*(?:--|#|/\*|;|$)|\bhaving\s+\d+\s*=\s*\d+",
    ),
    Signature(
        "string-function",
        "sqli",
        "SQL function used to build or probe values",
        r"\b(?:version|database|current_user|system_user|session_user|connection_id|last_insert_id)\s*\(\s*\)"
        r"|\b(?:char|chr|concat|concat_ws|group_concat|ascii|substring|substr|hex|unhex|json_search|json_array"
        r"|json_extract|starts_with|extractvalue|updatexml|name_const|encode|decode|convert|cast)\s*\(\s*"
        r"(?:['\"\w@(]|select\b)[^)]{0,60}\)\s*(?:,|\)|=|<|>|\|\||::|\bor\b|\band\b|\bfrom\b|\bunion\b|--|#|;)",
    ),
    Signature(
        "quoted-compare",
        "sqli",
        "comparison of quoted SQL literals",
        r"['\"`][^'\"`]{0,20}['\"`]\s*(?:=|!=|<>|<=>)\s*['\"`]",
    ),
    Signature(
        "conditional",
        "sqli",
        "SQL IF() or CASE WHEN condition",
        r"\bif\s*\(\s*[\w'\"@]+\s*(?:=|<|>|!=|<>)|\bwhen\s+[\d'\"(@]\S*\s+then\b",
    ),
    Signature(
        "paren-like",
        "sqli",
        "LIKE / REGEXP between SQL expressions",
        r"\)\s*(?:like|rlike|regexp|sounds\s+like)\s*[('\"]",
    ),
    Signature(
        "quote-probe",
        "sqli",
        "value made of quotes only (injection probing)",
        r"^\s*(?:['\"`]\s*){2,}[;)]*\s*$",
    ),
    Signature(
        "quote-statement",
        "sqli",
        "value opening with a closing quote and an SQL statement",
        r"^\s*['`]\s*\)?\s*;?\s*(?:alter|drop|select|union|insert|update|delete|exec|execute|truncate|shutdown"
        r"|declare)\s+[\w@*(]",
    ),
    Signature(
        "quote-semicolon",
        "sqli",
        "value whose first quote is followed by a semicolon (query split)",
        r"^[^'\"`]*['\"`]\s*;",
        paranoia=3,
    ),
    Signature(
        "leading-keyword",
        "sqli",
        "value opening with symbols then UNION or ALTER",
        r"^[^A-Za-z_]+\s*(?:alter|union)\b",
        paranoia=2,
    ),
    Signature(
        "escaped-meta",
        "sqli",
        "quote, hash or equals sign written as a \\x escape",
        r"\\x(?:2[37]|3d)",
        paranoia=2,
    ),
    # --- cross-site scripting
    Signature("script-tag", "xss", "script element", r"<\s*/?\s*(?:[\w-]+\s*:\s*)?script\b"),
    Signature(
        "event-handler",
        "xss",
        "HTML event handler attribute",
        r"<\s*[a-z][\w:-]*\b[^>]*?[\s/\"']on[a-z]{3,}\s*=|[\"'`]\s*/?\s*on[a-z]{3,}\s*=\s*[\"'`]?[\w(]",
    ),
    Signature(
        "script-uri",
        "xss",
        "script or data URI",
        r"\b(?:j\s*a\s*v\s*a|v\s*b|l\s*i\s*v\s*e)\s*s\s*c\s*r\s*i\s*p\s*t\s*:|\bdata\s*:\s*(?:text/html|[\w/+.-]*;\s*base64)",
    ),
    Signature(
        "dangerous-tag",
        "xss",
        "HTML element that can load or run content",
        r"<\s*/?\s*(?:iframe|frame|frameset|object|embed|applet|svg|math|base|meta|link|style|form|input|button"
        r"|isindex|textarea|keygen|marquee|template|noscript|xmp|plaintext|layer|ilayer|bgsound|[\w-]+:[\w-]+"
        r"|\?import)\b",
    ),
    Signature(
        "js-sink",
        "xss",
        "JavaScript execution sink",
        r"\b(?:alert|prompt|confirm|eval|settimeout|setinterval|execscript|fromcharcode)\s*(?:\(|`)"
        r"|\bdocument\s*\.\s*(?:cookie|domain|write|writeln|location)\b|\b(?:window|top|self|parent)\s*\.\s*location\b"
        r"|\bnew\s+function\s*\(|\bimport\s*\(\s*['\"`]",
    ),
    Signature(
        "template-call",
        "xss",
        "JavaScript call through a template literal",
        r"\.\s*(?:call|apply|bind|sort|map|filter|reduce|constructor)\s*`|\$\{\s*(?:alert|eval|prompt|confirm|name)\b",
    ),
    Signature(
        "jsfuck",
        "xss",
        "JavaScript written with brackets and operators only",
        r"(?:\[\s*\]|!\s*\[\s*\]|\(\s*!\s*\[)[\s\[\]()!+]{20,}",
    ),
    Signature(
        "css-script",
        "xss",
        "CSS that runs script",
        r"\bexpression\s*\(|-moz-binding\s*:|\bbehavior\s*:\s*url\s*\(|@import\b[^;]{0,40}javascript",
    ),
    Signature(
        "attribute-vector",
        "xss",
        "HTML attribute that loads or runs content",
        r"\b(?:formaction|xlink:href|srcdoc|xmlns\s*:\s*\w+)\s*=|<[^>]*\bpattern\s*=",
    ),
)
