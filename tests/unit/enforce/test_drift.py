"""Protocol drift after a verdict: detection on synthetic flows, re-judgement, and the cut's commands."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from podwall.core.types import PROTO_TCP, Direction, ip_packed
from podwall.datapath.decode import LINKTYPE_ETHERNET
from podwall.datapath.io.pcap import Frame
from podwall.dpi import registry
from podwall.dpi.base import DetectContext
from podwall.enforce.drift import (
    DriftCutter,
    DriftFinding,
    DriftSession,
    DriftWatcher,
    other_application,
    reply_source,
)
from podwall.enforce.plan import MARK_DENY, MARK_MASK
from podwall.enforce.reset import ResetTarget
from podwall.inventory.loader import parse_inventory_text
from podwall.inventory.resolver import Resolver
from podwall.lab import payloads as p
from podwall.lab.synth import TcpConversation
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy

INVENTORY = """
apiVersion: podwall.io/v1
kind: Inventory
cluster: t
workloads:
  - {name: web, namespace: shop, kind: Deployment, labels: {app: web}, pods: [{name: web-1, ips: [10.1.0.1]}]}
  - {name: cache, namespace: shop, kind: Deployment, labels: {app: cache}, pods: [{name: cache-0, ips: [10.1.0.9]}]}
  - {name: api, namespace: shop, kind: Deployment, labels: {app: api}, pods: [{name: api-1, ips: [10.1.0.5]}]}
"""
WEB, CACHE, API = "10.1.0.1", "10.1.0.9", "10.1.0.5"


def _watcher(mode: str = "protect", redis_apps: Sequence[str] = ("redis",)) -> DriftWatcher:
    groups = [
        {"name": f"nv.{s}.shop", "criteria": [{"key": "service", "op": "=", "value": s}], "mode": mode}
        for s in ("web", "cache", "api")
    ]
    rules: list[dict[str, Any]] = [
        {
            "id": 1,
            "from": "nv.web.shop",
            "to": "nv.cache.shop",
            "ports": ["tcp/6379"],
            "applications": list(redis_apps),
        },
        {"id": 2, "from": "nv.web.shop", "to": "nv.api.shop", "ports": ["tcp/443"], "applications": ["tls"]},
    ]
    policy = Policy.model_validate(
        {"metadata": {"name": "t"}, "spec": {"defaultMode": mode, "groups": groups, "rules": rules}}
    )
    inventory = parse_inventory_text(INVENTORY, "inv.yaml").inventory
    return DriftWatcher(PolicyEngine(policy), Resolver(inventory), source="drift-test")


def _frames(conv: TcpConversation) -> list[Frame]:
    return [Frame(i, ts, LINKTYPE_ETHERNET, data, len(data)) for i, (ts, data) in enumerate(conv.frames, 1)]


def _redis_then(*turns: tuple[bytes, bytes]) -> TcpConversation:
    conv = TcpConversation(WEB, 40001, CACHE, 6379, 1.0)
    conv.send(True, b"PING\r\n").send(False, b"+PONG\r\n")
    for request, reply in turns:
        conv.send(True, request)
        if reply:
            conv.send(False, reply)
    return conv


REDIS_MORE = (
    (p.resp_command("SET", "k", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), b"+OK\r\n"),
    (p.resp_command("GET", "k"), b"$27\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n"),
    (b"INFO\r\n", b"$2\r\nok\r\n"),
)


def test_redis_then_http_on_the_same_connection_is_drift_and_cut_in_protect() -> None:
    """PING then an HTTP request on one redis connection drifts to http, is denied, cut and recorded."""
    watcher = _watcher()
    conv = _redis_then((b"GET / HTTP/1.0\r\n\r\n", b""))
    findings = watcher.feed(_frames(conv))
    assert len(findings) == 1
    f = findings[0]
    assert (f.drift.old_app, f.drift.new_app) == ("redis", "http")
    assert f.cut and f.verdict.action == "deny"
    assert f.event is not None and f.event.application == "http"
    assert "application changed from redis to http" in f.event.message
    target = f.reset_target
    assert target is not None
    assert (target.seq, target.client_seq) == (conv.seq_c, conv.seq_s)
    assert (target.client_ip, target.server_port) == (ip_packed(WEB), 6379)


@pytest.mark.parametrize("turns", [REDIS_MORE, ()], ids=["commands-values-and-inline", "ping-only"])
def test_redis_then_more_redis_is_no_drift(turns: tuple[tuple[bytes, bytes], ...]) -> None:
    """Further redis commands (even a value that holds an HTTP request) never count as drift."""
    watcher = _watcher()
    assert watcher.feed(_frames(_redis_then(*turns))) == []
    assert watcher.stats.drifts == 0


def test_tls_then_garbage_is_unparseable_and_judged_as_unknown() -> None:
    """A TLS connection whose next bytes break the parser, with no protocol recognised, is judged as app unknown."""
    watcher = _watcher()
    conv = TcpConversation(WEB, 40002, API, 443, 1.0)
    conv.send(True, p.tls_client_hello("api.example", ["h2"])).send(False, b"\x00\xff" * 20)
    findings = watcher.feed(_frames(conv))
    assert len(findings) == 1
    f = findings[0]
    assert (f.drift.old_app, f.drift.new_app) == ("tls", None)
    assert f.drift.reason.startswith("unparseable after verdict")
    assert f.cut  # the rule admits tls only: an unknown application is not admitted
    assert f.event is not None and "from tls to unknown" in f.event.message


def test_monitor_mode_records_without_cutting() -> None:
    """In monitor mode the drifted connection is recorded as a violation but not cut."""
    findings = _watcher("monitor").feed(_frames(_redis_then((b"GET / HTTP/1.0\r\n\r\n", b""))))
    assert len(findings) == 1
    assert not findings[0].cut
    event = findings[0].event
    assert event is not None and event.verdict is not None and event.verdict.action == "alert"


def test_drift_to_an_allowed_application_is_neither_cut_nor_recorded() -> None:
    """When the policy admits the new application too, the drift is found but nothing is done."""
    findings = _watcher(redis_apps=("redis", "http")).feed(_frames(_redis_then((b"GET / HTTP/1.0\r\n\r\n", b""))))
    assert len(findings) == 1
    assert not findings[0].cut and findings[0].event is None


def test_each_drifted_connection_is_reported_once() -> None:
    """A connection that keeps sending the new protocol across batches is reported once."""
    watcher = _watcher()
    conv = _redis_then((b"GET / HTTP/1.0\r\n\r\n", b"-ERR\r\n"))
    first = watcher.feed(_frames(conv))
    n = len(conv.frames)
    conv.send(True, b"GET /again HTTP/1.0\r\n\r\n")
    later = watcher.feed(_frames(conv)[n:])
    assert (len(first), len(later)) == (1, 0)


@pytest.mark.parametrize(
    ("app", "port", "data", "expected"),
    [
        ("redis", 6379, b"GET / HTTP/1.0\r\n\r\n", "http"),
        ("redis", 6379, b"SSH-2.0-OpenSSH_9.2\r\n", "ssh"),
        ("redis", 6379, p.resp_command("GET", "k"), None),
        ("redis", 6379, b"PING\r\n", None),
        ("redis", 6379, b"\x16\x03", None),
        ("smtp", 25, p.tls_client_hello("mail.example", []), None),
        ("redis", 6379, p.tls_client_hello("x.example", []), "tls"),
    ],
    ids=["http", "ssh", "resp", "inline", "too-short", "starttls-upgrade", "tls-on-redis"],
)
def test_other_application(app: str, port: int, data: bytes, expected: str | None) -> None:
    """A turn's bytes name another application only when it matches and the decided one does not."""
    ctx = DetectContext(PROTO_TCP, 40000, port)
    assert other_application(app, data, ctx, registry.detectors()) == expected


