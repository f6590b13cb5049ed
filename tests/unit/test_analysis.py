"""The analysis layer: application labels, conversation aggregation, grouped verdicts and events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podwall.analysis.check import check, dns_service_groups, learn_policy, violation_events
from podwall.analysis.conversations import aggregate
from podwall.analysis.runner import app_label, read_flows
from podwall.core.events import EventType
from podwall.core.types import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from podwall.datapath.io.pcapwriter import PcapWriter
from podwall.inventory.loader import load_inventory
from podwall.inventory.resolver import Resolver
from podwall.lab import payloads as p
from podwall.lab.synth import tcp_exchange, udp_exchange
from podwall.policy.evaluate import PolicyEngine

INVENTORY = """
apiVersion: podwall.io/v1
kind: Inventory
cluster: t
workloads:
  - {name: web, namespace: shop, kind: Deployment, labels: {app: web},
     pods: [{name: web-1, ips: [10.1.0.1]}, {name: web-2, ips: [10.1.0.2]}]}
  - {name: cache, namespace: shop, kind: StatefulSet, labels: {app: cache}, pods: [{name: cache-0, ips: [10.1.0.9]}]}
  - {name: coredns, namespace: kube-system, kind: Deployment, labels: {k8s-app: kube-dns},
     pods: [{name: coredns-1, ips: [10.1.0.53]}]}
services:
  - {name: kube-dns, namespace: kube-system, selector: {k8s-app: kube-dns}, clusterIPs: [10.96.0.10]}
