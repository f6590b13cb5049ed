"""DLP stream scanning: matches split across feeds are found exactly once, offsets and lines, multi-pattern rules,
the Python `re` reference, HTTP message rules and the pipeline inspector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podwall.core.types import Direction
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import L7Event
from podwall.inspect.dlp import DlpEngine, Sensor, builtin_sensors
from podwall.inspect.dlp.reference import ReferenceScanner
from podwall.inspect.findings import Finding
from podwall.inspect.pipeline import InspectingEngine, Inspection
from podwall.lab.synth import TcpConversation

CARD = b"4111 1111 1111 1111"
REFERENCE = ReferenceScanner(builtin_sensors())
REFERENCE_COMBINED = ReferenceScanner(builtin_sensors(), combined=True)
TEXT = b"order 7731 paid with " + CARD + b" by 123-45-6789;\namex 378282246310005\nend"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DlpEngine:
    return DlpEngine(builtin_sensors(), cache_dir=tmp_path_factory.mktemp("hs"))


def _key(f: Finding) -> tuple[Any, ...]:
    return (f.id, f.match, f.location, tuple(sorted(f.detail.items())))


def _feed_all(engine: DlpEngine, chunks: list[bytes], **kw: Any) -> list[Finding]:
    stream = engine.stream(**kw)
    found: list[Finding] = []
    for c in chunks:
        found += stream.feed(c)
    return found + stream.close()


def test_one_shot_scan_finds_each_value_once(engine: DlpEngine) -> None:
    """The reference text holds a Visa, an SSN and an Amex number: three findings at their offsets."""
    found = engine.scan(TEXT)
    assert [(f.id, f.detail["offset"]) for f in found] == [
        ("dlp.sensor.creditcard/visa", TEXT.index(CARD)),
        ("dlp.sensor.ssn/ssn", TEXT.index(b"123-45")),
        ("dlp.sensor.creditcard/amex", TEXT.index(b"3782")),
    ]


SPLITS = [("inside-card", TEXT.index(CARD) + 7), ("before-boundary", TEXT.index(CARD) + len(CARD)),
          ("inside-ssn", TEXT.index(b"123-45") + 4), ("first-byte", 1), ("last-byte", len(TEXT) - 1)]  # fmt: skip


@pytest.mark.parametrize("at", [a for _, a in SPLITS], ids=[i for i, _ in SPLITS])
def test_value_split_across_two_feeds_is_found_once(engine: DlpEngine, at: int) -> None:
    """Splitting the text anywhere into two feeds gives exactly the one-shot findings."""
    assert [_key(f) for f in _feed_all(engine, [TEXT[:at], TEXT[at:]])] == [_key(f) for f in engine.scan(TEXT)]


def test_byte_by_byte_feeding_finds_each_value_once(engine: DlpEngine) -> None:
    """Feeding one byte at a time finds the same three values, each once."""
    chunks = [TEXT[i : i + 1] for i in range(len(TEXT))]
    assert [_key(f) for f in _feed_all(engine, chunks)] == [_key(f) for f in engine.scan(TEXT)]


def test_value_at_the_very_end_is_reported_by_close(engine: DlpEngine) -> None:
    """A card that ends the stream is only known complete when the stream closes: close() reports it."""
    stream = engine.stream()
    assert stream.feed(b"x " + CARD) == []
    found = stream.close()
    assert [f.id for f in found] == ["dlp.sensor.creditcard/visa"]
    assert stream.close() == []


def test_offsets_count_from_the_offset_base_and_lines_from_one(engine: DlpEngine) -> None:
    """Offsets add the stream's base; with line tracking the finding names the line its value starts on."""
    data = b"a\nb\n\nssn 123-45-6789\n"
    found = _feed_all(engine, [data[:3], data[3:9], data[9:]], offset_base=1000, track_lines=True)
    assert [(f.detail["offset"], f.detail["line"], f.location) for f in found] == [
        (1000 + data.index(b"123"), 4, f"line 4, offset {1000 + data.index(b'123')}")
    ]


def test_feeding_a_closed_stream_is_an_error(engine: DlpEngine) -> None:
    """A closed stream refuses more bytes instead of scanning them with freed state."""
    stream = engine.stream()
    stream.close()
    with pytest.raises(RuntimeError):
        stream.feed(b"more")


def test_the_stream_keeps_only_a_bounded_tail(engine: DlpEngine) -> None:
    """The built-in patterns are bounded, so each stream keeps a few dozen bytes of history, not the stream."""
    assert 21 <= engine.tail_bytes <= 64


