"""ICMP and ICMPv6 events: type, code and type name for both families."""

from __future__ import annotations

import pytest

from podwall.core.types import PROTO_ICMP, PROTO_ICMPV6, Direction
from podwall.dpi.protocols.icmp import icmp_event


@pytest.mark.parametrize(
    ("proto", "icmp_type", "code", "app", "name"),
    [
        pytest.param(PROTO_ICMP, 8, 0, "icmp", "echo-request", id="v4-echo-request"),
        pytest.param(PROTO_ICMP, 0, 0, "icmp", "echo-reply", id="v4-echo-reply"),
        pytest.param(PROTO_ICMP, 3, 3, "icmp", "dest-unreachable", id="v4-port-unreachable"),
        pytest.param(PROTO_ICMP, 11, 0, "icmp", "time-exceeded", id="v4-time-exceeded"),
        pytest.param(PROTO_ICMPV6, 128, 0, "icmpv6", "echo-request", id="v6-echo-request"),
        pytest.param(PROTO_ICMPV6, 129, 0, "icmpv6", "echo-reply", id="v6-echo-reply"),
        pytest.param(PROTO_ICMPV6, 1, 4, "icmpv6", "dest-unreachable", id="v6-port-unreachable"),
        pytest.param(PROTO_ICMPV6, 3, 0, "icmpv6", "time-exceeded", id="v6-time-exceeded"),
        pytest.param(PROTO_ICMPV6, 135, 0, "icmpv6", "neighbor-solicitation", id="v6-ns"),
        pytest.param(PROTO_ICMP, 200, 7, "icmp", "type-200", id="unknown-type"),
    ],
)
def test_icmp_event(proto: int, icmp_type: int, code: int, app: str, name: str) -> None:
    """The event names the family as app and carries type, code and the type's name."""
    event = icmp_event(proto, icmp_type, code, Direction.S2C)
    assert (event.app, event.kind, event.direction) == (app, "message", Direction.S2C)
    assert event.fields == {"type": icmp_type, "code": code, "type_name": name}
