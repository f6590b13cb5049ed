"""How NeuVector names map to podwall's: policy modes, application names and `ports` entries.

The tables say which NeuVector applications podwall's DPI identifies (and under which name);
`import_ports` and `import_apps` apply them to one rule, recording located faults.
"""

from __future__ import annotations

from typing import Any

from podwall.inventory.fields import FieldReader
from podwall.policy.model import Mode
from podwall.policy.specs import parse_port_spec

# NeuVector policymode values (controller: Learn/Evaluate/Enforce under these display names).
NV_MODES: dict[str, Mode] = {"discover": "discover", "monitor": "monitor", "protect": "protect"}
MODE_NAMES: dict[str, str] = {"discover": "Discover", "monitor": "Monitor", "protect": "Protect"}
NO_MODE = frozenset({"", "n/a"})

# NeuVector application display names (lower case) -> podwall DPI names. RabbitMQ is NeuVector's
# name for AMQP traffic.
NV_TO_APP: dict[str, str] = {
    "http": "http",
    "ssl": "tls",
    "grpc": "grpc",
    "dns": "dns",
    "dhcp": "dhcp",
    "ntp": "ntp",
    "sip": "sip",
    "ssh": "ssh",
    "syslog": "syslog",
    "mysql": "mysql",
    "postgresql": "postgresql",
    "mongodb": "mongodb",
    "redis": "redis",
    "cassandra": "cassandra",
    "memcached": "memcached",
    "zookeeper": "zookeeper",
    "kafka": "kafka",
    "rabbitmq": "amqp",
}
APP_TO_NV: dict[str, str] = {
    "http": "HTTP",
    "tls": "SSL",
    "grpc": "GRPC",
    "dns": "DNS",
    "dhcp": "DHCP",
    "ntp": "NTP",
    "sip": "SIP",
    "ssh": "SSH",
    "syslog": "Syslog",
    "mysql": "MySQL",
    "postgresql": "PostgreSQL",
    "mongodb": "MongoDB",
    "redis": "Redis",
    "cassandra": "Cassandra",
    "memcached": "Memcached",
    "zookeeper": "ZooKeeper",
    "kafka": "Kafka",
    "amqp": "RabbitMQ",
}
# Names podwall's DPI reports that NeuVector has no name for; written unchanged.
PODWALL_ONLY_APPS = frozenset({"http2", "mqtt", "nats", "smtp", "ftp", "pop3", "imap", "ldap"})
# NeuVector applications podwall's DPI never reports: a rule naming one would never match.
NV_ONLY_APPS = frozenset(
    {
        "activemq",
        "apache",
        "consul",
        "couchbase",
        "couchdb",
        "echo",
        "elasticsearch",
        "etcd",
        "jetty",
        "mssql",
        "nginx",
        "oracle",
        "radius",
        "rtsp",
        "spark",
        "tftp",
        "voltdb",
        "wordpress",
    }
)


def import_ports(value: Any, path: str, r: FieldReader) -> list[str] | None:
    """NeuVector's comma-separated `ports` as podwall port entries; None after recording a fault."""
    if value is None:
        return ["any"]
    text = r.string(value, path)
    if text is None:
        return None
    out: list[str] = []
    for entry in (e.strip().lower() for e in text.split(",")):
        if entry in ("", "any"):
            return ["any"]  # any covers every other entry
        if entry in ("icmp", "icmpv6"):
            specs = ["icmp"]
        elif entry.startswith("ip:"):
            r.fail(path, f"port {entry!r}: podwall matches other IP protocols only with any")
            return None
        else:
            transport, sep, ports = entry.partition("/")
            if not sep:
                transport, ports = "", entry
            if sep and transport not in ("tcp", "udp"):
                r.fail(path, f"unknown transport {transport!r} in port {entry!r}: expected tcp or udp")
                return None
            # NeuVector's parser reads a bare port as that port on any transport.
            transports = [transport] if sep else ["tcp", "udp"]
            span = _port_span(ports)
            if span is None:
                r.fail(path, f"invalid port {entry!r}: expected any, icmp, tcp/<port>, udp/<port> or a range 1-65535")
                return None
            specs = [f"{t}/{span}" for t in transports]
        for spec in specs:
            canon = parse_port_spec(spec).text
            if canon not in out:
                out.append(canon)
    return out


def _port_span(ports: str) -> str | None:
    """`80`, `80-90`, `any` as podwall writes them after the transport; None if invalid."""
    if ports == "any":
        return "any"
    lo_text, dash, hi_text = ports.partition("-")
    if not lo_text.isdigit() or (dash and not hi_text.isdigit()):
        return None
    lo, hi = int(lo_text), int(hi_text) if dash else int(lo_text)
    lo, hi = min(lo, hi), max(lo, hi)  # NeuVector swaps a reversed range
    if hi == 0 or hi > 65535:
        return None
    lo = max(lo, 1)  # NeuVector counts from 0; port 0 carries no traffic
    if (lo, hi) == (1, 65535):
        return "any"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def import_apps(value: Any, path: str, r: FieldReader) -> list[str] | None:
    """NeuVector application names as podwall DPI names; None after recording a fault."""
    out: list[str] = []
    ok = True
    for i, item in enumerate(r.sequence(value, path)):
        name = r.string(item, f"{path}[{i}]", required=True)
        if name is None:
            ok = False
            continue
        low = name.strip().lower()
        if low == "any":
            return ["any"]
        if low in NV_TO_APP:
            app = NV_TO_APP[low]
        elif low in APP_TO_NV or low in PODWALL_ONLY_APPS:
            app = low
        elif low in NV_ONLY_APPS:
            r.fail(
                f"{path}[{i}]", f"application {name!r} is not identified by podwall's DPI: the rule would never match"
            )
            ok = False
            continue
        else:
            r.fail(f"{path}[{i}]", f"unknown application {name!r}: expected a NeuVector name such as HTTP, SSL, Redis")
            ok = False
            continue
        if app not in out:
            out.append(app)
    if not ok:
        return None
    return out or ["any"]
