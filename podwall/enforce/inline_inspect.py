"""Inspection in the enforcer's worker: which connections stay in userspace and what a finding does.

A connection between groups that turn WAF or DLP on (inspect/setup.py) is never given the
kernel's allow mark: every payload packet comes back to the worker, whose flow table feeds the
inspectors (and the threat engine's stream and L7 checks) as offline analysis does. After each
packet the worker asks `review`: the findings the policy attaches become events, and in protect
mode a finding whose action blocks (deny, drop, reset) cuts the connection — the worker then
denies it as it denies a policy violation (deny mark, resets to both ends).

Forensics: the worker hands every queued packet to `remember`, which keeps the flow's first
~2 KB and its latest frames on the flow's session (each cut to `FRAME_SNAP` bytes: a GSO packet
reaches 64 KiB). With a `pcap_dir`, each finding's frames are written there as a pcap its event
points to, as offline analysis does; at most `PCAP_BUDGET` files a minute and `PCAP_BYTES` of
packets in its lifetime per worker, so an attack that floods findings does not fill the disk
(the events beyond say no pcap). Nothing removes old files: rotate the directory as any log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from podwall.analysis.inspection import NamedFinding, attach_findings, finding_event, save_pcaps
from podwall.core.events import Event
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import Endpoint, proto_name
from podwall.datapath.flows import DpiSessionLike, Flow, FlowTable
from podwall.datapath.io.pcap import Frame
from podwall.dpi.base import DetectContext
from podwall.dpi.session import DpiSession
from podwall.inspect.pipeline import Forensics, InspectedSession, InspectingFlowTable
from podwall.inspect.setup import Inspectors
from podwall.policy.evaluate import PolicyEngine

__all__ = ["FRAME_SNAP", "PCAP_BUDGET", "PCAP_BYTES", "InlineInspection", "PcapBudget"]

log = logging.getLogger(__name__)

FRAME_SNAP = 4096  # bytes of each queued packet kept for a finding's pcap
PCAP_BUDGET = 120  # finding pcaps written per worker and minute
PCAP_BYTES = 1 << 30  # packet bytes a worker writes to finding pcaps in its lifetime


class PcapBudget:
    """Writes findings' pcaps into a directory within a budget: `PCAP_BUDGET` files a minute and
    `PCAP_BYTES` of packets in all (per worker, and for the tap's threat watch)."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.written = 0
        self.skipped = 0
        self.bytes = 0
        self._clock = clock
        self.minute = (clock(), 0)  # (start of the current budget minute, pcaps written in it)

    def save(self, findings: list[NamedFinding]) -> None:
        """Write the pcaps of as many findings as the budget allows (the others keep none); a
        directory that cannot be written is logged, the findings stay."""
        now = self._clock()
        start, count = self.minute
        if now - start >= 60.0:
            start, count = now, 0
        room = max(0, PCAP_BUDGET - count) if self.bytes < PCAP_BYTES else 0
        framed = [nf for nf in findings if nf.frames]
        chosen = framed[:room]
        self.skipped += len(framed) - len(chosen)
        try:
            save_pcaps(chosen, self.directory)
        except OSError as exc:
            log.warning("cannot write finding pcaps to %s: %s", self.directory, exc)
            chosen = [nf for nf in chosen if nf.pcap is not None]
        self.written += len(chosen)
        self.bytes += sum(len(frame.data) for nf in chosen for frame in nf.frames)
        self.minute = (start, count + len(chosen))


class InlineInspection:
    """The inspectors of one worker (loaded once per worker process)."""

    def __init__(
        self,
        inspectors: Inspectors,
        limits: Limits = DEFAULT_LIMITS,
        source: str = "enforce",
        pcap_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inspectors = inspectors
        self.limits = limits
        self.source = source
        self.pcaps = PcapBudget(pcap_dir, clock) if pcap_dir is not None else None
        self._inspection = inspectors.inspection()

    def flow_table(self) -> FlowTable:
        """The worker's flow table, with inspected DPI sessions."""
        return InspectingFlowTable(self.limits, dpi_factory=self._session)

    def _session(self, ctx: DetectContext) -> DpiSessionLike:
        found = [i for i in (make(ctx) for make in self._inspection.flow_inspectors) if i is not None]
        return InspectedSession(DpiSession(ctx, self.limits), found, self._inspection.threats)

    def remember(self, flow: Flow, frame: Frame) -> None:
        """Keep a copy of the packet the worker is deciding, for the pcaps of the flow's findings
        (`frame` is the worker's, reused for the next packet)."""
        session = flow.dpi
        if not isinstance(session, InspectedSession):
            return
        kept = session.forensics
        if kept is None:
            kept = session.forensics = Forensics()
        data = frame.data
        if len(data) > FRAME_SNAP:
            data = data[:FRAME_SNAP]
        kept.add(Frame(frame.number, frame.ts, frame.linktype, bytes(data), frame.orig_len))

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
        frames = session.forensics.snapshot() if session.forensics is not None else []
        transport, name = proto_name(flow.proto), flow.server_name
        named = [NamedFinding(f, client, server, transport, flow.proto, app, name, self.source, frames) for f in found]
        kept = attach_findings(named, self.inspectors, engine)
        self._save(kept)
        mode, _ = engine.effective_mode(engine.group_of_mode(client), engine.group_of_mode(server))
        cut = mode == "protect" and any(nf.finding.action.blocks for nf in kept)
        return cut, [finding_event(nf, enforced=cut and nf.finding.action.blocks) for nf in kept]

    def _save(self, findings: list[NamedFinding]) -> None:
        if self.pcaps is not None and findings:
            self.pcaps.save(findings)