def test_turns_are_looked_at_not_continuation_segments() -> None:
    """Client bytes inside a turn (no server bytes since the last look) are not checked for drift."""
    s = DriftSession(DetectContext(PROTO_TCP, 40000, 6379))
    s.on_stream(Direction.C2S, b"PING\r\n")
    s.on_stream(Direction.C2S, b"SET k ")
    s.on_stream(Direction.C2S, b"GET / HTTP/1.0\r\n")  # the same turn: the rest of the SET line
    assert s.app == "redis" and s.drift is None
    s.on_stream(Direction.S2C, b"+OK\r\n")
    s.on_stream(Direction.C2S, b"GET / HTTP/1.0\r\n\r\n")
    assert s.drift is not None and s.drift.new_app == "http"


def _finding(watcher: DriftWatcher) -> DriftFinding:
    return watcher.feed(_frames(_redis_then((b"GET / HTTP/1.0\r\n\r\n", b""))))[0]


@pytest.mark.parametrize(("update_rc", "expect_delete"), [(0, False), (1, True)], ids=["re-marked", "deleted"])
def test_cutter_marks_deny_or_deletes_then_resets_both_ends(update_rc: int, expect_delete: bool) -> None:
    """The cut re-marks the conntrack entry deny (else deletes it by reply tuple) and sends the resets."""
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], _stdin: str | None) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), update_rc if "-U" in argv else 0, "", "")

    resets: list[ResetTarget] = []
    finding = _finding(_watcher())
    assert DriftCutter(None, resets.append, runner)(finding)
    assert calls[0][:2] == ["conntrack", "-U"] and f"{MARK_DENY:#x}/{MARK_MASK:#x}" in calls[0]
    assert [calls[0][calls[0].index("-s") + 1], calls[0][calls[0].index("--sport") + 1]] == ["10.1.0.1", "40001"]
    assert (len(calls) == 2 and calls[1][:2] == ["conntrack", "-D"]) is expect_delete
    assert resets == [finding.reset_target]


_V4 = (
    "tcp      6 431999 ESTABLISHED src=10.244.0.3 dst=10.96.0.60 sport=53052 dport=6379 "
    "src=10.244.0.7 dst=10.244.0.3 sport=6379 dport=53052 [ASSURED] mark=0 use=1"
)
_V6 = (
    "tcp      6 431999 ESTABLISHED src=fd00::3 dst=fd00:96::60 sport=40000 dport=6379 "
    "src=fd00::7 dst=fd00::3 sport=6380 dport=40000 mark=0 use=1"
)


@pytest.mark.parametrize(
    ("listing", "size", "expected"),
    [
        (_V4, 4, (socket.inet_pton(socket.AF_INET, "10.244.0.7"), 6379)),
        (_V6, 16, (socket.inet_pton(socket.AF_INET6, "fd00::7"), 6380)),
        ("conntrack v1.4.7: 0 flow entries have been shown.\n", 4, None),
        (_V4, 16, None),
    ],
    ids=["ipv4", "ipv6", "empty", "wrong-family"],
)
def test_reply_source_reads_the_backend_from_a_listing(listing: str, size: int, expected: object) -> None:
    """The reply tuple's source of a `conntrack -L` line is the backend a Service connected to."""
    assert reply_source(listing, size) == expected
