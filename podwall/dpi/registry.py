"""The explicit, ordered list of protocol detectors the DPI tries (no import side effects).

Order matters only when two detectors match the same bytes in the same round; then a
detector whose usual ports include the flow's server port wins, else the earlier one here.
Adding a protocol means adding its detector class to `DETECTOR_CLASSES`, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.dpi.base import Detector
from podwall.dpi.protocols.cassandra import CassandraDetector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.http2 import GrpcDetector, Http2Detector
from podwall.dpi.protocols.mysql import MysqlDetector
from podwall.dpi.protocols.postgres import PostgresDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.tls import TlsDetector

__all__ = ["DETECTOR_CLASSES", "detector_names", "detectors"]

DETECTOR_CLASSES: tuple[Callable[[Limits], Detector], ...] = (
    # HTTP/2 before HTTP/1.x: an `Upgrade: h2c` request is both, and the upgrade wins.
    Http2Detector,
    GrpcDetector,
    HttpDetector,
    TlsDetector,
    DnsDetector,
    RedisDetector,
    MysqlDetector,
    PostgresDetector,
    CassandraDetector,
)


@lru_cache(maxsize=8)
def detectors(limits: Limits = DEFAULT_LIMITS) -> tuple[Detector, ...]:
    """One instance of every detector, in decision order (detectors are stateless: shared)."""
    return tuple(cls(limits) for cls in DETECTOR_CLASSES)


def detector_names() -> list[str]:
    """The canonical application names, in decision order."""
    return [d.name for d in detectors()]
