"""The datapath engine, pure: frames in, finished flows out (decode -> flow table -> DPI).

The same engine runs over capture files, a live tap and inline packets: only the source of
frames differs. It does no I/O; callers hand it frames and collect the flows it finishes.
"""

from __future__ import annotations

from collections.abc import Callable

from podwall.core.errors import Problem
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.datapath.decode import Decoder
from podwall.datapath.flows import Flow, FlowTable
from podwall.datapath.io.pcap import Frame
from podwall.dpi.session import FULL, DpiSession


class Engine:
    """Decodes frames, tracks flows and runs the DPI; returns flows as they end.

    `dpi_depth` is the DPI sessions' depth (`podwall.dpi.session`): `full` (every message
    of every flow, for L7 policy and inspection) or `detect` (stop once the application and
    its identifying fields are known, as nDPI does).
    """

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        *,
        dpi: bool = True,
        dpi_depth: str = FULL,
        on_problem: Callable[[Problem], None] | None = None,
        source: str | None = None,
    ) -> None:
        self.limits = limits
        self.decoder = Decoder(limits, on_problem=on_problem, source=source)
        factory = (lambda ctx: DpiSession(ctx, limits, depth=dpi_depth)) if dpi else None
        self.table = FlowTable(limits, dpi_factory=factory)
        self.packets = 0

    def feed(self, frame: Frame) -> list[Flow]:
        """Process one frame; returns the flows it (or the time it carries) ended."""
        pkt = self.decoder.decode(frame)
        if pkt is None:
            return []
        self.packets += 1
        return self.table.add(pkt)

    def finish(self) -> list[Flow]:
        """End of input: incomplete fragment trains are dropped and every remaining flow ends."""
        self.decoder.finish()
        return self.table.flush()
