"""What podwall's own WAF layer inspects in a request: named values ("targets"), decoded as an attacker encodes.

A request yields its path segments (`REQUEST_FILENAME`), query arguments and argument names
(`ARGS:name`, `ARGS_NAMES:name`), body arguments by content type (urlencoded, JSON as
`ARGS:json.a.b`, multipart parts and file names, XML attribute values and text as `XML://@name`
and `XML:/*`, gRPC and protobuf string fields as `ARGS:protobuf.1.2` (protobuf.py), any other
body as `REQUEST_BODY`), cookies (`REQUEST_COOKIES:name`) and the values of every header that
is not a fixed-format one (`REQUEST_HEADERS:User-Agent`, `X-*`, ...).

`decodings` returns the distinct forms a value can take after the decodings attackers rely on:
URL decoding repeated (bounded, IIS-style `%uXXXX` too), HTML entities, JavaScript escapes,
NUL removal, Unicode compatibility folding (fullwidth U+FF1C is `<`), SQL comments replaced by a
space and whitespace runs collapsed; the raw value is kept as well when it differs. Everything
is bounded: number of targets, value length, decoding rounds.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from urllib.parse import unquote, unquote_plus

from podwall.inspect.waf.http_request import HttpRequest
from podwall.inspect.waf.protobuf import grpc_unframe, protobuf_strings, text_runs

__all__ = ["MAX_TARGETS", "MAX_VALUE", "Target", "decodings", "request_targets"]

MAX_TARGETS = 512  # values inspected per request; the rest are not (CRS still sees everything)
MAX_VALUE = 8192  # characters of one value inspected
URL_ROUNDS = 3  # double and triple URL encoding are common evasions; more is noise

# Headers whose values have a fixed grammar (or are credentials, which must not be echoed into findings).
SKIPPED_HEADERS = frozenset(
    {
        "host", "accept", "accept-encoding", "accept-language", "accept-charset", "connection",
        "content-length", "content-type", "content-encoding", "transfer-encoding", "te", "keep-alive",
        "cache-control", "pragma", "upgrade-insecure-requests", "if-modified-since", "if-none-match",
        "if-match", "if-unmodified-since", "if-range", "range", "date", "dnt", "priority", "authorization",
        "proxy-authorization", "cookie", "upgrade", "expect", "origin",
    }
)  # fmt: skip

_PERCENT_U = re.compile(r"%u([0-9a-fA-F]{4})")
_JS_ESCAPE = re.compile(r"\\(?:u\{([0-9a-fA-F]{1,6})\}|u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2}))")
_SQL_COMMENT = re.compile(r"/\*(?!!).*?\*/", re.S)  # MySQL's /*! ... */ runs its content: keep it
_MYSQL_COND = re.compile(r"/\*!\d*|\*/")
_SPACES = re.compile(r"[\s\x0b\x0c\xa0]+")
_XML_ATTR = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_XML_TAG = re.compile(r"<[^>]*>", re.S)
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))""", re.I)
_DISPOSITION = re.compile(r"""\b(name|filename)\s*=\s*(?:"([^"]*)"|([^;\s]*))""", re.I)
# Protobuf bodies without gRPC framing (REST gateways, Connect's unary calls, ...)
PROTOBUF_TYPES = frozenset(
    {
        "application/protobuf",
        "application/x-protobuf",
        "application/vnd.google.protobuf",
        "application/x-google-protobuf",
    }
)


@dataclass(frozen=True, slots=True)
class Target:
    """One value to inspect and where it came from, named as ModSecurity names its variables."""

    location: str
    value: str
    plus_is_space: bool = True  # form encoding: true for arguments and cookies, false for the path


def _js_unescape(value: str) -> str:
    def repl(m: re.Match[str]) -> str:
        code = int(m.group(1) or m.group(2) or m.group(3), 16)
        return chr(code) if code < 0x110000 else m.group(0)

    return _JS_ESCAPE.sub(repl, value)


