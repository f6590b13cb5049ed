"""Resource limits and timeouts, in one place so that every layer agrees and users can tune them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep memory bounded whatever the traffic.

    Timeouts match nfstream's defaults so that flow boundaries compare with it.
    """

    idle_timeout: float = 120.0  # seconds without a packet before a flow ends
    active_timeout: float = 1800.0  # seconds after its first packet a flow is cut and restarted
    max_flows: int = 1_000_000  # flow-table size; the oldest idle flows are evicted past it
    reasm_window: int = 256 * 1024  # out-of-order bytes buffered per TCP direction
    reasm_max_segments: int = 1024  # out-of-order pieces buffered per TCP direction (holes between them)
    dpi_buffer: int = 16 * 1024  # bytes buffered per direction while the DPI has not decided
    dpi_max_packets: int = 24  # payload packets per flow after which an undecided flow is `unknown`
    parser_buffer: int = 64 * 1024  # bytes a protocol parser may hold for one message
    max_fragments: int = 8192  # IP fragment trains held at once
    fragment_timeout: float = 30.0  # seconds an incomplete fragment train is kept
    fragment_bytes: int = 4 * 1024 * 1024  # bytes held by all incomplete fragment trains together


DEFAULT_LIMITS = Limits()
