"""The NFQUEUE worker on synthetic packets and a fake queue: verdicts, marks, events, resets, reloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from podwall.core.events import EventType
from podwall.core.types import TCP_RST, ip_packed
from podwall.datapath.decode import LINKTYPE_RAW, Decoder
from podwall.datapath.io.nfqueue import NF_ACCEPT, NF_DROP, NF_REPEAT, QueueMessage
from podwall.datapath.io.pcap import Frame
from podwall.enforce.reset import _checksum, build_rst
from podwall.enforce.worker import Decision, Worker, WorkerConfig
from podwall.inventory.loader import parse_inventory_text
from podwall.inventory.resolver import Resolver
from podwall.lab import payloads as p
from podwall.lab.synth import TcpConversation
from podwall.store.events import EventStore
from tests.unit.enforce.worker_testkit import (
    ADDRS,
    ALLOW_MARK,
    DENY_MARK,
    HOOK_FORWARD,
    INVENTORY,
    FakeQueue,
    Rig,
    policy_for,
)


def _conv(family: int = 4, sport: int = 6379, cport: int = 40001) -> TcpConversation:
    client, server = ADDRS[family] if sport == 6379 else ("10.1.0.1", "10.1.0.5")
    return TcpConversation(client, cport, server, sport, 1.0)


ACCEPT: Decision = (NF_ACCEPT, None)
ALLOW: Decision = (NF_REPEAT, ALLOW_MARK)
DENY: Decision = (NF_REPEAT, DENY_MARK)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_handshake_is_undecided_then_first_payload_allows(family: int) -> None:
    """The handshake passes without a mark; the first Redis payload gets the allow mark, sticky after."""
    rig = Rig("protect")
    conv = _conv(family)
    assert rig.decide(conv.frames) == [ACCEPT, ACCEPT, ACCEPT]
    conv.frames.clear()
    conv.send(True, p.resp_command("PING")).send(False, b"+PONG\r\n")
    assert rig.decide(conv.frames) == [ALLOW, ALLOW, ALLOW, ALLOW]
    assert rig.events == [] and rig.resets == []
    assert rig.worker.stats["sticky"] == 3


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_denied_in_protect_marks_deny_resets_server_and_records(family: int) -> None:
    """HTTP to the Redis port in protect: the first payload gets the deny mark, the server a reset, an event."""
    rig = Rig("protect")
    conv = _conv(family)
    rig.decide(conv.frames)
    conv.frames.clear()
    conv.send(True, p.http_request("GET", "/", "cache"))
    decisions = rig.decide(conv.frames[:1])
    assert decisions == [DENY]
    assert rig.decide(conv.frames[1:]) == [DENY]  # sticky
    rig.worker.handle(FakeQueue(), [])  # flush resets and events
    client, server = ADDRS[family]
    assert len(rig.resets) == 1
    target = rig.resets[0]
    assert (target.client_port, target.server_port) == (40001, 6379)
    assert len(target.server_ip) == (4 if family == 4 else 16)
    assert target.seq == conv.isn_c + 1  # the server's last ACK: the SYN-ACK's
    assert len(rig.events) == 1
    event = rig.events[0]
    assert event.type is EventType.VIOLATION
    assert event.verdict is not None and event.verdict.action == "deny"
    assert (event.client.group, event.server.group, event.application) == ("nv.web.shop", "nv.cache.shop", "http")
    assert (event.client.ip, event.server.ip) == (client, server)


def test_monitor_violation_passes_with_allow_mark_and_event() -> None:
    """In monitor mode the same violation gets the allow mark (fast path), no reset, and an alert event."""
    rig = Rig("monitor")
    conv = _conv()
    conv.send(True, p.http_request("GET", "/", "cache"))
    decisions = rig.decide(conv.frames)
    assert decisions[:3] == [ACCEPT] * 3
    assert decisions[3:] == [ALLOW, ALLOW]
    rig.worker.handle(FakeQueue(), [])
    assert rig.resets == []
    assert [e.verdict.action for e in rig.events if e.verdict] == ["alert"]


def test_take_events_without_sink() -> None:
    """Without a sink, violation events wait in the worker until taken."""
    inventory = parse_inventory_text(INVENTORY, "inv.yaml").inventory
    worker = Worker(policy_for("monitor"), Resolver(inventory), WorkerConfig(ALLOW_MARK, DENY_MARK))
    conv = _conv()
    conv.send(True, p.http_request("GET", "/", "cache"))
    rig = Rig()
    for msg in rig.messages(conv.frames):
        worker.decide(msg)
    taken = worker.take_events()
    assert [e.verdict.action for e in taken if e.verdict] == ["alert"]
    assert worker.take_events() == []


def test_undecided_payload_is_accepted_without_mark() -> None:
    """A first payload the DPI cannot decide yet passes unmarked, so the next packet comes back."""
    rig = Rig("protect")
    conv = _conv()
    conv.send(True, b"*")  # the start of a RESP array: Redis or not is still open
    decisions = rig.decide(conv.frames)
    assert decisions == [ACCEPT] * len(decisions)
    assert rig.worker.stats["undecided"] == len(decisions)


@pytest.mark.parametrize(
    ("mode", "second"),
    [("protect", DENY), ("monitor", ACCEPT)],
    ids=["protect-cuts", "monitor-records"],
)
def test_l7_per_request_connection_stays_in_userspace(mode: str, second: Decision) -> None:
    """With an l7 rule, allowed requests pass unmarked; a refused one denies (protect) or is recorded (monitor)."""
    rig = Rig(mode)
    conv = _conv(sport=8080)
    rig.decide(conv.frames)
    conv.frames.clear()
    conv.send(True, p.http_request("GET", "/a", "api")).send(False, p.http_response(200, b"ok"))
    assert rig.decide(conv.frames) == [ACCEPT] * 4  # never the final allow mark
    conv.frames.clear()
    conv.send(True, p.http_request("POST", "/b", "api"))
    assert rig.decide(conv.frames[:1]) == [second]
    rig.worker.handle(FakeQueue(), [])
    assert len(rig.events) == 1
    assert rig.events[0].l7["requests"] == ["HTTP POST /b (host api)"]
    assert len(rig.resets) == (1 if mode == "protect" else 0)
    assert rig.worker.stats["per_request"] >= 5


def test_reload_re_evaluates_sticky_verdicts() -> None:
    """After a reload that removes the Redis rule, the allowed connection's next packet is denied."""
    rig = Rig("protect")
    conv = _conv()
    conv.send(True, p.resp_command("PING"))
    assert rig.decide(conv.frames)[-1] == ALLOW
    assert rig.worker.reload(policy_for("protect", redis_rule=False)) == 2
    conv.frames.clear()
    conv.send(True, p.resp_command("GET", "k"))
    assert rig.decide(conv.frames[:1]) == [DENY]