_values = st.sampled_from([CARD, b"378282246310005", b"123-45-6789", b"6011-0009-9013-9424", b"000-12-3456", b"4111"])
_noise = st.binary(max_size=40)
_texts = st.lists(st.one_of(_values, _noise, st.sampled_from([b" ", b"-", b"\n", b"7"])), max_size=20).map(b"".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_texts, cuts=st.lists(st.integers(min_value=0, max_value=800), max_size=12))
def test_random_splits_give_the_one_shot_findings(engine: DlpEngine, data: bytes, cuts: list[int]) -> None:
    """Random bytes with cards and SSNs, fed in random pieces, give exactly what one whole scan gives."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert [_key(f) for f in _feed_all(engine, chunks)] == [_key(f) for f in engine.scan(data)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_texts)
def test_hyperscan_agrees_with_the_python_re_reference(engine: DlpEngine, data: bytes) -> None:
    """The hyperscan engine and the Python `re` reference (both forms) find the same values at the same offsets."""
    expected = [_key(f) for f in engine.scan(data)]
    assert [_key(f) for f in REFERENCE.scan(data)] == expected
    assert [_key(f) for f in REFERENCE_COMBINED.scan(data)] == expected


def _custom(rules: list[dict[str, Any]]) -> Sensor:
    return Sensor.model_validate({"name": "sensor.custom", "comment": "Custom", "rules": rules})


def test_a_growing_match_is_reported_once(tmp_path: Path) -> None:
    """`secret=[a-z]+` matches at every letter; only the first end of one occurrence counts, across feeds."""
    engine = DlpEngine([_custom([{"name": "kv", "patterns": [{"value": "secret=[a-z]+"}]}])], cache_dir=tmp_path)
    chunks = [b"x secret=ab", b"cdef secret=zz"]
    data = b"".join(chunks)
    found = _feed_all(engine, chunks)
    assert [f.detail["offset"] for f in found] == [data.index(b"secret"), data.rindex(b"secret")]


def test_multi_pattern_rule_fires_when_its_last_pattern_matches(tmp_path: Path) -> None:
    """A stream rule with two patterns fires once both have matched in the stream, then starts over."""
    rules = [{"name": "both", "patterns": [{"value": "BEGIN KEY"}, {"value": "END KEY"}]}]
    engine = DlpEngine([_custom(rules)], cache_dir=tmp_path)
    chunks = [b"BEGIN KEY ... ", b"END KEY END KEY BEGIN KEY"]
    data = b"".join(chunks)
    found = _feed_all(engine, chunks)
    # the first END completes the first pair; the second END waits for the BEGIN that follows it
    assert [f.detail["offset"] for f in found] == [data.index(b"END"), data.rindex(b"BEGIN")]


def test_a_match_longer_than_the_tail_is_masked_with_its_start_cut(tmp_path: Path) -> None:
    """An unbounded custom pattern whose match outgrows the kept tail is still reported, marked as cut."""
    engine = DlpEngine([_custom([{"name": "blob", "patterns": [{"value": "<<[a-z]*>>"}]}])], cache_dir=tmp_path)
    long = b"<<" + b"q" * (engine.tail_bytes * 3) + b">>"
    found = _feed_all(engine, [long[i : i + 100] for i in range(0, len(long), 100)])
    assert len(found) == 1 and found[0].match is not None and found[0].match.startswith("…")


def _http(kind: str, direction: Direction, **fields: Any) -> L7Event:
    return L7Event("http", kind, direction, fields)


MESSAGE_RULES = [
    {"name": "admin-url", "patterns": [{"value": "/admin", "context": "url"}]},
    {"name": "basic-admin", "patterns": [{"value": "Authorization: Basic YWRtaW46", "context": "header"}]},
    {"name": "card-no-tls", "verify": "luhn", "patterns": [
        {"value": "[0-9]{16}", "context": "body"}, {"op": "!regex", "value": "X-Internal:", "context": "header"}]},
]  # fmt: skip
MESSAGES = [
    ("url", _http("request", Direction.C2S, method="GET", path="/admin/users", headers=[]), ["admin-url"]),
    # the DPI lower-cases header names; the header text spells them as usual ("Authorization")
    ("header", _http("request", Direction.C2S, method="GET", path="/",
                      headers=[("authorization", "Basic YWRtaW46cA==")]), ["basic-admin"]),
    ("header-other-user", _http("request", Direction.C2S, method="GET", path="/",
                                headers=[("authorization", "Basic cm9vdDpw")]), []),
    ("url-not-in-body", _http("response", Direction.S2C, status=200, headers=[], body=b"/admin"), []),
    ("body", _http("response", Direction.S2C, status=200, headers=[], body=b'{"pan":"4111111111111111"}'),
     ["card-no-tls"]),
    ("body-have-not", _http("response", Direction.S2C, status=200, headers=[("x-internal", "1")],
                            body=b'{"pan":"4111111111111111"}'), []),
    ("body-bad-luhn", _http("response", Direction.S2C, status=200, headers=[], body=b"4111111111111112"), []),
    ("not-http", L7Event("redis", "command", Direction.C2S, {"path": "/admin"}), []),
]  # fmt: skip


@pytest.mark.parametrize("event,rules", [(e, r) for _, e, r in MESSAGES], ids=[i for i, _, _ in MESSAGES])
def test_message_rules_judge_url_header_and_body(tmp_path: Path, event: L7Event, rules: list[str]) -> None:
    """Rules with url/header/body contexts or `!regex` are judged per HTTP message, on the right part only."""
    engine = DlpEngine([_custom(MESSAGE_RULES)], cache_dir=tmp_path)
    assert not engine.streams_bytes and engine.scans_messages
    found = engine.scan_message(event)
    assert [f.detail["rule"] for f in found] == rules
    assert all(f.direction is event.direction for f in found)


def _frames(mss: int, request: bytes, response: bytes) -> list[Frame]:
    conv = TcpConversation("10.0.0.1", 40000, "10.0.0.2", 80, 1.0, mss=mss)
    conv.send(True, request)
    conv.send(False, response)
    return [Frame(i + 1, ts, 1, data, len(data)) for i, (ts, data) in enumerate(conv.close())]


@pytest.mark.parametrize("mss", [5, 7, 1448], ids=["mss5", "mss7", "mss1448"])
def test_inspector_finds_a_card_split_over_tcp_segments(engine: DlpEngine, mss: int) -> None:
    """In the inspection pipeline, a card in a response split over tiny TCP segments is one S2C finding."""
    request = b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\n\r\n"
    body = b'{"pan":"' + CARD.replace(b" ", b"") + b'"}'
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    pipe = InspectingEngine(Inspection(flow_inspectors=[lambda ctx: engine.inspector()]))
    for frame in _frames(mss, request, response):
        pipe.feed(frame)
    pipe.finish()
    found = [c.finding for c in pipe.findings]
    assert [(f.id, f.direction) for f in found] == [("dlp.sensor.creditcard/visa", Direction.S2C)]
    assert found[0].detail["offset"] == response.index(b"4111")


def test_inspector_scans_only_the_directions_it_is_given(engine: DlpEngine) -> None:
    """An inspector made for C2S only ignores the server's bytes."""
    inspector = engine.inspector(directions=(Direction.C2S,))
    assert inspector.on_bytes(Direction.S2C, b"ssn 123-45-6789 ", False) == []
    assert [f.id for f in inspector.on_bytes(Direction.C2S, b"ssn 123-45-6789 ", False)] == ["dlp.sensor.ssn/ssn"]
    assert inspector.finish() == []
    assert not inspector.wants_bytes