def _url_decode(value: str, plus_is_space: bool) -> str:
    if "%u" in value or "%U" in value:
        value = _PERCENT_U.sub(lambda m: chr(int(m.group(1), 16)), value)
    return unquote_plus(value) if plus_is_space else unquote(value)


def decodings(value: str, plus_is_space: bool = True) -> list[str]:
    """The distinct decoded forms of `value` worth inspecting, the fully decoded one first."""
    value = value[:MAX_VALUE]
    current = value
    for i in range(URL_ROUNDS):
        decoded = _url_decode(current, plus_is_space and i == 0)
        if decoded == current:
            break
        current = decoded
    # entity and escape decoding twice: `&amp;lt;` and `\\u0026lt;` are both seen in the wild
    for _ in range(2):
        decoded = _js_unescape(html.unescape(current))
        if decoded == current:
            break
        current = decoded
    current = current.replace("\x00", "")
    if not current.isascii():
        # fullwidth and other compatibility forms of < > ' " are read as the ASCII ones by some back ends
        current = unicodedata.normalize("NFKC", current)
    forms = [current]
    if "/*" in current:
        forms.append(_SPACES.sub(" ", _MYSQL_COND.sub(" ", _SQL_COMMENT.sub(" ", current))))
    collapsed = _SPACES.sub(" ", current).strip()
    if collapsed != current:
        forms.append(collapsed)
    if value != current:
        forms.append(value)  # the raw form: a signature may name the encoding itself
    return list(dict.fromkeys(forms))


def _pairs(text: str) -> Iterator[tuple[str, str]]:
    """Name/value pairs of a query string or urlencoded body, decoded once (form rules)."""
    for part in text.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        yield name, value if sep else ""


def _args(text: str, kind: str = "ARGS") -> Iterator[Target]:
    for name, value in _pairs(text):
        dname = unquote_plus(name)
        yield Target(f"{kind}_NAMES:{dname}", name)
        if value:
            yield Target(f"{kind}:{dname}", value)


