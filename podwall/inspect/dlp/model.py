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
The shape, names, sizes and compiler-free checks are the ones WAF sensors share
(inspect/sensor_model.py); here: DLP's extras (`verify`, `severity`) and parsing one sensor.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError

from podwall.core.errors import Problem
from podwall.core.events import Severity
from podwall.inspect.sensor_model import (
    Context,
    RuleList,
    SensorBase,
    SensorPattern,
    SensorRuleBase,
    validation_problems,
)

__all__ = ["Context", "Sensor", "SensorPattern", "SensorRule", "Verify", "parse_sensor", "pattern_path"]

Verify = Literal["luhn", "ssn"]


class SensorRule(SensorRuleBase):
    """A DLP rule: its patterns, and optionally a check of the matched value."""

    verify: Verify | None = None  # podwall extension: validate the matched value (Luhn, SSN ranges)

    @property
    def streamed(self) -> bool:
        """True when the rule is judged on the raw stream (all its patterns positive, in the packet context)."""
        return all(p.context == "packet" and not p.negative for p in self.patterns)


class Sensor(SensorBase):
    """A DLP sensor: a name (`sensor.creditcard`), a comment, the severity of what it finds and its rules."""

    severity: Severity = Severity.MEDIUM  # podwall extension; NeuVector has none
    rules: RuleList[SensorRule]


def pattern_path(rule_index: int, rule: str, pattern_index: int) -> str:
    """The field path of a pattern's regex inside its sensor, naming the rule: `rules[0] (visa).patterns[1].value`."""
    return f"rules[{rule_index}] ({rule}).patterns[{pattern_index}].value"


def parse_sensor(data: Any, file: str | None = None, path: str = "") -> tuple[Sensor | None, list[Problem]]:
    """Validate one sensor mapping; returns the sensor, or None and its located problems."""
    obj = data.get("name") if isinstance(data, dict) and isinstance(data.get("name"), str) else None
    try:
        return Sensor.model_validate(data), []
    except ValidationError as exc:
        return None, validation_problems(exc, file, path, obj)