def test_reload_keeps_allowed_connection_allowed() -> None:
    """A reload with the same rules keeps the established connection on the allow mark."""
    rig = Rig("protect")
    conv = _conv()
    conv.send(True, p.resp_command("PING"))
    rig.decide(conv.frames)
    rig.worker.reload(policy_for("protect"))
    conv.frames.clear()
    conv.send(False, b"+PONG\r\n")
    assert rig.decide(conv.frames) == [ALLOW, ALLOW]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x45\x00", b"\x99" * 40, bytes.fromhex("4500001c00000000400600000a0100010a010009") + b"\x00" * 4],
    ids=["empty", "short-ipv4", "bad-version", "tcp-header-cut"],
)
def test_undecodable_packet_is_dropped(payload: bytes) -> None:
    """A queued packet that is not a decodable IP packet is dropped (fail closed), without raising."""
    rig = Rig("protect")
    assert rig.worker.decide(QueueMessage(1, 0x0800, HOOK_FORWARD, payload)) == (NF_DROP, None)
    assert rig.worker.stats["undecodable"] == 1


def test_handle_batches_consecutive_identical_verdicts() -> None:
    """A run of consecutive ids with one verdict after the last verdicted id goes out as one batch verdict."""
    rig = Rig("protect")
    queue = FakeQueue()
    conv = _conv()
    first = rig.messages(conv.frames)  # ids 1-3, handshake: accept
    rig.worker.handle(queue, first)
    assert queue.sent == [("one", 1, NF_ACCEPT, None), ("batch", 3, NF_ACCEPT, None)]
    conv.frames.clear()
    conv.send(True, p.resp_command("PING")).send(False, b"+PONG\r\n")
    queue.sent.clear()
    rig.worker.handle(queue, rig.messages(conv.frames))  # ids 4-7: allow mark
    assert queue.sent == [("batch", 7, NF_REPEAT, ALLOW_MARK)]


