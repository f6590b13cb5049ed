"""DLP sensor definitions, NeuVector-shaped: a sensor is a named list of rules, a rule a list of regex patterns.

```yaml
name: sensor.creditcard
comment: Credit card numbers
rules:
  - name: visa
    verify: luhn                # podwall extension: check the matched digits (luhn | ssn)
    patterns:
      - {key: pattern, op: regex, value: "...", context: packet}
```

A rule fires when every `regex` pattern of it matches and no `!regex` ("have not") pattern
does. Rules whose patterns are all `regex` in the `packet` context are judged on the raw
stream of each direction; any other rule is judged once per HTTP message (see scanner.py).
The regex grammar is hyperscan's (a PCRE subset without lookaround or back-references): it is
checked when the sensors are compiled (compile.py), which maps every failure to its pattern.
Here: the structure, names, sizes and the checks that need no compiler.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from podwall.core.errors import Location, Problem
from podwall.core.events import Severity

__all__ = [
    "MAX_PATTERNS_PER_RULE",
    "MAX_PATTERN_LEN",
    "MAX_RULES_PER_SENSOR",
    "Context",
    "Sensor",
    "SensorPattern",
    "SensorRule",
    "Verify",
    "parse_sensor",
    "pattern_path",
    "validation_problems",
]

MAX_PATTERN_LEN = 4096
MAX_PATTERNS_PER_RULE = 16
MAX_RULES_PER_SENSOR = 256
MAX_NAME_LEN = 64

Context = Literal["packet", "url", "header", "body"]
Verify = Literal["luhn", "ssn"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"invalid {what} name {value!r}: letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class SensorPattern(_Model):
    """One regex of a rule and where it looks: the whole stream (`packet`) or an HTTP message's url, header or body."""

    key: Literal["pattern"] = "pattern"
    op: Literal["regex", "!regex"] = "regex"
    value: Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_LEN)]
    context: Context = "packet"

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if "\x00" in value:
            # hyperscan takes C strings: a raw NUL would silently cut the pattern short.
            raise ValueError(r"the regex contains a NUL character; write \x00 to match a NUL byte")
        if not value.strip():
            raise ValueError("the regex is blank")
        return value

    @property
    def negative(self) -> bool:
        return self.op == "!regex"


class SensorRule(_Model):
    """A named rule: fires when all its `regex` patterns match and none of its `!regex` patterns does."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]
    patterns: Annotated[list[SensorPattern], Field(min_length=1, max_length=MAX_PATTERNS_PER_RULE)]
    verify: Verify | None = None  # podwall extension: validate the matched value (Luhn, SSN ranges)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "rule")

    @model_validator(mode="after")
    def _positive(self) -> SensorRule:
        if all(p.negative for p in self.patterns):
            raise ValueError(f"rule {self.name!r} has only '!regex' patterns: it needs one 'regex' pattern to match")
        return self

    @property
    def streamed(self) -> bool:
        """True when the rule is judged on the raw stream (all its patterns positive, in the packet context)."""
        return all(p.context == "packet" and not p.negative for p in self.patterns)


class Sensor(_Model):
    """A DLP sensor: a name (`sensor.creditcard`), a comment, its rules and the severity of what it finds."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]
    comment: Annotated[str, Field(max_length=512)] = ""
    severity: Severity = Severity.MEDIUM  # podwall extension; NeuVector has none
    rules: Annotated[list[SensorRule], Field(min_length=1, max_length=MAX_RULES_PER_SENSOR)]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "sensor")

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, rules: list[SensorRule]) -> list[SensorRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule {rule.name!r} is defined twice")
            seen.add(rule.name)
        return rules

    @property
    def label(self) -> str:
        """The human name of the sensor's findings: its comment, or its name."""
        return self.comment or self.name


def pattern_path(rule_index: int, rule: str, pattern_index: int) -> str:
    """The field path of a pattern's regex inside its sensor, naming the rule: `rules[0] (visa).patterns[1].value`."""
    return f"rules[{rule_index}] ({rule}).patterns[{pattern_index}].value"


def validation_problems(exc: ValidationError, file: str | None, prefix: str, obj: str | None) -> list[Problem]:
    """pydantic's errors as located problems: `file: sensor.x: sensors[0].rules[1].name: message`."""
    problems: list[Problem] = []
    for err in exc.errors():
        path = prefix
        for part in err["loc"]:
            path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown field {err['loc'][-1]!r}"
        elif kind == "missing":
            message = f"missing required field {err['loc'][-1]!r}"
        elif kind == "too_short":
            message = "must not be empty"
        elif kind == "literal_error":
            message = f"invalid value {err.get('input')!r}: expected {(err.get('ctx') or {}).get('expected')}"
        else:
            message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(Problem(Location(file=file, obj=obj, path=path or None), message))
    return problems


def parse_sensor(data: Any, file: str | None = None, path: str = "") -> tuple[Sensor | None, list[Problem]]:
    """Validate one sensor mapping; returns the sensor, or None and its located problems."""
    obj = data.get("name") if isinstance(data, dict) and isinstance(data.get("name"), str) else None
    try:
        return Sensor.model_validate(data), []
    except ValidationError as exc:
        return None, validation_problems(exc, file, path, obj)
