"""The sensor shape DLP and WAF share (NeuVector's): a named list of rules, a rule a list of regex patterns.

```yaml
name: sensor.x
comment: what it finds
rules:
  - name: r1
    patterns:
      - {key: pattern, op: regex, value: "...", context: packet}   # or op: "!regex"
```

A rule fires when every `regex` pattern of it matches its context and no `!regex` ("have
not") pattern does. Here: the structure, names, sizes, the checks that need no regex
compiler, and pydantic's errors turned into located problems. Each inspector declares its
own `rules` (DLP rules carry more, e.g. `verify`), compiles the patterns its own way and
decides what a context means for the traffic it sees (dlp/model.py, waf/sensors.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from podwall.core.errors import Location, Problem

__all__ = [
    "MAX_NAME_LEN",
    "MAX_PATTERNS_PER_RULE",
    "MAX_PATTERN_LEN",
    "MAX_RULES_PER_SENSOR",
    "Context",
    "RuleList",
    "SensorBase",
    "SensorPattern",
    "SensorRuleBase",
    "check_name",
    "validation_problems",
]

MAX_PATTERN_LEN = 4096
MAX_PATTERNS_PER_RULE = 16
MAX_RULES_PER_SENSOR = 256
MAX_NAME_LEN = 64

Context = Literal["packet", "url", "header", "body"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(value: str, what: str) -> str:
    """`value` when it is a valid sensor or rule name; ValueError saying what a name may hold otherwise."""
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


class SensorRuleBase(_Model):
    """A named rule: fires when all its `regex` patterns match and none of its `!regex` patterns does."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]
    patterns: Annotated[list[SensorPattern], Field(min_length=1, max_length=MAX_PATTERNS_PER_RULE)]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "rule")

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if all(p.negative for p in self.patterns):
            raise ValueError(
                f"rule {self.name!r} has only '!regex' patterns: it needs at least one `regex` pattern to match"
            )
        return self


_Rule = TypeVar("_Rule", bound=SensorRuleBase)
RuleList = Annotated[list[_Rule], Field(min_length=1, max_length=MAX_RULES_PER_SENSOR)]
"""The type of a sensor's `rules`: `RuleList[SensorRule]`."""


class SensorBase(_Model):
    """A sensor's name and comment, and unique rule names.

    Each kind declares `rules` itself, typed with its own rule class and after its own extra
    fields, so that its dumps keep NeuVector's field order (name, comment, ..., rules).
    """

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN)]
    comment: Annotated[str, Field(max_length=512)] = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "sensor")

    @field_validator("rules", check_fields=False)
    @classmethod
    def _unique_rules(cls, rules: list[SensorRuleBase]) -> list[SensorRuleBase]:
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


def _field_path(loc: Sequence[int | str], prefix: str, dotted: bool) -> str:
    path = prefix
    for part in loc:
        indexed = isinstance(part, int) and not dotted
        path = f"{path}[{part}]" if indexed else (f"{path}.{part}" if path else str(part))
    return path


def validation_problems(
    exc: ValidationError, file: str | None, prefix: str, obj: str | None, *, dotted: bool = False
) -> list[Problem]:
    """pydantic's errors as located problems: `file: sensor.x: sensors[0].rules[1].name: message`.

    `dotted` writes list indexes as path parts (`rules.1.name`), as the WAF's sensor files are located.
    """
    problems: list[Problem] = []
    for err in exc.errors():
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
        path = _field_path(err["loc"], prefix, dotted)
        problems.append(Problem(Location(file=file, obj=obj, path=path or None), message))
    return problems
