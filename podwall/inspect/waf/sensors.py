"""Custom WAF sensors in NeuVector's shape, validated with located errors and compiled with hyperscan.

A sensor is `{name, comment, rules: [{name, patterns: [{key: pattern, op: regex|!regex,
value: REGEX, context: url|header|body|packet}]}]}`. A rule fires when every `regex` pattern
matches its context and no `!regex` pattern does (NeuVector ANDs a rule's patterns). Contexts:
`url` is the request target as sent, `header` the header lines (`Name: value`, one a line),
`body` the request body, `packet` all of the request (request line, headers, body). Patterns
are matched caselessly, as NeuVector's sensors are. The shape and its checks are the ones DLP
sensors share (inspect/sensor_model.py); faults in a sensors file are located `rules.0.patterns.1`.

All patterns of all sensors compile into one hyperscan database per context, once
(`SensorSet`); a pattern hyperscan rejects is reported with its sensor, rule and index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hyperscan
import yaml
from pydantic import ValidationError

from podwall.core.errors import InputError, Location, Problem
from podwall.inspect.sensor_model import RuleList, SensorBase, SensorPattern, SensorRuleBase, validation_problems
from podwall.inspect.waf.http_request import HttpRequest

__all__ = ["SensorHit", "SensorSet", "WafPattern", "WafRule", "WafSensor", "load_sensors", "parse_sensors"]

_FLAGS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH

WafPattern = SensorPattern  # one condition of a rule: a regular expression over one part of the request


class WafRule(SensorRuleBase):
    """A named rule: fires when all its `regex` patterns hold and none of its `!regex` patterns does."""


class WafSensor(SensorBase):
    """A named set of rules, as NeuVector's WAF sensors are."""

    rules: RuleList[WafRule]


@dataclass(frozen=True, slots=True)
class SensorHit:
    """A sensor rule that fired, with the context and text of its first positive pattern."""

    sensor: str
    rule: str
    context: str
    value: str  # text around the match, raw (the caller masks)

    @property
    def id(self) -> str:
        return f"waf.sensor.{self.sensor}/{self.rule}"


def parse_sensors(data: Any, source: str = "<sensors>") -> list[WafSensor]:
    """Sensors from parsed YAML: one sensor, a list of them, or `{sensors: [...]}`; every fault located."""
    if isinstance(data, dict) and "sensors" in data and "rules" not in data:
        data = data["sensors"]
    items = data if isinstance(data, list) else [data]
    sensors: list[WafSensor] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        label = str(name) if name else f"#{i}"
        if not isinstance(item, dict):
            problems.append(Problem(Location(file=source, obj=f"sensor {label}"), "a sensor must be a mapping"))
            continue
        try:
            sensors.append(WafSensor.model_validate(item))
        except ValidationError as exc:
            problems.extend(validation_problems(exc, source, "", f"sensor {label}", dotted=True))
    names = [s.name for s in sensors]
    for dupe in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem(Location(file=source, obj=f"sensor {dupe}"), "sensor name used more than once"))
    if problems:
        raise InputError("invalid WAF sensors", problems)
    SensorSet(sensors, source)  # compile now so a bad pattern is reported with the file's name
    return sensors


def load_sensors(path: Path) -> list[WafSensor]:
    """Read a sensors YAML file (the thin loader)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(
            "cannot read WAF sensors", [Problem(Location(file=str(path)), exc.strerror or str(exc))]
        ) from None
    except yaml.YAMLError as exc:
        raise InputError("invalid WAF sensors", [Problem(Location(file=str(path)), f"not YAML: {exc}")]) from None
    return parse_sensors(data, str(path))


@dataclass(frozen=True, slots=True)
class _Slot:
    sensor: str
    rule: str
    context: str
    negated: bool


class SensorSet:
    """Every pattern of the given sensors compiled once; `match` evaluates all rules on one request."""

    def __init__(self, sensors: Iterable[WafSensor], source: str = "<sensors>") -> None:
        self.sensors = list(sensors)
        self._slots: list[_Slot] = []
        by_context: dict[str, list[tuple[int, bytes]]] = {}
        problems: list[Problem] = []
        for sensor in self.sensors:
            for r_i, rule in enumerate(sensor.rules):
                for p_i, pat in enumerate(rule.patterns):
                    slot = len(self._slots)
                    self._slots.append(_Slot(sensor.name, rule.name, pat.context, pat.negative))
                    expr = pat.value.encode()
                    try:
                        hyperscan.Database().compile(expressions=[expr], flags=_FLAGS)
                    except hyperscan.error as exc:
                        where = Location(
                            file=source, obj=f"sensor {sensor.name}", path=f"rules.{r_i}.patterns.{p_i}.value"
                        )
                        problems.append(Problem(where, f"pattern {pat.value!r} does not compile: {exc}"))
                        continue
                    by_context.setdefault(pat.context, []).append((slot, expr))
        if problems:
            raise InputError("invalid WAF sensors", problems)
        self._dbs: dict[str, hyperscan.Database] = {}
        for context, items in by_context.items():
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=[e for _, e in items], ids=[s for s, _ in items], flags=[_FLAGS] * len(items))
            self._dbs[context] = db
        self._hits: dict[int, int] = {}
        self._rules = _group(self._slots)

    def __bool__(self) -> bool:
        return bool(self._slots)

    def _on_match(self, slot: int, start: int, end: int, flags: int, context: object) -> bool | None:
        self._hits.setdefault(slot, end)
        return None

    def match(self, request: HttpRequest) -> list[SensorHit]:
        """The sensor rules that fire on `request`, in definition order."""
        if not self._slots:
            return []
        texts = _contexts(request)
        self._hits = {}
        found: dict[int, tuple[str, int]] = {}
        for context, db in self._dbs.items():
            before = set(self._hits)
            db.scan(texts[context], match_event_handler=self._on_match)
            for slot in set(self._hits) - before:
                found[slot] = (context, self._hits[slot])
        hits: list[SensorHit] = []
        for (sensor, rule), slots in self._rules.items():
            positives = [s for s in slots if not self._slots[s].negated]
            if all(s in found for s in positives) and not any(s in found for s in slots if self._slots[s].negated):
                context, end = found[positives[0]]
                text = texts[context][:end].decode("utf-8", "replace")
                hits.append(SensorHit(sensor, rule, context, text[-120:]))
        return hits


def _group(slots: Sequence[_Slot]) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for i, slot in enumerate(slots):
        out.setdefault((slot.sensor, slot.rule), []).append(i)
    return out


def _contexts(request: HttpRequest) -> dict[str, bytes]:
    url = request.uri.encode("latin-1", "replace")
    header = "".join(f"{n}: {v}\r\n" for n, v in request.headers).encode("latin-1", "replace")
    line = f"{request.method} {request.uri} HTTP/{request.version}\r\n".encode("latin-1", "replace")
    return {"url": url, "header": header, "body": request.body, "packet": line + header + b"\r\n" + request.body}
