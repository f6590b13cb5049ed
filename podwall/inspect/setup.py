"""Build the inspectors a command runs, from a policy (or the defaults), and attach findings to groups.

Detection runs on every flow with every sensor some group uses; attachment then keeps a DLP
finding only when the client's or the server's group has that sensor on (DLP guards a group's
boundary, both ways), and a WAF finding only when the server's group has the WAF on (WAF guards
traffic into a group), with the action the group's setting gives (`allow` -> alert, `deny` ->
deny). Threat findings always apply, with the action of the policy's threat settings. Without
a policy (`podwall analyze`), every built-in inspector runs and every finding is reported as an
alert-or-configured default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from podwall.inspect.dlp.builtin import builtin_sensors
from podwall.inspect.dlp.engine import DlpEngine, sensor_catalog
from podwall.inspect.dlp.model import Sensor
from podwall.inspect.findings import Action, Finding, FindingKind
from podwall.inspect.pipeline import FlowInspectorFactory, Inspection
from podwall.policy.model import Group, Policy, SensorConfig

if TYPE_CHECKING:
    from podwall.inspect.waf import WafEngine

__all__ = ["InspectOptions", "Inspectors"]


@dataclass(frozen=True, slots=True)
class InspectOptions:
    """Which inspectors a command runs (all by default) and overrides of the policy's WAF level."""

    threats: bool = True
    waf: bool = True
    dlp: bool = True
    paranoia: int | None = None
    threshold: int | None = None
    cache_dir: Path | None = None  # where compiled hyperscan databases are kept
    inline: bool = False  # the enforcer: judge each HTTP request before its answer (waf/flow.py)


def _setting_action(action: str) -> Action:
    return Action.DENY if action == "deny" else Action.ALERT


class Inspectors:
    """The engines of one command run (loaded once) and the policy's attachment of sensors to groups."""

    def __init__(
        self,
        policy: Policy | None,
        options: InspectOptions = InspectOptions(),
    ) -> None:
        self.policy = policy
        self.options = options
        self.warnings: list[str] = []
        spec = policy.spec.inspection if policy is not None else None
        self._groups: dict[str, Group] = {g.name: g for g in policy.spec.groups} if policy is not None else {}
        self.dlp = self._dlp_engine(spec.dlpSensors if spec is not None else [])
        self.waf = self._waf_engine()
        self._threat_settings = spec.threats if spec is not None else None

    # -- engines ---------------------------------------------------------------------------------

    def _used(self, kind: str) -> dict[str, str]:
        """Sensor name -> the strictest action any group with `kind` on gives it."""
        used: dict[str, str] = {}
        for group in self._groups.values():
            config: SensorConfig | None = getattr(group, kind)
            if config is None or not config.status:
                continue
            for setting in config.settings:
                if used.get(setting.name) != "deny":
                    used[setting.name] = setting.action
        return used

    def _dlp_engine(self, custom: Sequence[Sensor]) -> DlpEngine | None:
        if not self.options.dlp:
            return None
        if self.policy is None:
            sensors: list[Sensor] = list(builtin_sensors())
        else:
            catalog = sensor_catalog(custom)
            used = self._used("dlp")
            missing = sorted(set(used) - set(catalog))
            if missing:
                self.warnings.append(f"DLP sensor(s) not defined, skipped: {', '.join(missing)}")
            sensors = [catalog[name] for name in sorted(used) if name in catalog]
        if not sensors:
            return None
        return DlpEngine(sensors, cache_dir=self.options.cache_dir)

    def _waf_engine(self) -> WafEngine | None:
        if not self.options.waf:
            return None
        from podwall.inspect.waf import WafEngine  # ModSecurity and the CRS load only when used

        spec = self.policy.spec.inspection if self.policy is not None else None
        if self.policy is not None and not self._used("waf"):
            return None
        used = self._used("waf")
        sensors = [s for s in spec.wafSensors if s.name in used] if spec is not None else []
        paranoia = self.options.paranoia or (spec.waf.paranoia if spec is not None else 1)
        threshold = self.options.threshold or (spec.waf.threshold if spec is not None else 5)
        engine = WafEngine(paranoia=paranoia, threshold=threshold, sensors=sensors)
        self.warnings.extend(engine.warnings)
        return engine

    def inspection(self) -> Inspection:
        """A fresh inspection (threat state is per capture / per run)."""
        factories: list[FlowInspectorFactory] = []
        if self.dlp is not None:
            dlp = self.dlp
            factories.append(lambda ctx: dlp.inspector())
        if self.waf is not None:
            from podwall.inspect.waf.flow import waf_flow_inspector

            factories.append(waf_flow_inspector(self.waf, immediate=self.options.inline))
        threats = None
        if self.options.threats:
            from podwall.inspect.threats.engine import ThreatEngine

            threats = ThreatEngine(self._threat_settings)
        return Inspection(threats=threats, flow_inspectors=factories)

    # -- attachment ------------------------------------------------------------------------------

    def guards(self, client_groups: Sequence[str], server_groups: Sequence[str]) -> bool:
        """Whether a connection between these groups is inspected by WAF or DLP (the enforcer keeps
        such connections in userspace for their whole life)."""
        if self.policy is None:
            return self.dlp is not None or self.waf is not None
        for name in client_groups:
            group = self._groups.get(name)
            if self.dlp is not None and group is not None and group.dlp is not None and group.dlp.status:
                return True
        for name in server_groups:
            group = self._groups.get(name)
            if group is None:
                continue
            if self.dlp is not None and group.dlp is not None and group.dlp.status:
                return True
            if self.waf is not None and group.waf is not None and group.waf.status:
                return True
        return False

    def attach(self, finding: Finding, client_groups: Sequence[str], server_groups: Sequence[str]) -> Finding | None:
        """The finding as the policy sees it (its action), or None when no group asked for it."""
        if self.policy is None or finding.kind is FindingKind.THREAT:
            return finding
        if finding.kind is FindingKind.DLP:
            sensor = str(finding.detail.get("sensor") or finding.id.removeprefix("dlp.").split("/")[0])
            action = self._strictest("dlp", sensor, [*client_groups, *server_groups])
        else:
            sensor = "crs"
            if finding.id.startswith("waf.sensor."):
                sensor = finding.id.removeprefix("waf.sensor.").split("/")[0]
            action = self._strictest("waf", sensor, server_groups)
        if action is None:
            return None
        if finding.kind is FindingKind.WAF and finding.action is Action.ALERT:
            action = Action.ALERT  # below the anomaly threshold: recorded, never blocking
        return replace(finding, action=action)

    def _strictest(self, kind: str, sensor: str, groups: Sequence[str]) -> Action | None:
        found: Action | None = None
        for name in groups:
            group = self._groups.get(name)
            config: SensorConfig | None = getattr(group, kind) if group is not None else None
            if config is None or not config.status:
                continue
            for setting in config.settings:
                if setting.name == sensor:
                    action = _setting_action(setting.action)
                    if found is None or action is Action.DENY:
                        found = action
        return found
