"""Threats read from the DPI's L7 events: old SSH and TLS versions, MySQL login failures, SQL injection.

DNS events (DNS over TCP, or on ports the engine does not scan itself) go to the DNS checks;
everything else an event can tell is judged here. Version threats are reported once per flow.
"""

from __future__ import annotations

from typing import Any

from podwall.core.types import PROTO_UDP, ip_text
from podwall.datapath.flows import Flow
from podwall.dpi.base import L7Event
from podwall.inspect.sqli import Dialect, check_sql
from podwall.inspect.threats.catalog import ThreatSettings
from podwall.inspect.threats.dns import DNS_PORTS, DnsScan, DnsThreats
from podwall.inspect.threats.flow import FlowState
from podwall.inspect.threats.report import Reporter, WindowCounter, flow_detail

__all__ = ["ER_ACCESS_DENIED", "SQL_SHOWN", "L7Threats"]

ER_ACCESS_DENIED = 1045  # MySQL's ER_ACCESS_DENIED_ERROR
SQL_SHOWN = 1024  # characters of a statement kept in a finding
_SSL = frozenset({"SSLv2", "SSLv3"})
_OLD_TLS = frozenset({"TLSv1.0", "TLSv1.1"})
_DIALECTS: dict[str, Dialect] = {"mysql": "mysql", "postgresql": "postgresql"}


class L7Threats:
    """Judges one L7 event of a flow."""

    def __init__(self, settings: ThreatSettings, reporter: Reporter, dns: DnsThreats) -> None:
        self._s = settings
        self._r = reporter
        self._dns = dns
        self._denied = WindowCounter(settings.mysql_access_denied.window)

    def event(self, flow: Flow, state: FlowState, event: L7Event) -> None:
        app, kind = event.app, event.kind
        if app in _DIALECTS:
            if kind == "query":
                self._sql(flow, event, _DIALECTS[app])
            elif kind == "error" and app == "mysql":
                self._mysql_error(flow, event)
        elif app == "tls" and kind in ("client_hello", "server_hello"):
            self._tls_version(flow, state, event)
        elif app == "ssh" and kind == "banner":
            self._ssh(flow, state, event)
        elif app == "dns" and kind in ("query", "response"):
            udp_scanned = flow.proto == PROTO_UDP and (flow.server_port in DNS_PORTS or flow.client_port in DNS_PORTS)
            if not udp_scanned:  # those datagrams were scanned from the packet already
                self._dns_event(flow, event)

    def _once(self, state: FlowState, key: str) -> bool:
        if key in state.done:
            return False
        state.done.add(key)
        return True

    def _tls_version(self, flow: Flow, state: FlowState, event: L7Event) -> None:
        fields = event.fields
        version = str(fields.get("version") or "")
        side = "server chose" if event.kind == "server_hello" else "client offers at best"
        if version in _SSL or (fields.get("sslv2_format") and version == "SSLv2"):
            key = "ssl_v2_v3"
        elif version in _OLD_TLS:
            key = "tls_1_0_1_1"
        else:
            return
        if not self._once(state, key):
            return
        self._r.flow_hit(
            key,
            f"{version} in use: the {side} {version}",
            flow,
            direction=event.direction,
            l7={"version": version, "sni": flow.server_name},
        )

    def _ssh(self, flow: Flow, state: FlowState, event: L7Event) -> None:
        version = str(event.fields.get("proto_version") or "")
        if not version.startswith("1.") or version == "1.99" or not self._once(state, "ssh_v1"):
            return
        side = event.fields.get("side", "peer")
        self._r.flow_hit(
            "ssh_v1",
            f"the SSH {side} speaks protocol {version} ({event.fields.get('software')})",
            flow,
            direction=event.direction,
            l7={"proto_version": version, "software": event.fields.get("software")},
        )

    def _mysql_error(self, flow: Flow, event: L7Event) -> None:
        if event.fields.get("code") != ER_ACCESS_DENIED or not self._r.enabled["mysql_access_denied"]:
            return
        s = self._s.mysql_access_denied
        count = self._denied.add(flow.client_ip, flow.last_ts)
        if count < s.threshold:
            return
        self._r.flow_hit(
            "mysql_access_denied",
            f"{count} MySQL logins from {ip_text(flow.client_ip)} denied within {s.window:g}s "
            f"(threshold {s.threshold}): {event.fields.get('message')}",
            flow,
            direction=event.direction,
            target=flow.client_ip,
            l7={"code": ER_ACCESS_DENIED, "message": event.fields.get("message")},
            detail={"count": count, "threshold": s.threshold},
        )

    def _sql(self, flow: Flow, event: L7Event, dialect: Dialect) -> None:
        sql = event.fields.get("sql")
        if not sql or not self._r.enabled["sqli"]:
            return
        hits = check_sql(
            sql,
            dialect,
            check_literals=self._s.sqli.check_literals,
            truncated=bool(event.fields.get("truncated")),
        )
        if not hits:
            return
        kinds = sorted({h.kind for h in hits})
        l7: dict[str, Any] = {"app": event.app, "sql": sql[:SQL_SHOWN]}
        self._r.flow_hit(
            "sqli",
            f"{event.app} query with {', '.join(kinds)}: {hits[0].detail!r}",
            flow,
            direction=event.direction,
            l7=l7,
            detail={"hits": [{"kind": h.kind, "detail": h.detail, "offset": h.offset} for h in hits]},
        )

    def _dns_event(self, flow: Flow, event: L7Event) -> None:
        fields = event.fields
        questions = [(str(q.get("qname")), str(q.get("qtype"))) for q in fields.get("questions") or []]
        scan = DnsScan(bool(fields.get("qr")), 0, questions)
        self._dns.message(
            scan,
            client=flow.client_ip,
            ts=flow.last_ts,
            frame=flow.last_frame,
            udp=False,
            detail=flow_detail(flow),
        )
