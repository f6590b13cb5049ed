"""DLP as a per-flow inspector of the inspection pipeline (`podwall.inspect.pipeline.FlowInspector`).

Each direction of a TCP flow gets its own `DlpStream`, opened at its first byte, so a value
split across segments is found once; each UDP datagram is scanned alone. HTTP requests and
responses the DPI completes go to the message rules. Findings carry the direction; turning them
into events (and enforcing `deny`) is the caller's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.inspect.dlp.scanner import DlpStream
from podwall.inspect.findings import Finding

if TYPE_CHECKING:
    from podwall.inspect.dlp.engine import DlpEngine

__all__ = ["DlpInspector"]


class DlpInspector:
    """Scans the directions it is given of one flow; `max_bytes` (per direction) bounds the work on huge flows."""

    __slots__ = ("_directions", "_done", "_engine", "_max_bytes", "_seen", "_streams")

    def __init__(
        self,
        engine: DlpEngine,
        directions: Sequence[Direction] = (Direction.C2S, Direction.S2C),
        max_bytes: int | None = None,
    ) -> None:
        self._engine = engine
        self._directions = frozenset(directions)
        self._max_bytes = max_bytes
        self._streams: list[DlpStream | None] = [None, None]
        self._seen = [0, 0]  # bytes scanned per direction (streams and datagrams)
        self._done = not engine.streams_bytes

    @property
    def wants_bytes(self) -> bool:
        return not self._done

    def on_bytes(self, direction: Direction, data: bytes, datagram: bool) -> list[Finding]:
        if self._done or direction not in self._directions:
            return []
        d = int(direction)
        if self._max_bytes is not None:
            room = self._max_bytes - self._seen[d]
            if room <= 0:
                return []
            data = data[:room]
        base = self._seen[d]
        self._seen[d] += len(data)
        if datagram:
            one = self._engine.stream(base, direction=direction)
            return one.feed(data) + one.close()
        stream = self._streams[d]
        if stream is None:
            stream = self._streams[d] = self._engine.stream(base, direction=direction)
        found = stream.feed(data)
        if self._max_bytes is not None and self._seen[d] >= self._max_bytes:
            found += stream.close()
            if all(self._seen[int(x)] >= self._max_bytes for x in self._directions):
                self._done = True
        return found

    def on_gap(self, direction: Direction) -> list[Finding]:
        """Bytes are missing from this direction: end its stream so no match joins the two sides of the hole."""
        stream = self._streams[int(direction)]
        if stream is None:
            return []
        self._streams[int(direction)] = None
        return stream.close()

    def on_event(self, event: L7Event) -> list[Finding]:
        if event.direction not in self._directions:
            return []
        return self._engine.scan_message(event)

    def finish(self) -> list[Finding]:
        found: list[Finding] = []
        for i, stream in enumerate(self._streams):
            if stream is not None:
                found += stream.close()
                self._streams[i] = None
        self._done = True
        return found
