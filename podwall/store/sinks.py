"""Event sinks: where events go besides the store. JSONL now; syslog and webhooks plug in later.

A sink's `write(events)` returns only when the batch is durable at the sink (on disk for
JSONL), so a caller may treat a returned batch as acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, runtime_checkable

from pydantic import ValidationError

from podwall.core.errors import InputError, Location, Problem
from podwall.core.events import Event


@runtime_checkable
class Sink(Protocol):
    """Something that durably accepts batches of events."""

    def write(self, events: Sequence[Event]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per event and line to a file, fsynced after each batch."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
        if created:
            # The new directory entry must be durable too, or a crash could lose the whole file.
            _fsync_dir(self.path.parent)

    def write(self, events: Sequence[Event]) -> None:
        """Append the batch and fsync; on failure the file is cut back to its size before it."""
        if self._file is None:
            raise ValueError(f"JSONL sink {self.path} is closed")
        if not events:
            return
        # Serialise everything first, so a bad event cannot leave half a batch in the file.
        payload = "".join(_line(event, index) for index, event in enumerate(events))
        file = self._file
        file.flush()
        start = os.fstat(file.fileno()).st_size
        try:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        except OSError:
            self._cut_back(start)
            raise

    def _cut_back(self, size: int) -> None:
        assert self._file is not None
        # Close (whatever was buffered may or may not get out), then cut off every byte of the batch.
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError), open(self.path, "r+b") as raw:
            raw.truncate(size)
            os.fsync(raw.fileno())
        self._file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _line(event: Event, index: int) -> str:
    try:
        return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
    except Exception as exc:  # pydantic and json raise several types for unserialisable l7 values
        raise ValueError(f"batch item {index} (event {event.id!r}): cannot be written as JSON: {exc}") from None


def read_jsonl(path: str | os.PathLike[str]) -> list[Event]:
    """The events of a JSONL file; a last line without newline (a write cut short) is ignored."""
    source = Path(path)
    problems: list[Problem] = []
    events: list[Event] = []
    with open(source, encoding="utf-8", newline="\n") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith("\n"):
                break
            if not line.strip():
                continue
            where = Location(file=str(source), obj=f"line {number}")
            try:
                events.append(Event.model_validate(json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(Problem(where, f"not valid JSON: {exc.msg} at column {exc.colno}"))
            except ValidationError as exc:
                problems.append(Problem(where, f"not an event: {_first_error(exc)}"))
    if problems:
        raise InputError(f"cannot read events from {source}", problems)
    return events


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "<event>"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {first['msg']}{more}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
