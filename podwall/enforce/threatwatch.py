"""Network threats on the enforcer's node: the policy's threat engine over the drift watcher's tap.

The NFQUEUE workers see only the payload packets of connections being decided (and of the
ones WAF or DLP guard); a SYN flood, a small-window or small-MSS handshake, request smuggling
on a connection already on the kernel's fast path are seen only by a tap. `ThreatWatch` runs
the threat engine (inspect/threats, with the settings of the policy's `spec.inspection.threats`)
over the frames of the tap the drift watcher reads, and makes each finding an event of the
enforcer's schema, its triggering packets saved as a pcap when a directory is given.

In protect mode a finding whose action blocks (drop, reset) and that belongs to one TCP
connection has that connection cut as a drifted one is (`DriftCutter`: connmark deny, resets
to both ends): after the fact, as a tap sees packets as they pass, so the packets that made
the finding have reached the server. Findings that belong to no single connection (floods,
a source's session count) are recorded, not enforced. `ThreatWatch` is pure (frames in,
outcomes out); the drift thread does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from podwall.analysis.inspection import attach_findings, finding_event, name_finding, save_pcaps
from podwall.core.events import Event
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.datapath.io.pcap import Frame
from podwall.enforce.reset import ResetTarget
from podwall.inspect.pipeline import InspectingEngine
from podwall.inspect.setup import InspectOptions, Inspectors
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy

__all__ = ["ThreatCut", "ThreatOutcome", "ThreatWatch"]


@dataclass(frozen=True, slots=True)
class ThreatCut:
    """The connection a blocking finding cuts, as `DriftCutter` takes it."""

    proto: int
    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    server_seq: int | None  # the next byte the server expects from the client (tap's view)
    client_seq: int | None  # the next byte the client expects from the server

    @property
    def reset_target(self) -> ResetTarget | None:
        if self.proto != PROTO_TCP or self.server_seq is None:
            return None
        return ResetTarget(
            self.client_ip, self.client_port, self.server_ip, self.server_port, self.server_seq, self.client_seq
        )


@dataclass(frozen=True, slots=True)
class ThreatOutcome:
    """One finding as an event, and the connection to cut for it (None: recorded only)."""

    event: Event
    cut: ThreatCut | None
    reason: str


class ThreatWatch:
    """Frames from a tap in, threat events and cuts out (no I/O but the optional pcaps)."""

    def __init__(
        self,
        policy: Policy,
        engine: PolicyEngine,
        resolver: Resolver,
        *,
        source: str = "threats",
        limits: Limits = DEFAULT_LIMITS,
        pcap_dir: Path | None = None,
    ) -> None:
        self.source = source
        self.limits = limits
        self.pcap_dir = pcap_dir
        self.findings = 0
        self.cuts = 0
        self._set(policy, engine, resolver)

    def _set(self, policy: Policy, engine: PolicyEngine, resolver: Resolver) -> None:
        # Threats only: WAF and DLP run inline in the workers, on the connections they guard.
        self.inspectors = Inspectors(policy, InspectOptions(waf=False, dlp=False))
        self.engine = InspectingEngine(self.inspectors.inspection(), self.limits, source=self.source)
        self.policy = engine
        self.resolver = resolver

    def reload(self, policy: Policy, engine: PolicyEngine, resolver: Resolver) -> None:
        """A new policy: its threat settings from now on (the engine's rate state starts afresh)."""
        self._set(policy, engine, resolver)

    def feed(self, frames: Iterable[Frame]) -> list[ThreatOutcome]:
        """Process a batch of frames; returns the findings it revealed, each once."""
        engine = self.engine
        for frame in frames:
            engine.feed(frame)
        if not engine.findings:
            return []
        captured, engine.findings = engine.findings, []
        outcomes: list[ThreatOutcome] = []
        for c in captured:
            named = name_finding(c, self.resolver, self.source)
            kept = attach_findings([named], self.inspectors, self.policy)
            if not kept:
                continue
            nf = kept[0]
            if self.pcap_dir is not None:
                try:
                    save_pcaps([nf], self.pcap_dir)
                except OSError:
                    nf = replace(nf, pcap=None)
            cut = None
            flow = c.flow
            if nf.finding.action.blocks and flow is not None and flow.proto == PROTO_TCP:
                policy = self.policy
                mode, _ = policy.effective_mode(policy.group_of_mode(nf.client), policy.group_of_mode(nf.server))
                if mode == "protect":
                    ends: list[int] = flow._seq_end  # as drift.py reads them: where each direction stopped
                    server_seq, client_seq = (
                        None if ends[d] < 0 else ends[d] & 0xFFFFFFFF for d in (Direction.C2S, Direction.S2C)
                    )
                    cut = ThreatCut(flow.proto, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port,
                                    server_seq, client_seq)  # fmt: skip
            self.findings += 1
            self.cuts += cut is not None
            reason = f"{nf.finding.name}: {nf.finding.message}"
            outcomes.append(ThreatOutcome(finding_event(nf, enforced=cut is not None), cut, reason))
        return outcomes