def test_inspector_scans_each_datagram_alone(engine: DlpEngine) -> None:
    """UDP datagrams are scanned one by one: a value split over two datagrams is not joined."""
    inspector = engine.inspector()
    assert inspector.on_bytes(Direction.C2S, b"123-45-", True) == []
    assert inspector.on_bytes(Direction.C2S, b"6789", True) == []
    assert [f.detail["offset"] for f in inspector.on_bytes(Direction.C2S, b"x 123-45-6789", True)] == [13]


def test_a_gap_ends_the_stream_so_values_do_not_join_across_it(engine: DlpEngine) -> None:
    """After on_gap, the digits before the hole and after it are never read as one number."""
    inspector = engine.inspector()
    assert inspector.on_bytes(Direction.C2S, b"x 123-45-", False) == []
    assert inspector.on_gap(Direction.C2S) == []
    assert inspector.on_bytes(Direction.C2S, b"6789 y", False) == []
    assert [f.id for f in inspector.on_bytes(Direction.C2S, b" 219-44-1234 ", False)] == ["dlp.sensor.ssn/ssn"]


def test_max_bytes_bounds_the_scanned_prefix_of_each_direction(engine: DlpEngine) -> None:
    """With max_bytes, a direction is scanned up to that many bytes, then the inspector stops wanting bytes."""
    from podwall.inspect.dlp import DlpInspector

    inspector = DlpInspector(engine, max_bytes=32)
    first = inspector.on_bytes(Direction.C2S, b"ssn 123-45-6789 " + b"." * 10 + b" 219-44-1234 ", False)
    assert [f.detail["offset"] for f in first] == [4]
    inspector.on_bytes(Direction.S2C, b"." * 40, False)
    assert not inspector.wants_bytes
    assert inspector.on_bytes(Direction.C2S, b" 219-44-1234 ", False) == []
