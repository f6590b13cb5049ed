"""Inspection in the enforcer's worker: which connections stay in userspace and what a finding does.

A connection between groups that turn WAF or DLP on (inspect/setup.py) is never given the
kernel's allow mark: every payload packet comes back to the worker, whose flow table feeds the
inspectors (and the threat engine's stream and L7 checks) as offline analysis does. After each
packet the worker asks `review`: the findings the policy attaches become events, and in protect
mode a finding whose action blocks (deny, drop, reset) cuts the connection — the worker then
denies it as it denies a policy violation (deny mark, resets to both ends).
"""

from __future__ import annotations

from dataclasses import replace

from podwall.analysis.inspection import NamedFinding, attach_findings, finding_event
from podwall.core.events import Event
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import Endpoint, proto_name
from podwall.datapath.flows import DpiSessionLike, Flow, FlowTable
from podwall.dpi.base import DetectContext
from podwall.dpi.session import DpiSession
from podwall.inspect.pipeline import InspectedSession, InspectingFlowTable
from podwall.inspect.setup import Inspectors
from podwall.policy.evaluate import PolicyEngine

__all__ = ["InlineInspection"]


class InlineInspection:
    """The inspectors of one worker (loaded once per worker process)."""

    def __init__(self, inspectors: Inspectors, limits: Limits = DEFAULT_LIMITS, source: str = "enforce") -> None:
        self.inspectors = inspectors
        self.limits = limits
        self.source = source
        self._inspection = inspectors.inspection()

    def flow_table(self) -> FlowTable:
        """The worker's flow table, with inspected DPI sessions."""
        return InspectingFlowTable(self.limits, dpi_factory=self._session)

    def _session(self, ctx: DetectContext) -> DpiSessionLike:
        found = [i for i in (make(ctx) for make in self._inspection.flow_inspectors) if i is not None]
        return InspectedSession(DpiSession(ctx, self.limits), found, self._inspection.threats)

    def guards(self, engine: PolicyEngine, client: Endpoint, server: Endpoint) -> bool:
        return self.inspectors.guards(engine.member_groups(client), engine.member_groups(server))

    def review(self, engine: PolicyEngine, flow: Flow, client: Endpoint, server: Endpoint) -> tuple[bool, list[Event]]:
        """The connection's new findings as events, and whether they cut it (protect mode, blocking action)."""
        session = flow.dpi
        if not isinstance(session, InspectedSession) or not session.findings:
            return False, []
        found, session.findings = session.findings, []
        # Findings made from bytes or events are of the packet the worker is deciding now.
        found = [f if f.frame else replace(f, ts=flow.last_ts, frame=flow.last_frame) for f in found]
        app = flow.app or proto_name(flow.proto)
        named = [
            NamedFinding(f, client, server, proto_name(flow.proto), flow.proto, app, flow.server_name, self.source, [])
            for f in found
        ]
        kept = attach_findings(named, self.inspectors, engine)
        mode, _ = engine.effective_mode(engine.group_of_mode(client), engine.group_of_mode(server))
        cut = mode == "protect" and any(nf.finding.action.blocks for nf in kept)
        return cut, [finding_event(nf, enforced=cut and nf.finding.action.blocks) for nf in kept]
