"""JsonlSink and read_jsonl: one event per line, durable after each batch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import podwall.store.sinks as sinks_module
from podwall.core.errors import InputError
from podwall.core.events import Event, EventVerdict
from podwall.store.sinks import JsonlSink, Sink, read_jsonl

MakeEvent = Any


def test_lines_parse_back_into_events(tmp_path: Path, make_event: MakeEvent) -> None:
    """Each written event is one line whose JSON validates back into an equal Event."""
    batch = [
        make_event("one", message="caf\u00e9 \U0001f512", l7={"path": "/a\x00b"}),
        make_event("two", minutes=1, verdict=EventVerdict(action="alert", rule_id=3, detail={"k": [1, 2]})),
    ]
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.write(batch)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(batch)
    assert [Event.model_validate(json.loads(line)) for line in lines] == batch
    assert read_jsonl(path) == batch
    assert "caf\u00e9" in lines[0]  # UTF-8 text, not \\u escapes


def test_batches_append(tmp_path: Path, make_event: MakeEvent) -> None:
    """Later batches and later sinks on the same file append; nothing is overwritten."""
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.write([make_event("a")])
        sink.write([make_event("b")])
    with JsonlSink(path) as sink:
        sink.write([make_event("c")])
    assert [event.id for event in read_jsonl(path)] == ["a", "b", "c"]


def test_missing_directories_are_created(tmp_path: Path, make_event: MakeEvent) -> None:
    """The sink creates missing parent directories of its file."""
    path = tmp_path / "x" / "y" / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.write([make_event("a")])
    assert [event.id for event in read_jsonl(path)] == ["a"]


def test_each_batch_is_fsynced(tmp_path: Path, make_event: MakeEvent, monkeypatch: pytest.MonkeyPatch) -> None:
    """write fsyncs the file once per batch, after the data is written, before returning."""
    path = tmp_path / "events.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_size if os.path.samefile(f"/proc/self/fd/{fd}", path) else -1)
        real_fsync(fd)

    with JsonlSink(path) as sink:
        monkeypatch.setattr(sinks_module.os, "fsync", spy)
        sink.write([make_event("a"), make_event("b")])
        sink.write([])
        sink.write([make_event("c")])
    sizes = [size for size in synced if size >= 0]
    assert len(sizes) == 2
    assert sizes[-1] == path.stat().st_size
    assert 0 < sizes[0] < sizes[1]


def test_failed_write_leaves_file_as_before(
    tmp_path: Path, make_event: MakeEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a batch cannot be made durable, its bytes are removed and the sink keeps working."""
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.write([make_event("kept")])
        before = path.read_bytes()
        real_fsync = os.fsync
        calls = {"n": 0}

        def failing(fd: int) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(sinks_module.os, "fsync", failing)
        with pytest.raises(OSError, match="No space left"):
            sink.write([make_event("lost-1"), make_event("lost-2")])
        assert path.read_bytes() == before
        sink.write([make_event("after")])
    assert [event.id for event in read_jsonl(path)] == ["kept", "after"]


def test_unserialisable_event_writes_nothing(tmp_path: Path, make_event: MakeEvent) -> None:
    """A batch with an event that cannot become JSON is refused before any byte is written."""
    path = tmp_path / "events.jsonl"
    bad = make_event("bad", l7={"raw": b"\xff\xfe"})
    with (
        JsonlSink(path) as sink,
        pytest.raises(ValueError, match=r"batch item 1 \(event 'bad'\): cannot be written"),
    ):
        sink.write([make_event("good"), bad])
    assert path.read_bytes() == b""


def test_closed_sink_refuses_writes(tmp_path: Path, make_event: MakeEvent) -> None:
    """Writing after close is an error, not a silent drop."""
    sink = JsonlSink(tmp_path / "e.jsonl")
    sink.close()
    sink.close()
    with pytest.raises(ValueError, match="is closed"):
        sink.write([make_event("a")])


def test_sinks_satisfy_protocol(tmp_path: Path) -> None:
    """JsonlSink is a Sink, so later sinks and the pipeline can treat all of them alike."""
    with JsonlSink(tmp_path / "e.jsonl") as sink:
        assert isinstance(sink, Sink)


def test_read_ignores_cut_off_last_line(tmp_path: Path, make_event: MakeEvent) -> None:
    """A last line without its newline (a write cut short by a crash) is not returned."""
    path = tmp_path / "e.jsonl"
    with JsonlSink(path) as sink:
        sink.write([make_event("whole")])
    with open(path, "a", encoding="utf-8") as file:
        file.write('{"id": "half')
    assert [event.id for event in read_jsonl(path)] == ["whole"]


BAD_LINES: list[tuple[str, str, str]] = [
    ("not-json", "{nope\n", "line 2: not valid JSON"),
    ("not-an-event", '{"id": "x"}\n', "line 2: not an event: type: Field required"),
    ("wrong-type", '{"id": "x", "type": "nonsense"}\n', "line 2: not an event: type:"),
]


@pytest.mark.parametrize(("line", "message"), [c[1:] for c in BAD_LINES], ids=[c[0] for c in BAD_LINES])
def test_read_reports_bad_lines(tmp_path: Path, make_event: MakeEvent, line: str, message: str) -> None:
    """A line that is not an event is reported with the file and line number."""
    path = tmp_path / "e.jsonl"
    with JsonlSink(path) as sink:
        sink.write([make_event("ok")])
    with open(path, "a", encoding="utf-8") as file:
        file.write(line)
    with pytest.raises(InputError, match=message) as caught:
        read_jsonl(path)
    assert str(path) in str(caught.value)
