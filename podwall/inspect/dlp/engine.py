"""The DLP engine: a set of sensors compiled once (hyperscan, cached on disk), then scanned many times.

`DlpEngine(sensors, actions)` compiles the stream rules into one stream database and the
message rules (url/header/body contexts, `!regex`) into one block database; a pattern
hyperscan refuses becomes an `InputError` naming the sensor, the rule and the regex. Then:

- `engine.stream()` -> `DlpStream`: one direction of one flow, fed chunk by chunk;
- `engine.scan(data)`: one buffer at once (the same as a stream fed it and closed);
- `engine.scan_message(event)`: the message rules on one HTTP request or response;
- `engine.inspector()`: a per-flow inspector for the inspection pipeline (inspector.py).

`engine_for_config` builds the engine a policy group's `dlp` block asks for. One engine is
not for concurrent use from several threads: its streams share hyperscan scratch space.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from podwall.core.errors import InputError, Location, Problem
from podwall.core.types import Direction
from podwall.dpi.base import L7Event
from podwall.inspect.dlp.builtin import BUILTIN_NAMES, builtin_sensors
from podwall.inspect.dlp.compile import (
    CompileResult,
    DatabaseCache,
    Mode,
    PatternCompileError,
    compile_patterns,
)
from podwall.inspect.dlp.model import Sensor, pattern_path
from podwall.inspect.dlp.scanner import DlpStream, MessageSet, RuleInfo, Slot, StreamSet, rule_info, scan_message
from podwall.inspect.findings import Action, Finding

if TYPE_CHECKING:
    from podwall.inspect.dlp.inspector import DlpInspector
    from podwall.policy.model import SensorConfig

__all__ = ["MAX_TAIL_BYTES", "DlpEngine", "action_for", "engine_for_config", "sensor_catalog"]

MAX_TAIL_BYTES = 4096  # history a stream keeps; a longer match is reported with its start cut ("…")
MIN_TAIL_BYTES = 32
_UNKNOWN_WIDTH = 1024  # a pattern Python's parser cannot size (PCRE-only syntax)


def action_for(setting: str) -> Action:
    """A NeuVector sensor setting's action as a finding's: `allow` only alerts, `deny` cuts in protect mode."""
    if setting == "allow":
        return Action.ALERT
    if setting == "deny":
        return Action.DENY
    raise ValueError(f"unknown sensor action {setting!r}: expected allow or deny")


def _max_width(regex: str) -> int:
    """The longest match `regex` can make, in bytes (capped); Python's parser sizes it when it can."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        width = int(_parser.parse(regex).getwidth()[1])
    except (re.error, ValueError, TypeError, AttributeError, ImportError, OverflowError, RecursionError):
        width = _UNKNOWN_WIDTH
    if not regex.isascii():
        width *= 4  # characters of the pattern may be up to four UTF-8 bytes
    return min(width, MAX_TAIL_BYTES)


