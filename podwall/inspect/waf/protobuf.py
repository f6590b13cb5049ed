"""The text inside gRPC and protobuf bodies, read without a schema, for the WAF's own layer.

A protobuf message is a sequence of fields `key (varint: field number << 3 | wire type) | value`;
wire type 2 (length-delimited) holds strings, bytes, nested messages and packed numbers alike,
and only the schema tells which. Without one, podwall reads each length-delimited value the
way `protoc --decode_raw` does, and keeps whatever could carry an attacker's text:

- a value that is valid UTF-8 without control characters (tab and line ends aside) is a string;
- a value that parses as a message throughout is walked as one; when it also reads as text,
  it is a string too if it has numeric fields (their bytes could hide text no string field
  holds), not if it has string fields only (its text would add nothing but their key and
  length bytes, quotes and digits among them, a source of false alarms);
- any other value is read by `text_runs`: text that control characters or a few stray
  undecodable bytes cut (a string an attacker salted so that it does not read as one) gives
  its pieces of at least `MIN_RUN` characters; binary data (compressed, encrypted, hashes),
  which fails UTF-8 decoding every few bytes, gives only its printable runs of at
  least `BINARY_RUN` characters. Shorter runs occur by chance in binary data and look like
  SQL to libinjection often enough to matter: in 16 MiB of random bytes, runs of 8+ characters
  gave 21 own-layer hits, runs of 12+ one, runs of 16+ none.

Each string is named `ARGS:protobuf.<field>.<field>...` (field numbers from the top). A body cut
short (the DPI captures the first 64 KiB) is read as far as it goes: a value running past the
end is taken as it stands, and a body that is not protobuf throughout is read as text too.

gRPC frames messages with a 5-byte prefix (compressed flag, length). `grpc_unframe` strips them
from a raw body; the HTTP/2 parser already hands the WAF unframed messages. The two cannot be
confused: a protobuf message never starts with 0x00-0x07 (field number 0), a gRPC body always
starts with the flag 0x00 or 0x01. Work is bounded: `MAX_DEPTH` levels (protobuf's own default
recursion limit), `MAX_STEPS` fields read in all; what lies past either bound is read as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = [
    "BINARY_RUN",
    "MAX_DEPTH",
    "MAX_STEPS",
    "MIN_RUN",
    "STRAY",
    "grpc_unframe",
    "protobuf_strings",
    "text_runs",
]

MAX_DEPTH = 100  # nesting levels walked: protobuf's usual recursion limit, past which servers reject a message
MAX_STEPS = 20_000  # fields read per body, parses that fail included: the walk's cost is bounded
MIN_RUN = 4  # characters of a piece of cut text worth inspecting
BINARY_RUN = 16  # printable characters in a row that count as text inside binary data
STRAY = 32  # text has at most one undecodable byte in this many (and may have one in any case)
_GRPC_TRAILERS = 0x80  # gRPC-Web: a trailers frame follows the messages
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PIECE = re.compile(rf"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]{{{MIN_RUN},}}")
_RUN = re.compile(rf"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]{{{BINARY_RUN},}}")

Found = tuple[str, str]  # (location, text)


def grpc_unframe(body: bytes) -> bytes | None:
    """The messages of a gRPC length-prefixed body, concatenated; None when `body` is not framed so.

    Compressed messages (flag 1) are left out; a last message cut short is kept as it stands.
    """
    if len(body) < 5 or body[0] not in (0, 1):
        return None
    out = bytearray()
    pos = 0
    while len(body) - pos >= 5:
        flag = body[pos]
        if flag == _GRPC_TRAILERS:
            break
        if flag not in (0, 1):
            return None
        end = pos + 5 + int.from_bytes(body[pos + 1 : pos + 5], "big")
        if flag == 0:
            out += body[pos + 5 : end]
        pos = end
    return bytes(out)


def text_runs(data: bytes | memoryview) -> list[str]:
    """The text in bytes of unknown type: all of it when it is clean text, else its pieces or runs.

    Clean text (UTF-8, no control characters but tab and line ends) is one string. Text cut by
    control characters or by stray undecodable bytes (at most one in STRAY, or one) gives its
    pieces of at least MIN_RUN characters; anything else is binary and gives its printable runs
    of at least BINARY_RUN characters.
    """
    text = bytes(data).decode("utf-8", "replace")
    stray = text.count("\ufffd")
    if not stray and not _CONTROL.search(text):
        return [text] if text else []
    if stray <= max(1, len(data) // STRAY):
        return _PIECE.findall(text)
    return _RUN.findall(text)


class _Walk:
    """One body's walk: the step budget shared by every level."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0

    def fields(self, data: memoryview, cut: bool) -> tuple[list[tuple[int, memoryview | None]], int, bool]:
        """(field number, length-delimited value or None) pairs, the bytes read, and whether all of `data` was.

        A fault stops the reading there. In `cut` data (a body cut short) a value running past
        the end is taken as it stands.
        """
        out: list[tuple[int, memoryview | None]] = []
        pos, end = 0, len(data)
        while pos < end:
            self.steps += 1
            if self.steps > MAX_STEPS:
                return out, pos, False
            key, at = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if at < 0 or number == 0:
                return out, pos, False
            if wire == 0:
                _, at = _varint(data, at)
                if at < 0:
                    return out, pos, False
                out.append((number, None))
            elif wire in (1, 5):
                at += 8 if wire == 1 else 4
                if at > end:
                    return out, pos, False
                out.append((number, None))
            elif wire == 2:
                size, start = _varint(data, at)
                if start < 0 or (start + size > end and not cut):
                    return out, pos, False
                at = min(start + size, end)
                out.append((number, data[start:at]))
            elif wire in (3, 4):
                out.append((number, None))  # group start/end (deprecated): its fields follow inline
            else:
                return out, pos, False
            pos = at
        return out, pos, True

    def message(self, fields: list[tuple[int, memoryview | None]], path: str, depth: int, cut: bool) -> Iterator[Found]:
        """The strings of a message whose fields were read; only its last field can have been cut."""
        last = len(fields) - 1
        for i, (number, value) in enumerate(fields):
            if value is not None and len(value):
                yield from self.value(value, f"{path}.{number}", depth, cut and i == last)

    def value(self, value: memoryview, path: str, depth: int, cut: bool) -> Iterator[Found]:
        """A length-delimited value: a nested message, a string (or both), else cut text or binary."""
        text = _clean_text(bytes(value), cut)
        if depth < MAX_DEPTH and self.steps <= MAX_STEPS and value[0] > 7:
            fields, _, whole = self.fields(value, cut)
            if fields and whole:
                # Its strings are read field by field. Read whole as well only when numeric fields,
                # whose bytes no string holds, could hide text: with string fields alone it would
                # add nothing but their key and length bytes ("\n'" before the text: quotes).
                if text is not None and any(v is None for _, v in fields):
                    yield f"ARGS:{path}", text
                yield from self.message(fields, path, depth + 1, cut)
                return
        if text is not None:
            yield f"ARGS:{path}", text
        else:
            for run in text_runs(value):
                yield f"ARGS:{path}", run


def _clean_text(raw: bytes, cut: bool) -> str | None:
    """`raw` as a string if it is UTF-8 without control characters; a cut value may end inside a character."""
    if _CONTROL_BYTE.search(raw):
        return None  # most nested messages stop here, at their first tag or length byte
    for drop in range(4 if cut else 1):
        try:
            return raw[: len(raw) - drop].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it); position -1 when the varint is cut or longer than 10 bytes."""
    value = shift = 0
    end = min(len(data), pos + 10)
    while pos < end:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    return 0, -1


def protobuf_strings(body: bytes, root: str = "protobuf") -> Iterator[Found]:
    """(location, text) for the text a protobuf body holds, in wire order; the body may be cut short.

    A body that does not read as protobuf to its end (it was mislabelled, or is not protobuf at
    all) is also read whole by `text_runs`, as `REQUEST_BODY`.
    """
    data = memoryview(body)
    walk = _Walk()
    fields, _, whole = walk.fields(data, cut=True)
    yield from walk.message(fields, root, 0, cut=True)
    if not whole:
        for run in text_runs(data):
            yield "REQUEST_BODY", run
