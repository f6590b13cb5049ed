"""The policy's `inspection` block: WAF level, custom DLP and WAF sensors, network-threat settings.

```yaml
spec:
  inspection:
    waf: {paranoia: 1, threshold: 5}
    dlpSensors:
      - {name: sensor.apikey, rules: [{name: key, patterns: [{key: pattern, op: regex, value: "sk_[a-z0-9]{24}"}]}]}
    wafSensors: [{name: sensor.noadmin, rules: [{name: admin, patterns: [{value: "/admin", context: url}]}]}]
    threats: {syn_flood: {action: reset, threshold: 500}, tcp_small_window: {enabled: false}}
```

Groups attach sensors by name (NeuVector's shape): `dlp: {status: true, settings: [{name:
sensor.creditcard, action: deny}]}` applies DLP to traffic in and out of the group; `waf: {...}`
applies to traffic into it. Built-in names: DLP `sensor.creditcard` and `sensor.ssn`; WAF
`crs` (ModSecurity with the OWASP CRS and podwall's own SQLi/XSS checks). Threat settings
apply to all traffic (keys and defaults: docs/threats.md). Pure: models and checks only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from podwall.inspect.dlp.builtin import BUILTIN_NAMES as DLP_BUILTIN
from podwall.inspect.dlp.model import Sensor as DlpSensor
from podwall.inspect.threats.catalog import ThreatSettings
from podwall.inspect.waf.sensors import WafSensor

__all__ = ["DLP_BUILTIN", "WAF_BUILTIN", "InspectionSpec", "WafLevel"]

WAF_BUILTIN = ("crs",)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WafLevel(_Model):
    """How strict the CRS is: paranoia level 1-4 and the inbound anomaly score that blocks."""

    paranoia: StrictInt = Field(default=1, ge=1, le=4)
    threshold: StrictInt = Field(default=5, ge=1, le=1000)


class InspectionSpec(_Model):
    """What the inspectors run with (see the module docstring)."""

    waf: WafLevel = Field(default_factory=WafLevel)
    dlpSensors: list[DlpSensor] = Field(default_factory=list)  # the file's field names
    wafSensors: list[WafSensor] = Field(default_factory=list)
    threats: ThreatSettings = Field(default_factory=ThreatSettings)

    @field_validator("dlpSensors")
    @classmethod
    def _dlp_names(cls, sensors: list[DlpSensor]) -> list[DlpSensor]:
        _unique([s.name for s in sensors], DLP_BUILTIN, "DLP")
        return sensors

    @field_validator("wafSensors")
    @classmethod
    def _waf_names(cls, sensors: list[WafSensor]) -> list[WafSensor]:
        _unique([s.name for s in sensors], WAF_BUILTIN, "WAF")
        return sensors

    def is_default(self) -> bool:
        return self == InspectionSpec()

    def dlp_names(self) -> set[str]:
        return set(DLP_BUILTIN) | {s.name for s in self.dlpSensors}

    def waf_names(self) -> set[str]:
        return set(WAF_BUILTIN) | {s.name for s in self.wafSensors}


def _unique(names: list[str], builtin: tuple[str, ...], what: str) -> None:
    for i, name in enumerate(names):
        if name in builtin:
            raise ValueError(f"{what} sensor {name!r} is built in: give your sensor another name")
        if name in names[:i]:
            raise ValueError(f"{what} sensor {name!r} is defined twice")
