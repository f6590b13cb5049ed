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
the finding have reached the server. Only the threats of one connection's own bytes or
handshake cut (`CUTTING`): a flood or a source's session count is found on whichever packet
crosses the line, often an innocent client's, so those are recorded, not enforced; nor is a
finding made as its flow ends. Connections that WAF or DLP guard are left to the workers,
which run the threat engine on them inline (no double report). Frames kept for pcaps are cut
to `FRAME_SNAP` bytes and the pcaps share the workers' budget (inline_inspect.py).
`ThreatWatch` is pure but for the pcaps; the drift thread does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from podwall.analysis.inspection import attach_findings, finding_event, name_finding
from podwall.core.events import Event
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction, Endpoint
from podwall.datapath.flows import Flow
from podwall.datapath.io.pcap import Frame
from podwall.enforce.inline_inspect import FRAME_SNAP, PcapBudget
from podwall.enforce.reset import ResetTarget
from podwall.inspect.pipeline import InspectingEngine
from podwall.inspect.setup import InspectOptions, Inspectors
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy

__all__ = ["CUTTING", "CutTarget", "ThreatOutcome", "ThreatWatch"]

# Threats found in one TCP connection's own bytes or handshake: the connection to cut is known.
CUTTING = frozenset(
    f"threat.{key}"
    for key in (
        "syn_with_data", "split_handshake", "no_client_data", "ssh_v1", "tls_heartbleed", "sslv2_cipher_overflow",
        "ssl_v2_v3", "tls_1_0_1_1", "http_negative_content_length", "http_smuggling", "http_slowloris",
        "tcp_small_window", "tcp_small_mss", "struts_rce", "sqli",
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CutTarget:
    """A TCP connection to cut as `DriftCutter` does (a drifted one, or one a threat was found in)."""

    proto: int
    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    server_seq: int | None  # the next byte the server expects from the client (tap's view)
    client_seq: int | None  # the next byte the client expects from the server

    @classmethod
    def of(cls, flow: Flow) -> CutTarget:
        """The flow's connection, with where each direction's bytes stopped as the tap saw them."""
        # The flow table keeps these to join idle-split flows; the resets need exactly them.
        ends: list[int] = flow._seq_end
        server_seq, client_seq = (None if ends[d] < 0 else ends[d] & 0xFFFFFFFF for d in (Direction.C2S, Direction.S2C))
        return cls(
            flow.proto, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port, server_seq, client_seq
        )

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
    cut: CutTarget | None
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
        self.pcaps = PcapBudget(pcap_dir) if pcap_dir is not None else None
        self.findings = 0
        self.cuts = 0
        self.settings = policy.spec.inspection
        # Threats only: WAF and DLP run inline in the workers, on the connections they guard.
        self.inspectors = Inspectors(policy, InspectOptions(waf=False, dlp=False))
        self.engine = InspectingEngine(self.inspectors.inspection(), limits, source=source)
        self.engine.frame_snap = FRAME_SNAP
        self._judge = (engine, resolver, _guarding(policy))

    @property
    def resolver(self) -> Resolver:
        return self._judge[1]

    def judge_by(self, policy: Policy, engine: PolicyEngine, resolver: Resolver) -> bool:
        """Judge by a new policy and inventory keeping the threat state (rates, timers, flows);
        False when the policy's threat settings changed: then a new watch is needed."""
        if policy.spec.inspection != self.settings:
            return False
        self._judge = (engine, resolver, _guarding(policy))  # one swap: the thread sees old or new
        return True

    def feed(self, frames: Iterable[Frame]) -> list[ThreatOutcome]:
        """Process a batch of frames; returns the findings it revealed, each once."""
        engine = self.engine
        for frame in frames:
            engine.feed(frame)
        if not engine.findings:
            return []
        captured, engine.findings = engine.findings, []
        policy, resolver, guarding = self._judge
        outcomes: list[ThreatOutcome] = []
        for c in captured:
            named = name_finding(c, resolver, self.source)
            if guarding and _guarded(guarding, policy, named.client, named.server) and c.flow is not None:
                continue  # the workers inspect this connection inline, threats included
            kept = attach_findings([named], self.inspectors, policy)
            if not kept:
                continue
            nf = kept[0]
            if self.pcaps is not None:
                self.pcaps.save([nf])
            cut = None
            flow = c.flow
            finding = nf.finding
            if (
                finding.action.blocks
                and finding.id in CUTTING
                and flow is not None
                and flow.proto == PROTO_TCP
                and not flow.end_reason
            ):
                mode, _ = policy.effective_mode(policy.group_of_mode(nf.client), policy.group_of_mode(nf.server))
                if mode == "protect":
                    cut = CutTarget.of(flow)
            self.findings += 1
            self.cuts += cut is not None
            reason = f"{nf.finding.name}: {nf.finding.message}"
            outcomes.append(ThreatOutcome(finding_event(nf, enforced=cut is not None), cut, reason))
        return outcomes


def _guarding(policy: Policy) -> tuple[frozenset[str], frozenset[str]]:
    """The groups whose connections the workers inspect inline: (DLP on: either end, WAF on: server)."""
    dlp = frozenset(g.name for g in policy.spec.groups if g.dlp is not None and g.dlp.status)
    waf = frozenset(g.name for g in policy.spec.groups if g.waf is not None and g.waf.status)
    return dlp, waf


def _guarded(guarding: tuple[frozenset[str], frozenset[str]], engine: PolicyEngine, client: Endpoint,
             server: Endpoint) -> bool:  # fmt: skip
    dlp, waf = guarding
    if not dlp and not waf:
        return False
    cg, sg = set(engine.member_groups(client)), set(engine.member_groups(server))
    return bool(cg & dlp or sg & dlp or sg & waf)