def _json_targets(node: object, path: str, depth: int = 0) -> Iterator[Target]:
    if depth > 32:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}"
            yield Target(f"ARGS_NAMES:{child}", str(key))
            yield from _json_targets(value, child, depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _json_targets(value, f"{path}.{i}" if i < 64 else f"{path}.*", depth + 1)
    elif isinstance(node, str):
        yield Target(f"ARGS:{path}", node)
    elif node is not None and not isinstance(node, bool):
        yield Target(f"ARGS:{path}", str(node))


def _xml_targets(text: str) -> Iterator[Target]:
    # A tokenizer, not an XML parser: no entity expansion, no external fetches, tolerant of broken XML.
    for tag in _XML_TAG.finditer(text):
        for m in _XML_ATTR.finditer(tag.group(0)):
            yield Target(f"XML://@{m.group(1)}", m.group(2) if m.group(2) is not None else m.group(3))
    for chunk in _XML_TAG.split(text):
        if chunk.strip():
            yield Target("XML:/*", chunk)


def _multipart_targets(body: bytes, content_type: str) -> Iterator[Target]:
    m = _BOUNDARY.search(content_type)
    if m is None:
        yield Target("REQUEST_BODY", body.decode("latin-1"))
        return
    delimiter = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not _:
            head, _, content = part.lstrip(b"\n").partition(b"\n\n")
        params = {k.lower(): (a if a is not None else b) for k, a, b in _DISPOSITION.findall(head.decode("latin-1"))}
        name = params.get("name", "")
        yield Target(f"ARGS_NAMES:{name}", name)
        if "filename" in params:
            yield Target(f"FILES:{name}", params["filename"])
            continue  # file contents are the upload itself, not an argument
        yield Target(f"ARGS:{name}", content.rstrip(b"\r\n").decode("utf-8", "replace"))


def _json_documents(text: str) -> Iterator[Target]:
    """The targets of one or more JSON documents in a row (gRPC's JSON messages, unframed and concatenated)."""
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        try:
            node, pos = decoder.raw_decode(text, pos)
        except ValueError:
            yield Target("REQUEST_BODY", text[pos:])
            return
        yield from _json_targets(node, "json")


def _message_targets(body: bytes, media: str) -> Iterator[Target] | None:
    """Targets of a gRPC or protobuf body, by media type (`application/grpc[+proto|+json|+x]`); None for others.

    A gRPC body may come framed (HTTP/1 gRPC-Web, a file) or already unframed (the HTTP/2 DPI).
    """
    if media in PROTOBUF_TYPES:
        subtype = "proto"
    elif media.startswith("application/grpc") and "-text" not in media:  # gRPC-Web's text form is base64
        subtype = media.partition("+")[2] or "proto"
        unframed = grpc_unframe(body)
        body = unframed if unframed is not None else body
    else:
        return None
    if subtype == "json":
        return _json_documents(body[: MAX_VALUE * 8].decode("utf-8", "replace"))
    if subtype == "proto":
        return (Target(location, value) for location, value in protobuf_strings(body))
    return (Target("REQUEST_BODY", run) for run in text_runs(body))  # a codec podwall cannot read


def _body_targets(req: HttpRequest) -> Iterator[Target]:
    body = req.body
    if not body:
        return
    ctype = (req.header("content-type") or "").lower()
    messages = _message_targets(body, ctype.partition(";")[0].strip())
    if messages is not None:
        yield from messages
        return
    text = body[: MAX_VALUE * 8].decode("utf-8", "replace")
    if "multipart/" in ctype:
        yield from _multipart_targets(body, req.header("content-type") or "")
    elif "json" in ctype:
        try:
            yield from _json_targets(json.loads(text), "json")
        except ValueError:
            yield Target("REQUEST_BODY", text)
    elif "xml" in ctype:
        yield from _xml_targets(text)
    elif "x-www-form-urlencoded" in ctype or (not ctype and "=" in text):
        yield from _args(text)
    else:
        yield Target("REQUEST_BODY", text)


def _header_targets(req: HttpRequest) -> Iterator[Target]:
    for name, value in req.headers:
        lname = name.lower()
        if lname == "cookie":
            for pair in value.split(";"):
                cname, sep, cvalue = pair.strip().partition("=")
                if cname:
                    yield Target(f"REQUEST_COOKIES_NAMES:{cname}", cname)
                if sep and cvalue:
                    yield Target(f"REQUEST_COOKIES:{cname}", cvalue)
        elif lname not in SKIPPED_HEADERS and not lname.startswith("sec-") and value:
            yield Target(f"REQUEST_HEADERS:{name}", value)


def request_targets(req: HttpRequest) -> list[Target]:
    """Every value of `req` the own layer inspects (at most MAX_TARGETS), in request order."""
    out: list[Target] = []
    for segment in req.path.split("/"):
        if segment:
            out.append(Target("REQUEST_FILENAME", segment, plus_is_space=False))
    sources = [_args(req.query), _body_targets(req), _header_targets(req)]
    for i, source in enumerate(sources):
        for target in source:
            if len(out) >= MAX_TARGETS - 1:
                out.append(_overflow(target, chain(source, *sources[i + 1 :])))
                return out
            if target.value:
                out.append(target)
    return out


def _overflow(first: Target, rest: Iterator[Target]) -> Target:
    """The values past the limit as one, joined by newlines (at most MAX_VALUE characters): a
    request of many small values must not hide one behind them (a protobuf body, which no CRS
    rule reads, would otherwise go uninspected past the limit)."""
    parts, size = [first.value], len(first.value)
    for target in rest:
        if size >= MAX_VALUE:
            break
        if target.value:
            parts.append(target.value)
            size += len(target.value) + 1
    return Target("REQUEST_BODY", "\n".join(parts)[:MAX_VALUE])
