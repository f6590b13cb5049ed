"""The NFQUEUE worker as podwall's queue rules feed it: only payload packets, flagged by the kernel
(queued, first of their connection, reply direction), decided connections freed from the flow
table and answered from a record, verdict marks that keep other software's mark bits."""

from __future__ import annotations

from typing import Any

import pytest

from podwall.datapath.io.nfqueue import NF_ACCEPT, NF_REPEAT
from podwall.enforce.plan import MARK_ALLOW, MARK_DENY, PKT_FIRST, PKT_QUEUED, PKT_REPLY
from podwall.enforce.worker import Decision, WorkerConfig
from podwall.lab import payloads as p
from podwall.lab.synth import TcpConversation
from podwall.policy.model import Policy
from tests.unit.enforce.worker_testkit import FakeQueue, Rig

CLIENT, SERVER = "10.1.0.1", "10.1.0.9"
FIRST = PKT_QUEUED | PKT_FIRST
LATER = PKT_QUEUED
ACCEPT: Decision = (NF_ACCEPT, None)
ALLOW: Decision = (NF_REPEAT, MARK_ALLOW)
DENY: Decision = (NF_REPEAT, MARK_DENY)


def _policy(port: int, *, mode: str = "protect", allow: bool = True) -> Policy:
    groups = [
        {"name": f"nv.{s}.shop", "criteria": [{"key": "service", "op": "=", "value": s}], "mode": mode}
        for s in ("web", "cache")
    ]
    rules: list[dict[str, Any]] = []
    if allow:
        rules.append(
            {"id": 1, "from": "nv.web.shop", "to": "nv.cache.shop", "ports": [f"tcp/{port}"], "applications": ["redis"]}
        )
    return Policy.model_validate(
        {"metadata": {"name": "k"}, "spec": {"defaultMode": mode, "groups": groups, "rules": rules}}
    )


def _rig(port: int = 6379, **kw: Any) -> Rig:
    rig = Rig(config=WorkerConfig.podwall())
    rig.worker.reload(_policy(port, **kw))
    return rig


def _payload_only(conv: TcpConversation) -> list[tuple[float, bytes]]:
    """The frames podwall's rules queue: those with TCP payload (IPv4, 20-byte TCP headers here)."""
    return [f for f in conv.frames if len(f[1]) > 14 + 20 + 20]


def _conv(cport: int = 40001, sport: int = 6379, isn_c: int = 1000) -> TcpConversation:
    return TcpConversation(CLIENT, cport, SERVER, sport, 1.0, isn_c=isn_c)


def test_first_payload_without_handshake_is_decided_and_the_flow_freed() -> None:
    """The first payload alone decides: allowed, the flow table emptied, later packets answered by record."""
    rig = _rig()
    conv = _conv().send(True, p.resp_command("PING")).send(False, b"+PONG\r\n")
    first, reply = _payload_only(conv)
    assert rig.decide([first], FIRST) == [ALLOW]
    assert len(rig.worker.table) == 0
    assert rig.decide([reply], LATER | PKT_REPLY) == [ALLOW]  # queued before the verdict was saved
    assert rig.worker.stats["sticky"] == 1 and rig.worker.stats["new_connections"] == 1


def test_reply_flag_names_the_server_where_ports_would_not() -> None:
    """A server on a high port with a client on a low one: the kernel's direction flags, not the
    ports, decide which end is the server, so the allow rule for the server port applies."""
    rig = _rig(port=40002)
    conv = _conv(cport=30001, sport=40002).send(True, p.resp_command("PING"))
    assert rig.decide(_payload_only(conv), FIRST) == [ALLOW]


def test_server_speaking_first_is_the_server() -> None:
    """When the server's greeting is the first queued packet (reply flag), the flow still has the
    client as client, with its stream starting where the server's acknowledgement says."""
    rig = _rig(port=40002)
    conv = _conv(cport=30001, sport=40002).send(False, b"220 mail.example ESMTP ready\r\n")
    rig.decide(_payload_only(conv), FIRST | PKT_REPLY)
    flow = rig.worker.table.last_flow
    assert flow is not None and (flow.client_port, flow.server_port) == (30001, 40002)
    assert flow.role_by == "syn"


