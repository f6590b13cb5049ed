"""The built-in network threats: each one's ID, name, severity, default action and settings.

The list follows NeuVector's built-in threats. Every threat is individually configurable in
the policy file under `threats:` by its key (the ID without `threat.`): `enabled`, `action`
(alert, drop or reset), `report_interval` (seconds between two findings of the same threat
against the same target; the ones in between are counted) and its own thresholds. Defaults
are NeuVector's where it has one; docs/threats.md lists them all with what triggers each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from podwall.core.errors import InputError, Location, Problem
from podwall.core.events import Severity
from podwall.inspect.findings import Action

__all__ = [
    "CATALOG",
    "THREATS",
    "ActionName",
    "ThreatInfo",
    "ThreatSetting",
    "ThreatSettings",
    "load_threat_settings",
    "threat_info",
]

ActionName = Literal["alert", "drop", "reset"]


class ThreatSetting(BaseModel):
    """What every threat has: on or off, what to do, how often to report one target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    action: ActionName = "alert"
    report_interval: float = Field(default=10.0, ge=0)

    @property
    def act(self) -> Action:
        return Action(self.action)


class _Drop(ThreatSetting):
    """A threat whose packets are dropped by default."""

    action: ActionName = "drop"


class _Reset(ThreatSetting):
    """A threat whose connection is reset by default."""

    action: ActionName = "reset"


class SynFloodSettings(_Drop):
    threshold: int = Field(default=200, ge=1, description="SYNs to one address within `window`")
    window: float = Field(default=1.0, gt=0)


class IcmpFloodSettings(_Drop):
    threshold: int = Field(default=100, ge=1, description="ICMP messages to one address within `window`")
    window: float = Field(default=1.0, gt=0)


class SessionLimitSettings(_Drop):
    max_concurrent: int = Field(default=2000, ge=1, description="open sessions from one source to one destination")
    max_new: int = Field(default=0, ge=0, description="new sessions from one source within `window` (0: off)")
    window: float = Field(default=1.0, gt=0)


class NoClientDataSettings(_Reset):
    timeout: float = Field(default=30.0, gt=0, description="seconds established without a client byte")
    threshold: int = Field(default=10, ge=1, description="such connections to one server within `window`")
    window: float = Field(default=10.0, gt=0)


class PingOfDeathSettings(_Drop):
    max_size: int = Field(default=32000, ge=1, description="largest ICMP packet (IP bytes, after reassembly)")


class HeartbleedSettings(_Drop):
    min_overread: int = Field(default=1, ge=1, description="bytes a heartbeat request claims past its record")
    response_growth: int = Field(default=1024, ge=1, description="bytes a heartbeat response may exceed its request by")


class SlowlorisSettings(_Reset):
    timeout: float = Field(default=20.0, gt=0, description="seconds a request head may stay incomplete")


class SmallWindowSettings(_Reset):
    min_window: int = Field(default=128, ge=1, description="bytes; smaller non-zero windows count as small")
    count: int = Field(default=5, ge=1, description="consecutive small windows from one side")
    duration: float = Field(default=8.0, ge=0, description="seconds the small windows must last")


class SmallMssSettings(_Drop):
    min_mss: int = Field(default=256, ge=1, description="smaller MSS options count as small")


class DnsOversizeSettings(ThreatSetting):
    max_plain_size: int = Field(default=512, ge=12, description="largest UDP DNS message without EDNS")
    max_size: int = Field(default=4096, ge=12, description="largest UDP DNS message even with EDNS")


class MysqlAccessDeniedSettings(ThreatSetting):
    threshold: int = Field(default=5, ge=1, description="access-denied answers to one client within `window`")
    window: float = Field(default=60.0, gt=0)


class IcmpTunnelSettings(ThreatSetting):
    mismatches: int = Field(default=3, ge=1, description="echo replies that echo none of the recent requests")
    distinct_sizes: int = Field(default=8, ge=2, description="different echo request sizes between two hosts")
    max_payload: int = Field(default=8972, ge=1, description="largest echo payload (a 9000-byte jumbo frame's)")
    window: float = Field(default=60.0, gt=0)


