"""Run the engine over capture files and name both ends of every flow.

This is the I/O edge of offline analysis: it opens captures, feeds the pure engine, and
resolves each finished flow's client and server to workloads and groups. Each capture is
its own timeline, so flows never span files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from podwall.core.errors import Problem
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Endpoint,
    Observation,
    ip_text,
    proto_name,
)
from podwall.datapath.engine import Engine
from podwall.datapath.flows import Flow
from podwall.datapath.io.pcap import CaptureReader, Frame
from podwall.dpi.session import FULL
from podwall.inventory.resolver import Resolver
from podwall.policy.l7context import requests_of, server_name_of


def app_label(app: str | None, proto: int, server_port: int) -> str:
    """What a user sees as the application: the DPI's name, else `tcp/8080`, `icmp`, ..."""
    if app:
        return app
    if proto in (PROTO_TCP, PROTO_UDP):
        return f"{proto_name(proto)}/{server_port}"
    return proto_name(proto)


@dataclass(slots=True)
class NamedFlow:
    """A finished flow with both ends resolved to identities."""

    flow: Flow
    client: Endpoint
    server: Endpoint
    source: str

    @property
    def app(self) -> str | None:
        return self.flow.app

    @property
    def label(self) -> str:
        return app_label(self.flow.app, self.flow.proto, self.flow.server_port)

    def observation(self) -> Observation:
        port = self.flow.server_port if self.flow.proto not in (PROTO_ICMP, PROTO_ICMPV6) else 0
        dpi = self.flow.dpi
        requests = requests_of(dpi.requests, dpi.requests_truncated) if dpi is not None else ()
        name = self.flow.server_name or server_name_of(requests)
        return Observation(self.client, self.server, self.flow.proto, port, self.flow.app, requests, name)

    def to_dict(self) -> dict[str, object]:
        f = self.flow
        return {
            "source": self.source,
            "client_ip": self.client.ip,
            "client_port": f.client_port,
            "server_ip": self.server.ip,
            "server_port": f.server_port,
            "ip_proto": f.proto,
            "transport": proto_name(f.proto),
            "application": self.label,
            "server_name": f.server_name,
            "client_group": self.client.group,
            "server_group": self.server.group,
            "packets": f.packets_total,
            "bytes": f.bytes_total,
            "packets_c2s": f.packets[0],
            "packets_s2c": f.packets[1],
            "bytes_c2s": f.bytes[0],
            "bytes_s2c": f.bytes[1],
            "first_seen": f.first_ts,
            "last_seen": f.last_ts,
            "end_reason": f.end_reason,
            "role_by": f.role_by,
            "dpi_error": f.dpi.error if f.dpi is not None else None,
            "overlap_conflict": f.overlap_conflict,
        }


ProgressFn = Callable[[int], None]


class FrameEngine(Protocol):
    """What `read_flows` drives: the datapath engine, or one with inspectors attached."""

    def feed(self, frame: Frame) -> list[Flow]: ...

    def finish(self) -> list[Flow]: ...


def read_flows(
    paths: Sequence[str | Path],
    resolver: Resolver,
    *,
    limits: Limits = DEFAULT_LIMITS,
    on_problem: Callable[[Problem], None] | None = None,
    progress: ProgressFn | None = None,
    dpi: bool = True,
    depth: str = FULL,
    make_engine: Callable[[str], FrameEngine] | None = None,
    after_frame: Callable[[FrameEngine, str], None] | None = None,
) -> Iterator[NamedFlow]:
    """Yield every flow of every capture, named. `progress(n)` is told of each n bytes read.

    `depth` is how far the DPI parses each flow: `full` when L7 rules will judge the flows'
    requests, `detect` when only the application and server name are needed (see
    `podwall.dpi.session`; a flow cut short has `requests_truncated` set). `make_engine(source)`
    replaces the plain engine (each capture gets its own); `after_frame(engine, source)` runs
    after every frame and once more after the capture's last flows.
    """
    for path in paths:
        source = str(path)
        if make_engine is not None:
            engine = make_engine(source)
        else:
            engine = Engine(limits, dpi=dpi, dpi_depth=depth, on_problem=on_problem, source=source)
        with CaptureReader(path, on_problem=on_problem) as reader:
            done = 0
            for frame in reader:
                for flow in engine.feed(frame):
                    yield name_flow(flow, resolver, source)
                if after_frame is not None:
                    after_frame(engine, source)
                if progress is not None and reader.bytes_read - done >= 1 << 16:
                    progress(reader.bytes_read - done)
                    done = reader.bytes_read
            if progress is not None:
                progress(reader.bytes_read - done)
        for flow in engine.finish():
            yield name_flow(flow, resolver, source)
        if after_frame is not None:
            after_frame(engine, source)


def name_flow(flow: Flow, resolver: Resolver, source: str) -> NamedFlow:
    """A finished flow with both ends resolved."""
    client = resolver.resolve(ip_text(flow.client_ip), flow.client_port)
    server = resolver.resolve(ip_text(flow.server_ip), flow.server_port)
    return NamedFlow(flow, client, server, source)
