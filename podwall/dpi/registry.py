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
from podwall.dpi.protocols.amqp import AmqpDetector
from podwall.dpi.protocols.cassandra import CassandraDetector
from podwall.dpi.protocols.dhcp import DhcpDetector
from podwall.dpi.protocols.dns import DnsDetector
from podwall.dpi.protocols.ftp import FtpDetector
from podwall.dpi.protocols.http1 import HttpDetector
from podwall.dpi.protocols.http2_detect import GrpcDetector, Http2Detector
from podwall.dpi.protocols.imap import ImapDetector
from podwall.dpi.protocols.kafka import KafkaDetector
from podwall.dpi.protocols.ldap import LdapDetector
from podwall.dpi.protocols.memcached import MemcachedDetector
from podwall.dpi.protocols.mongodb import MongoDetector
from podwall.dpi.protocols.mqtt import MqttDetector
from podwall.dpi.protocols.mysql import MysqlDetector
from podwall.dpi.protocols.nats import NatsDetector
from podwall.dpi.protocols.ntp import NtpDetector
from podwall.dpi.protocols.pop3 import Pop3Detector
from podwall.dpi.protocols.postgres import PostgresDetector
from podwall.dpi.protocols.redis import RedisDetector
from podwall.dpi.protocols.sip import SipDetector
from podwall.dpi.protocols.smtp import SmtpDetector
from podwall.dpi.protocols.ssh import SshDetector
from podwall.dpi.protocols.syslog import SyslogDetector
from podwall.dpi.protocols.tls import TlsDetector
from podwall.dpi.protocols.zookeeper import ZookeeperDetector

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
    LdapDetector,
    NtpDetector,
    DhcpDetector,
    SyslogDetector,
    SipDetector,
    MongoDetector,
    KafkaDetector,
    AmqpDetector,
    MemcachedDetector,
    ZookeeperDetector,
    SshDetector,
    MqttDetector,
    NatsDetector,
    SmtpDetector,
    FtpDetector,
    Pop3Detector,
    ImapDetector,
)


@lru_cache(maxsize=8)
def detectors(limits: Limits = DEFAULT_LIMITS) -> tuple[Detector, ...]:
    """One instance of every detector, in decision order (detectors are stateless: shared)."""
    return tuple(cls(limits) for cls in DETECTOR_CLASSES)


def detector_names() -> list[str]:
    """The canonical application names, in decision order."""
    return [d.name for d in detectors()]