class DnsTunnelSettings(ThreatSetting):
    unique_names: int = Field(default=50, ge=2, description="distinct names under one domain from one client")
    encoded_queries: int = Field(default=5, ge=1, description="queries with a long high-entropy label, same scope")
    long_label: int = Field(default=40, ge=8, description="label length that may carry encoded data")
    min_entropy: float = Field(default=3.5, ge=0, description="Shannon entropy (bits per character) of such a label")
    long_name: int = Field(default=150, ge=16, description="query name length that counts as encoded on its own")
    domain_labels: int = Field(default=2, ge=1, description="labels of the name that make 'one domain'")
    window: float = Field(default=60.0, gt=0)
    ignore_suffixes: tuple[str, ...] = ("arpa", "local", "cluster.local")


class SqliSettings(_Drop):
    check_literals: bool = Field(default=True, description="also run libinjection on the query's string literals")


class ThreatSettings(BaseModel):
    """Settings of every threat, by key; each defaults to the values documented in docs/threats.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    syn_flood: SynFloodSettings = SynFloodSettings()
    icmp_flood: IcmpFloodSettings = IcmpFloodSettings()
    session_limit: SessionLimitSettings = SessionLimitSettings()
    invalid_packet: _Drop = _Drop()
    teardrop: _Drop = _Drop()
    syn_with_data: ThreatSetting = ThreatSetting()
    split_handshake: ThreatSetting = ThreatSetting()
    no_client_data: NoClientDataSettings = NoClientDataSettings()
    ping_of_death: PingOfDeathSettings = PingOfDeathSettings()
    dns_loop_pointer: _Drop = _Drop()
    ssh_v1: ThreatSetting = ThreatSetting()
    tls_heartbleed: HeartbleedSettings = HeartbleedSettings()
    sslv2_cipher_overflow: _Drop = _Drop()
    ssl_v2_v3: _Drop = _Drop()
    tls_1_0_1_1: ThreatSetting = ThreatSetting()
    http_negative_content_length: _Drop = _Drop()
    http_smuggling: _Drop = _Drop()
    http_slowloris: SlowlorisSettings = SlowlorisSettings()
    tcp_small_window: SmallWindowSettings = SmallWindowSettings()
    tcp_small_mss: SmallMssSettings = SmallMssSettings()
    dns_oversize: DnsOversizeSettings = DnsOversizeSettings()
    mysql_access_denied: MysqlAccessDeniedSettings = MysqlAccessDeniedSettings()
    dns_zone_transfer: _Drop = _Drop()
    icmp_tunnel: IcmpTunnelSettings = IcmpTunnelSettings()
    dns_null_type: ThreatSetting = ThreatSetting()
    dns_tunnel: DnsTunnelSettings = DnsTunnelSettings()
    struts_rce: _Drop = _Drop()
    sqli: SqliSettings = SqliSettings()

    def of(self, key: str) -> ThreatSetting:
        """The settings of the threat with this key (`syn_flood`)."""
        value = getattr(self, key)
        assert isinstance(value, ThreatSetting)
        return value


@dataclass(frozen=True, slots=True)
class ThreatInfo:
    """What a threat is: its key (the ID without `threat.`), display name, severity and trigger."""

    key: str
    name: str
    severity: Severity
    summary: str

    @property
    def id(self) -> str:
        return f"threat.{self.key}"


_C, _H, _M, _L, _I = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO

CATALOG: tuple[ThreatInfo, ...] = (
    ThreatInfo("syn_flood", "TCP SYN flood", _C, "more SYNs to one address within the window than the threshold"),
    ThreatInfo(
        "icmp_flood", "ICMP flood", _C, "more ICMP messages to one address within the window than the threshold"
    ),
    ThreatInfo("session_limit", "Source session limit", _H, "too many open (or new) sessions from one source"),
    ThreatInfo("invalid_packet", "Invalid packet format", _M, "a frame the decoder rejects as malformed"),
    ThreatInfo("teardrop", "IP fragment teardrop", _C, "IP fragments whose ranges overlap or disagree on the end"),
    ThreatInfo("syn_with_data", "TCP SYN with data", _M, "a SYN segment that carries payload"),
    ThreatInfo("split_handshake", "TCP split handshake", _M, "the server answers a SYN with a SYN of its own"),
    ThreatInfo("no_client_data", "TCP no client data", _M, "connections held open without a client byte"),
    ThreatInfo("ping_of_death", "Ping of death", _C, "an ICMP packet larger than the maximum size"),
    ThreatInfo("dns_loop_pointer", "DNS compression pointer loop", _C, "a DNS name whose pointers loop"),
    ThreatInfo("ssh_v1", "SSH version 1", _L, "an SSH-1.x banner (not 1.99)"),
    ThreatInfo("tls_heartbleed", "TLS heartbleed", _C, "a heartbeat that claims more bytes than its record holds"),
    ThreatInfo("sslv2_cipher_overflow", "SSLv2 cipher overflow", _C, "an SSLv2 hello whose cipher list overruns it"),
    ThreatInfo("ssl_v2_v3", "SSLv2/SSLv3 in use", _M, "SSL 2.0 or 3.0 offered or chosen"),
    ThreatInfo("tls_1_0_1_1", "TLS 1.0/1.1 in use", _I, "TLS 1.0 or 1.1 negotiated (or the client's best)"),
    ThreatInfo("http_negative_content_length", "HTTP negative content length", _H, "Content-Length below zero"),
    ThreatInfo("http_smuggling", "HTTP request smuggling", _H, "a request whose body length is ambiguous"),
    ThreatInfo("http_slowloris", "HTTP slowloris", _C, "a request head left incomplete too long"),
    ThreatInfo("tcp_small_window", "TCP small window", _H, "tiny non-zero receive windows advertised on and on"),
    ThreatInfo("tcp_small_mss", "TCP small MSS", _H, "a SYN whose MSS option is below the minimum"),
    ThreatInfo("dns_oversize", "DNS oversize", _C, "a UDP DNS message larger than allowed, or a name over 255 bytes"),
    ThreatInfo("mysql_access_denied", "MySQL access denied brute force", _M, "repeated MySQL login failures"),
    ThreatInfo("dns_zone_transfer", "DNS zone transfer", _C, "an AXFR or IXFR query"),
    ThreatInfo("icmp_tunnel", "ICMP tunneling", _C, "echo payloads that do not echo, vary in size or are huge"),
    ThreatInfo("dns_null_type", "DNS NULL type query", _C, "a query for the NULL record type"),
    ThreatInfo("dns_tunnel", "DNS tunneling", _H, "many unique or encoded-looking names under one domain"),
    ThreatInfo("struts_rce", "Apache Struts remote code execution", _C, "OGNL expressions in a request head"),
    ThreatInfo("sqli", "SQL injection", _C, "injection shapes in MySQL/PostgreSQL query text"),
)

THREATS: dict[str, ThreatInfo] = {info.key: info for info in CATALOG}


def threat_info(key_or_id: str) -> ThreatInfo:
    """The catalog entry for `syn_flood` or `threat.syn_flood`; KeyError for an unknown one."""
    key = key_or_id.removeprefix("threat.")
    return THREATS[key]


def load_threat_settings(data: Mapping[str, Any] | None, source: str | None = None) -> ThreatSettings:
    """Validate the `threats:` section of a policy file; InputError naming each bad field and where."""
    try:
        return ThreatSettings.model_validate(dict(data or {}))
    except ValidationError as exc:
        problems = [
            Problem(
                Location(file=source, obj="threats", path=".".join(str(part) for part in err["loc"]) or None),
                err["msg"],
            )
            for err in exc.errors()
        ]
        raise InputError("invalid threat settings", problems) from None