def test_handle_does_not_batch_across_an_id_gap() -> None:
    """Ids that skip a number get one verdict each: a batch could cover a packet never judged."""
    rig = Rig("protect")
    queue = FakeQueue()
    conv = _conv()
    conv.send(True, p.resp_command("PING"))
    msgs = rig.messages(conv.frames)  # ids 1-5
    msgs[4].packet_id = 9  # ids 6-8 never reached us
    rig.worker.handle(queue, msgs[:3])
    queue.sent.clear()
    rig.worker.handle(queue, msgs[3:])
    assert queue.sent == [("one", 4, NF_REPEAT, ALLOW_MARK), ("one", 9, NF_REPEAT, ALLOW_MARK)]


def test_handle_without_batching_sends_one_verdict_per_packet() -> None:
    """With batching off, every packet gets its own verdict message."""
    rig = Rig("protect", batch=False)
    queue = FakeQueue()
    rig.worker.handle(queue, rig.messages(_conv().frames))
    assert [s[0] for s in queue.sent] == ["one"] * 3


def test_events_reach_the_event_store(tmp_path: Path) -> None:
    """A protect-mode denial is stored in the event store with the offline check's schema."""
    with EventStore(str(tmp_path / "events.db")) as store:
        rig = Rig("protect", store=store)
        conv = _conv()
        conv.send(True, p.http_request("GET", "/", "cache"))
        rig.worker.handle(FakeQueue(), rig.messages(conv.frames))
        stored = store.query(type="violation")
    assert len(stored) == 1
    assert stored[0].verdict is not None and stored[0].verdict.rule_id == 0


def test_run_loop_stops_and_verdicts_everything() -> None:
    """`run` drains the queue until told to stop, giving every packet a verdict."""
    import threading

    rig = Rig("protect")
    queue = FakeQueue()
    queue.inbox.append(rig.messages(_conv().frames))
    stop = threading.Event()

    def recv(timeout: float | None = None, max_messages: int = 64, spin: float = 0.0) -> list[QueueMessage]:
        if not queue.inbox:
            stop.set()
            return []
        return queue.inbox.pop(0)

    queue.recv = recv  # type: ignore[method-assign]
    rig.worker.run(queue, stop, timeout=0.01)
    assert sum(1 if kind == "one" else 2 for kind, *_ in queue.sent) == 3


def test_config_rejects_bad_marks() -> None:
    """Marks must be non-zero 32-bit values and differ from each other."""
    for allow, deny in ((0, 1), (1, 1), (1, 1 << 32)):
        with pytest.raises(ValueError):
            WorkerConfig(allow, deny)


@pytest.mark.parametrize(("src", "dst"), [("10.1.0.1", "10.1.0.9"), ("fd00::1", "fd00::9")], ids=["ipv4", "ipv6"])
def test_build_rst_is_a_valid_reset_from_the_client(src: str, dst: str) -> None:
    """The crafted reset decodes as a TCP RST from the client's address and port with the given sequence."""
    data = build_rst(ip_packed(src), ip_packed(dst), 40001, 6379, 0xFFFFFFF0)
    pkt = Decoder().decode(Frame(1, 0.0, LINKTYPE_RAW, data, len(data)))
    assert pkt is not None
    assert (pkt.src, pkt.dst, pkt.sport, pkt.dport) == (ip_packed(src), ip_packed(dst), 40001, 6379)
    assert (pkt.tcp_flags, pkt.seq, pkt.payload) == (TCP_RST, 0xFFFFFFF0, b"")
    tcp = data[20:] if ":" not in src else data[40:]
    if ":" in src:
        pseudo = ip_packed(src) + ip_packed(dst) + len(tcp).to_bytes(4, "big") + b"\0\0\0\x06"
    else:
        pseudo = ip_packed(src) + ip_packed(dst) + b"\0\x06" + len(tcp).to_bytes(2, "big")
        assert _checksum(data[:20]) == 0  # the IPv4 header checksum holds
    assert _checksum(pseudo + tcp) == 0  # the TCP checksum holds


def test_build_rst_rejects_mixed_families() -> None:
    """An IPv4 source with an IPv6 destination is refused."""
    with pytest.raises(ValueError):
        build_rst(ip_packed("10.0.0.1"), ip_packed("fd00::1"), 1, 2, 3)