"""


@pytest.mark.parametrize(
    ("app", "proto", "port", "label"),
    [
        ("redis", PROTO_TCP, 8080, "redis"),
        (None, PROTO_TCP, 8080, "tcp/8080"),
        (None, PROTO_UDP, 5000, "udp/5000"),
        (None, PROTO_ICMP, 0, "icmp"),
        (None, 50, 0, "ip-50"),
    ],
    ids=["identified", "unknown-tcp", "unknown-udp", "icmp", "esp"],
)
def test_app_label(app: str | None, proto: int, port: int, label: str) -> None:
    """An identified flow shows its DPI name; an unknown TCP/UDP flow is shown by its port."""
    assert app_label(app, proto, port) == label


@pytest.fixture()
def capture(tmp_path: Path) -> Path:
    """Two web pods calling the cache with Redis, one with HTTP too, one unknown protocol, and DNS."""
    frames = []
    frames += tcp_exchange("10.1.0.1", 40001, "10.1.0.9", 6379, 100.0, [(p.resp_command("GET", "k"), b"$-1\r\n")])
    frames += tcp_exchange("10.1.0.2", 40002, "10.1.0.9", 6379, 101.0, [(p.resp_command("PING"), b"+PONG\r\n")])
    frames += tcp_exchange("10.1.0.2", 40003, "10.1.0.9", 6379, 102.0, [(p.http_request("GET", "/", "x"), b"")])
    frames += tcp_exchange("10.1.0.1", 40004, "10.1.0.9", 7000, 103.0, [(b"\x00\x01binary-stuff\xff", b"\x02ok")])
    frames += udp_exchange(
        "10.1.0.1", 33333, "10.96.0.10", 53, 104.0, p.dns_query(7, "cache.shop"), p.dns_response(7, "cache.shop", [])
    )
    path = tmp_path / "t.pcap"
    with PcapWriter(path) as w:
        for ts, frame in sorted(frames):
            w.write(ts, frame)
    return path


@pytest.fixture()
def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY)
    return path


def test_aggregate_groups_sessions_by_group_port_and_app(capture: Path, inventory_file: Path) -> None:
    """Sessions from different pods of one group on the same port and app form one conversation."""
    resolver = Resolver(load_inventory([str(inventory_file)]))
    convs = {c.key: c for c in aggregate(read_flows([capture], resolver))}
    redis = convs[("nv.web.shop", "nv.cache.shop", 6379, PROTO_TCP, "redis")]
    assert redis.sessions == 2
    assert redis.packets == 2 * 10  # each: 3 handshake + request and response (each acked) + 3 teardown
    assert ("nv.web.shop", "nv.cache.shop", 6379, PROTO_TCP, "http") in convs
    assert ("nv.web.shop", "nv.cache.shop", 7000, PROTO_TCP, "tcp/7000") in convs
    dns = convs[("nv.web.shop", "nv.coredns.kube-system", 53, PROTO_UDP, "dns")]
    assert dns.server_names == {"cache.shop"}
    assert redis.first_seen == 100.0 and redis.last_seen > 101.0


def test_learn_then_check_flags_only_new_behaviour(capture: Path, inventory_file: Path, tmp_path: Path) -> None:
    """A policy learned from traffic allows that traffic; new behaviour is an implicit-deny violation."""
    inv = load_inventory([str(inventory_file)])
    resolver = Resolver(inv)
    flows = list(read_flows([capture], resolver))
    assert dns_service_groups(inv, resolver) == {"nv.coredns.kube-system"}
    policy, learned = learn_policy(flows, inv, resolver, mode="protect")
    assert learned and all(e.type is EventType.LEARNED and e.verdict and e.verdict.rule_id >= 10001 for e in learned)
    engine = PolicyEngine(policy, dns_service_groups=dns_service_groups(inv, resolver))
    assert not [i for i in check(flows, engine) if i.verdict.violation]

    extra = tmp_path / "extra.pcap"
    with PcapWriter(extra) as w:
        for ts, frame in tcp_exchange(
            "10.1.0.9", 50000, "10.1.0.1", 80, 200.0, [(p.http_request("GET", "/", "w"), b"")]
        ):
            w.write(ts, frame)
    items = check(list(read_flows([extra], resolver)), engine)
    assert [(i.conversation.client_group, i.conversation.server_group, i.verdict.rule_id) for i in items] == [
        ("nv.cache.shop", "nv.web.shop", 0)
    ]
    events = violation_events(items, str(extra))
    assert len(events) == 1
    event = events[0]
    assert event.type is EventType.VIOLATION and event.verdict is not None
    assert event.verdict.action == "deny" and event.client.mode == "protect"
    assert event.server.port == 80 and event.client.port == 0
    assert "implicit deny" in event.verdict.explanation


def test_progress_reports_every_byte_read(capture: Path) -> None:
    """The progress callback (behind the CLI's progress bar) is told of every byte of the capture."""
    seen: list[int] = []
    flows = list(read_flows([capture, capture], Resolver(None), progress=seen.append))
    assert flows
    assert sum(seen) == 2 * capture.stat().st_size


def test_l7_rules_see_every_request_of_a_keep_alive_connection(tmp_path: Path, inventory_file: Path) -> None:
    """The 20th request on one connection is judged by L7 rules too (no cut-off after the first few)."""
    from podwall.policy.formats.podwall_yaml import parse_policy

    exchanges = [(p.http_request("GET", f"/api/items/{i}", "cache"), p.http_response(200, b"{}")) for i in range(19)]
    exchanges.append((p.http_request("POST", "/admin/drop-all", "cache"), p.http_response(200, b"{}")))
    path = tmp_path / "keepalive.pcap"
    with PcapWriter(path) as w:
        for ts, frame in tcp_exchange("10.1.0.1", 41000, "10.1.0.9", 8080, 300.0, exchanges):
            w.write(ts, frame)
    policy = parse_policy(
        """
apiVersion: podwall.io/v1
kind: Policy
metadata: {name: l7}
spec:
  defaultMode: protect
  groups:
    - {name: web, criteria: [{key: app, op: "=", value: web}], mode: protect}
    - {name: cache, criteria: [{key: app, op: "=", value: cache}], mode: protect}
  rules:
    - {id: 1, from: web, to: cache, ports: [tcp/8080], applications: [http],
       l7: {http: {methods: [GET], paths: [{prefix: /api/}]}}}
""",
        "l7.yaml",
    )
    resolver = Resolver(load_inventory([str(inventory_file)]))
    flows = list(read_flows([path], resolver))
    assert len(flows) == 1
    obs = flows[0].observation()
    assert len(obs.requests) == 20
    (item,) = check(flows, PolicyEngine(policy))
    assert item.verdict.violation and item.verdict.action == "deny"
    assert "L7 request 20 of 20 (HTTP POST /admin/drop-all" in item.verdict.explanation.text
    assert "/admin/drop-all" in json.dumps(item.verdict.explanation.to_dict())
