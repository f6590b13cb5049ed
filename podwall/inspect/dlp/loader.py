"""Reading sensor definitions from YAML: podwall's own list, or NeuVector's exported sensor objects.

Each YAML document may be one sensor (`{name, comment, rules}`), a list of them, a mapping with
a `sensors:` list, an `NvDlpSecurityRule` / `NvWafSecurityRule` object (`spec.sensor`), or a
NeuVector `List` of those. Every fault is reported at once, located by file, document, sensor
and field path. `load_sensors` is the only function here that touches a file.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from podwall.core.errors import InputError, Location, Problem
from podwall.inspect.dlp.model import Sensor, parse_sensor

__all__ = ["MAX_SENSORS_FILE", "load_sensors", "parse_sensors"]

MAX_SENSORS_FILE = 16 * 1024 * 1024
_NV_KINDS = ("NvDlpSecurityRule", "NvWafSecurityRule")
_UNQUOTED_NOT_REGEX = re.compile(r"""(?<!['"])!regex""")


def _entries(doc: Any, path: str) -> list[tuple[Any, str]] | str:
    """The sensor mappings of one document with their paths, or what is wrong with its shape."""
    if isinstance(doc, list):
        return [(item, f"{path}[{i}]") for i, item in enumerate(doc)]
    if not isinstance(doc, dict):
        return f"expected a sensor, a list of sensors or a mapping with 'sensors', got {type(doc).__name__}"
    kind = doc.get("kind")
    if kind == "List":
        out: list[tuple[Any, str]] = []
        for i, item in enumerate(doc.get("items") or []):
            sub = _entries(item, f"items[{i}]")
            if isinstance(sub, str):
                return f"items[{i}]: {sub}"
            out += sub
        return out
    if kind in _NV_KINDS:
        spec = doc.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("sensor"), dict):
            return f"{kind} without spec.sensor"
        return [(spec["sensor"], f"{path}{'.' if path else ''}spec.sensor")]
    if kind is not None:
        return f"unsupported kind {kind!r}: expected {', '.join(_NV_KINDS)} or List"
    if "sensors" in doc:
        sensors = doc["sensors"]
        if not isinstance(sensors, list):
            return "'sensors' must be a list"
        if len(doc) > 1:
            return f"unknown field(s) next to 'sensors': {', '.join(sorted(k for k in doc if k != 'sensors'))}"
        return [(item, f"sensors[{i}]") for i, item in enumerate(sensors)]
    return [(doc, path)]


def parse_sensors(text: str, source: str = "<sensors>") -> list[Sensor]:
    """Every sensor defined in `text`; raises InputError listing every located fault."""
    problems: list[Problem] = []
    sensors: list[Sensor] = []
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "malformed YAML"
        if _UNQUOTED_NOT_REGEX.search(text):
            what += "; quote '!regex'"
        raise InputError("DLP sensors", [Problem(Location(file=source), f"YAML syntax error: {what}{where}")]) from None
    except yaml.YAMLError as exc:
        raise InputError("DLP sensors", [Problem(Location(file=source), f"YAML error: {exc}")]) from None
    seen: dict[str, str] = {}
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        entries = _entries(doc, "")
        if isinstance(entries, str):
            problems.append(Problem(Location(file=source, document=index), entries))
            continue
        for data, path in entries:
            sensor, found = parse_sensor(data, source, path)
            problems += [Problem(replace(p.location, document=index), p.message) for p in found]
            if sensor is None:
                continue
            if sensor.name in seen:
                at = Location(file=source, document=index, obj=sensor.name, path=path or None)
                problems.append(Problem(at, f"sensor defined twice (first at {seen[sensor.name]})"))
                continue
            seen[sensor.name] = f"document {index}" + (f" {path}" if path else "")
            sensors.append(sensor)
    if problems:
        raise InputError("DLP sensors", problems)
    if not sensors:
        raise InputError("DLP sensors", [Problem(Location(file=source), "no sensor defined")])
    return sensors


def load_sensors(path: Path | str) -> list[Sensor]:
    """Read and parse a sensors YAML file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_SENSORS_FILE:
            raise InputError(
                "DLP sensors", [Problem(Location(file=str(p)), f"file is larger than {MAX_SENSORS_FILE} bytes")]
            )
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("DLP sensors", [Problem(Location(file=str(p)), f"not UTF-8 text: {exc.reason}")]) from None
    except OSError as exc:
        raise InputError("DLP sensors", [Problem(Location(file=str(p)), exc.strerror or str(exc))]) from None
    return parse_sensors(text, str(p))