def test_a_reused_address_pair_is_a_new_connection() -> None:
    """A new connection on the same addresses and ports (first flag) is judged afresh: HTTP after an
    allowed Redis connection is denied instead of inheriting the old allow."""
    rig = _rig()
    old = _conv().send(True, p.resp_command("PING"))
    assert rig.decide(_payload_only(old), FIRST) == [ALLOW]
    new = _conv(isn_c=900_000).send(True, p.http_request("GET", "/", "cache"))
    assert rig.decide(_payload_only(new), FIRST) == [DENY]
    rig.worker.handle(FakeQueue(), [])
    assert len(rig.events) == 1 and len(rig.resets) == 1
    assert rig.resets[0].seq == 900_001  # the dropped packet's own sequence number


def test_without_the_first_flag_the_pair_keeps_its_verdict() -> None:
    """A later packet of a decided connection (no first flag) gets the recorded verdict, not a new look."""
    rig = _rig()
    conv = _conv().send(True, p.resp_command("PING")).send(True, p.http_request("GET", "/", "cache"))
    first, second = _payload_only(conv)
    assert rig.decide([first], FIRST) == [ALLOW]
    assert rig.decide([second], LATER) == [ALLOW]


def test_verdict_marks_keep_other_bits_of_the_packet_mark() -> None:
    """Only podwall's bits of the mark change: a kube-proxy bit on the packet survives the verdict."""
    rig = _rig()
    conv = _conv().send(True, p.resp_command("PING"))
    assert rig.decide(_payload_only(conv), FIRST | 0x4000) == [(NF_REPEAT, MARK_ALLOW | 0x4000)]


def test_repeat_connections_between_the_same_ends_use_the_cached_verdict() -> None:
    """A second connection between the same ends and application is decided without a new evaluation."""
    rig = _rig()
    for port in (40001, 40002, 40003):
        conv = _conv(cport=port).send(True, p.resp_command("PING"))
        assert rig.decide(_payload_only(conv), FIRST) == [ALLOW]
    assert rig.worker.stats["cached_verdicts"] == 2
    assert len(rig.worker.table) == 0


@pytest.mark.parametrize(("allow", "expected"), [(True, ALLOW), (False, DENY)], ids=["still-allowed", "now-denied"])
def test_after_a_reload_a_requeued_connection_is_judged_by_its_recorded_application(
    allow: bool, expected: Decision
) -> None:
    """After a policy change, the next payload of a decided (and freed) connection is judged again
    with the application the worker recorded, even though its bytes alone would not name it."""
    rig = _rig()
    conv = _conv().send(True, p.resp_command("PING"))
    assert rig.decide(_payload_only(conv), FIRST) == [ALLOW]
    rig.worker.reload(_policy(6379, allow=allow))
    conv.frames.clear()
    conv.send(True, b"$4\r\nbody\r\n")  # the middle of a Redis stream: no detector names it
    assert rig.decide(conv.frames[:1], LATER) == [expected]
    rig.worker.handle(FakeQueue(), [])
    assert len(rig.resets) == (0 if allow else 1)
    assert [e.application for e in rig.events] == ([] if allow else ["redis"])


def test_undecided_payload_stays_in_the_table_until_decided() -> None:
    """A payload too short to name keeps its flow; the next one decides and frees it."""
    rig = _rig()
    conv = _conv().send(True, b"*1\r\n").send(True, b"$4\r\nPING\r\n")
    first, second = _payload_only(conv)
    assert rig.decide([first], FIRST) == [ACCEPT]
    assert len(rig.worker.table) == 1
    assert rig.decide([second], LATER) == [ALLOW]
    assert len(rig.worker.table) == 0


def test_without_flags_a_new_syn_on_a_decided_pair_starts_over() -> None:
    """Where rules queue handshakes and set no flags, a SYN on a pair whose earlier connection was
    decided (and freed) is a new connection all the same: its HTTP is denied, not waved through."""
    rig = _rig()
    old = _conv().send(True, p.resp_command("PING"))
    assert rig.decide(old.frames)[-1] == ALLOW
    new = _conv(isn_c=700_000).send(True, p.http_request("GET", "/", "cache"))
    decisions = rig.decide(new.frames)
    assert decisions[:3] == [ACCEPT] * 3 and decisions[3] == DENY
