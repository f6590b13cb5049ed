"""What the NFQUEUE worker remembers per connection (pure): the state of a flow it is judging,
the record of a decided connection whose flow it freed, the key both are filed under, and the
verdicts it can reuse for the next connection between the same ends.

Records and flows are keyed like the flow table keys its flows (`flow_key`: the 5-tuple with
the two ends in a fixed order), so one lookup finds a connection from either direction.
"""

from __future__ import annotations

from collections.abc import Mapping

from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, Endpoint, Packet
from podwall.core.verdict import Verdict
from podwall.datapath.flows import DpiSessionLike, Flow
from podwall.enforce.verdicts import Decision
from podwall.policy.l7context import requests_of, server_name_of

__all__ = ["ConnState", "FlowKeyTuple", "Record", "VerdictCache", "flow_key"]

FlowKeyTuple = tuple[int, bytes, int, bytes, int]  # (proto, address, port, address, port)


class ConnState:
    """What the worker remembers about one flow in the table beyond the flow itself."""

    __slots__ = ("client", "final", "flow", "inspect", "judged", "per_request", "reset_sent", "seen", "server",
                 "server_ack", "version")  # fmt: skip

    def __init__(self, flow: Flow, version: int) -> None:
        self.flow = flow
        self.version = version
        self.final: Decision | None = None  # the sticky decision, once there is one
        self.per_request: bool | None = None  # None: not known yet (application undecided)
        self.seen = 0  # DPI requests already judged
        self.judged = False  # some request was judged (per-request connections)
        self.client: Endpoint | None = None
        self.server: Endpoint | None = None
        self.server_ack: int | None = None  # the last ACK number the server sent
        self.reset_sent = False
        self.inspect = False  # WAF/DLP guard the connection: it stays in userspace (inline_inspect.py)


class Record:
    """A decided connection whose flow was freed: enough to answer and to judge it again."""

    __slots__ = ("app", "client_ip", "client_port", "decision", "server_ip", "server_name", "server_port", "version")

    def __init__(
        self,
        decision: Decision,
        version: int,
        app: str | None,
        server_name: str | None,
        client: tuple[bytes, int],
        server: tuple[bytes, int],
    ) -> None:
        self.decision = decision
        self.version = version
        self.app = app
        self.server_name = server_name
        self.client_ip, self.client_port = client
        self.server_ip, self.server_port = server

    @classmethod
    def of(cls, flow: Flow, decision: Decision, version: int) -> Record:
        """The record of a decided flow."""
        client, server = (flow.client_ip, flow.client_port), (flow.server_ip, flow.server_port)
        return cls(decision, version, flow.app, flow.server_name, client, server)


def flow_key(pkt: Packet) -> FlowKeyTuple:
    """The connection's key, whichever way the packet travels (as the flow table orders a flow's ends)."""
    src, dst, sport, dport = pkt.src, pkt.dst, pkt.sport, pkt.dport
    if src < dst or (src == dst and sport <= dport):
        return (pkt.proto, src, sport, dst, dport)
    return (pkt.proto, dst, dport, src, sport)


class VerdictCache:
    """Verdicts of whole connections (not of their L7 requests) by what decided them: client and
    server address, transport, server port, application and server name. The caller clears it
    whenever the policy or the inventory changes; it is emptied when `size` entries are reached."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[tuple[object, ...], tuple[Verdict, bool]] = {}

    @staticmethod
    def _key(flow: Flow, requests: tuple[Mapping[str, object], ...] | None) -> tuple[object, ...]:
        return VerdictCache.key_of(
            flow.client_ip, flow.server_ip, flow.proto, flow.server_port, flow.app, flow.server_name, flow.dpi, requests
        )

    @staticmethod
    def key_of(
        client_ip: bytes,
        server_ip: bytes,
        proto: int,
        server_port: int,
        app: str | None,
        known: str | None,
        dpi: DpiSessionLike | None,
        requests: tuple[Mapping[str, object], ...] | None = None,
    ) -> tuple[object, ...]:
        """The key of a connection with these ends, application and server name (`known`, else
        the one its requests name); `requests` None: the DPI's."""
        port = 0 if proto in (PROTO_ICMP, PROTO_ICMPV6) else server_port
        if known is not None:
            name: str | None = known
        else:
            if requests is None:
                requests = requests_of(dpi.requests, dpi.requests_truncated) if dpi is not None else ()
            name = server_name_of(requests)
        return (client_ip, server_ip, proto, port, app, name, known)

    def get(self, flow: Flow) -> tuple[Verdict, bool] | None:
        """(verdict, the connection is judged per request) of an earlier connection like `flow`."""
        return self._entries.get(self._key(flow, None))

    def get_key(self, key: tuple[object, ...]) -> tuple[Verdict, bool] | None:
        """As `get`, by a key from `key_of`."""
        return self._entries.get(key)

    def put(self, flow: Flow, requests: tuple[Mapping[str, object], ...], verdict: Verdict, per_request: bool) -> None:
        entries = self._entries
        if len(entries) >= self._size:
            entries.clear()
        entries[self._key(flow, requests)] = (verdict, per_request)

    def clear(self) -> None:
        self._entries.clear()