class DlpEngine:
    """Compiled sensors and what each sensor's findings ask for (`actions`, by sensor name; default alert)."""

    def __init__(
        self,
        sensors: Sequence[Sensor],
        actions: Mapping[str, Action] | None = None,
        *,
        cache_dir: Path | str | None = None,
        cache: bool = True,
        source: str | None = None,
    ) -> None:
        self.sensors = tuple(sensors)
        self.actions = dict(actions or {})
        self._source = source  # the file the sensors came from, for error locations
        problems = [
            Problem(Location(file=source, obj=name), "sensor is listed twice")
            for i, name in enumerate(s.name for s in self.sensors)
            if name in [s.name for s in self.sensors[:i]]
        ]
        if problems:
            raise InputError("DLP sensors", problems)
        store = DatabaseCache(cache_dir) if cache else None
        self.cache = store
        self.compiled: dict[str, CompileResult] = {}  # "stream" / "message" -> how each database was obtained
        self._stream = self._build_stream(store)
        self._message = self._build_message(store)

    # -- building --------------------------------------------------------------------------------

    def _collect(self, streamed: bool) -> tuple[list[RuleInfo], list[Slot], list[str], list[Location]]:
        rules: list[RuleInfo] = []
        slots: list[Slot] = []
        regexes: list[str] = []
        where: list[Location] = []
        for sensor in self.sensors:
            for r, rule in enumerate(sensor.rules):
                if rule.streamed != streamed:
                    continue
                rules.append(rule_info(sensor, r, self.actions.get(sensor.name, Action.ALERT)))
                for p, pattern in enumerate(rule.patterns):
                    slots.append(Slot(len(rules) - 1, p, pattern.context, pattern.negative))
                    regexes.append(pattern.value)
                    where.append(Location(file=self._source, obj=sensor.name, path=pattern_path(r, rule.name, p)))
        return rules, slots, regexes, where

    def _compile(
        self, name: str, mode: Mode, regexes: list[str], where: list[Location], store: DatabaseCache | None
    ) -> CompileResult:
        try:
            result = compile_patterns(mode, [r.encode("utf-8") for r in regexes], store)
        except PatternCompileError as exc:
            problems = [
                Problem(where[f.index], f"hyperscan cannot compile '{regexes[f.index]}': {f.message}")
                if f.index >= 0
                else Problem(Location(file=self._source), f"hyperscan cannot compile the sensors together: {f.message}")
                for f in exc.failures
            ]
            raise InputError("DLP sensors", problems) from None
        self.compiled[name] = result
        return result

    def _build_stream(self, store: DatabaseCache | None) -> StreamSet | None:
        rules, slots, regexes, where = self._collect(streamed=True)
        if not regexes:
            return None
        db = self._compile("stream", "stream", regexes, where, store).database
        tail = max(MIN_TAIL_BYTES, *(_max_width(r) for r in regexes))
        return StreamSet(db, tuple(rules), tuple(slots), tail)

    def _build_message(self, store: DatabaseCache | None) -> MessageSet | None:
        rules, slots, regexes, where = self._collect(streamed=False)
        if not regexes:
            return None
        db = self._compile("message", "block", regexes, where, store).database
        return MessageSet.build(db, rules, slots)

    # -- scanning --------------------------------------------------------------------------------

    @property
    def streams_bytes(self) -> bool:
        """True when some rule is judged on raw streams (False: only HTTP messages matter)."""
        return self._stream is not None

    @property
    def scans_messages(self) -> bool:
        """True when some rule is judged per HTTP message (url, header, body contexts or `!regex`)."""
        return self._message is not None

    @property
    def tail_bytes(self) -> int:
        """Bytes of history each stream keeps to recover a match (0 without stream rules)."""
        return self._stream.tail_bytes if self._stream is not None else 0

    def stream(
        self, offset_base: int = 0, *, track_lines: bool = False, direction: Direction | None = None
    ) -> DlpStream:
        """A new stream (one direction of one flow, or one file); raises ValueError without stream rules."""
        if self._stream is None:
            raise ValueError("these sensors have no rule judged on raw streams (only url/header/body rules)")
        return DlpStream(self._stream, offset_base, track_lines, direction)

    def scan(self, data: bytes, *, track_lines: bool = False, direction: Direction | None = None) -> list[Finding]:
        """Scan one buffer whole: what a stream fed `data` and then closed would find."""
        if self._stream is None:
            return []
        stream = DlpStream(self._stream, 0, track_lines, direction)
        found = stream.feed(data)
        found += stream.close()
        return found

    def scan_message(self, event: L7Event) -> list[Finding]:
        """The message rules on one HTTP request or response event (other events: nothing)."""
        return scan_message(self._message, event) if self._message is not None else []

    def inspector(self, directions: Sequence[Direction] = (Direction.C2S, Direction.S2C)) -> DlpInspector:
        """A per-flow inspector for `podwall.inspect.pipeline` (one per flow)."""
        from podwall.inspect.dlp.inspector import DlpInspector

        return DlpInspector(self, directions)


def sensor_catalog(custom: Sequence[Sensor] = (), source: str | None = None) -> dict[str, Sensor]:
    """Every sensor a setting may name: the built-ins, then `custom` (which may not reuse a name)."""
    catalog = {s.name: s for s in builtin_sensors()}
    problems: list[Problem] = []
    for i, sensor in enumerate(custom):
        if sensor.name in BUILTIN_NAMES:
            at = Location(file=source, obj=sensor.name, path=f"sensors[{i}].name")
            problems.append(Problem(at, f"{sensor.name!r} is a built-in sensor; give yours another name"))
        elif sensor.name in catalog:
            at = Location(file=source, obj=sensor.name, path=f"sensors[{i}].name")
            problems.append(Problem(at, "sensor is defined twice"))
        else:
            catalog[sensor.name] = sensor
    if problems:
        raise InputError("DLP sensors", problems)
    return catalog


def engine_for_config(
    config: SensorConfig | None,
    custom: Sequence[Sensor] = (),
    *,
    cache_dir: Path | str | None = None,
    cache: bool = True,
    where: Location | None = None,
) -> DlpEngine | None:
    """The engine a group's `dlp: {status, settings}` block asks for; None when DLP is off or lists nothing.

    Settings name built-in sensors or sensors of `custom`; an unknown name is an InputError
    located at `where` (e.g. the group) and the setting's index."""
    if config is None or not config.status or not config.settings:
        return None
    catalog = sensor_catalog(custom, where.file if where else None)
    problems: list[Problem] = []
    chosen: list[Sensor] = []
    actions: dict[str, Action] = {}
    base = where or Location()
    for i, setting in enumerate(config.settings):
        sensor = catalog.get(setting.name)
        if sensor is None:
            path = f"{base.path}.dlp.settings[{i}].name" if base.path else f"dlp.settings[{i}].name"
            at = Location(file=base.file, document=base.document, obj=base.obj, path=path)
            problems.append(Problem(at, f"unknown DLP sensor {setting.name!r}; known: {', '.join(sorted(catalog))}"))
            continue
        chosen.append(sensor)
        actions[sensor.name] = action_for(setting.action)
    if problems:
        raise InputError("DLP settings", problems)
    return DlpEngine(chosen, actions, cache_dir=cache_dir, cache=cache, source=base.file)
