"""Shared rig of the NFQUEUE worker tests: an inventory, policies, a fake queue and a worker with
its events and resets collected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from podwall.core.events import Event
from podwall.datapath.io.nfqueue import QueueMessage
from podwall.enforce.reset import ResetTarget
from podwall.enforce.worker import Decision, Worker, WorkerConfig
from podwall.inventory.loader import parse_inventory_text
from podwall.inventory.resolver import Resolver
from podwall.policy.model import Policy
from podwall.store.events import EventStore

ALLOW_MARK = 0x100
DENY_MARK = 0x200
HOOK_FORWARD = 2

INVENTORY = """
apiVersion: podwall.io/v1
kind: Inventory
cluster: t
workloads:
  - {name: web, namespace: shop, kind: Deployment, labels: {app: web},
     pods: [{name: web-1, ips: [10.1.0.1, "fd00::1"]}]}
  - {name: cache, namespace: shop, kind: StatefulSet, labels: {app: cache},
     pods: [{name: cache-0, ips: [10.1.0.9, "fd00::9"]}]}
  - {name: api, namespace: shop, kind: Deployment, labels: {app: api}, pods: [{name: api-1, ips: [10.1.0.5]}]}
"""

ADDRS = {4: ("10.1.0.1", "10.1.0.9"), 6: ("fd00::1", "fd00::9")}


def policy_for(mode: str, *, redis_rule: bool = True) -> Policy:
    groups = [
        {"name": f"nv.{s}.shop", "criteria": [{"key": "service", "op": "=", "value": s}], "mode": mode}
        for s in ("web", "cache", "api")
    ]
    rules: list[dict[str, Any]] = [
        {
            "id": 2,
            "from": "nv.web.shop",
            "to": "nv.api.shop",
            "ports": ["tcp/8080"],
            "applications": ["http"],
            "action": "allow",
            "l7": {"http": {"methods": ["GET"]}},
        }
    ]
    if redis_rule:
        rules.append(
            {"id": 1, "from": "nv.web.shop", "to": "nv.cache.shop", "ports": ["tcp/6379"], "applications": ["redis"]}
        )
    return Policy.model_validate(
        {"metadata": {"name": "t"}, "spec": {"defaultMode": mode, "groups": groups, "rules": rules}}
    )


@dataclass
class FakeQueue:
    """Records verdicts as the kernel would receive them."""

    inbox: list[list[QueueMessage]] = field(default_factory=list)
    sent: list[tuple[str, int, int, int | None]] = field(default_factory=list)

    def recv(self, timeout: float | None = None, max_messages: int = 64, spin: float = 0.0) -> list[QueueMessage]:
        return self.inbox.pop(0) if self.inbox else []

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None) -> None:
        self.sent.append(("one", packet_id, verdict, mark))

    def verdict_batch(self, max_id: int, verdict: int, mark: int | None = None) -> None:
        self.sent.append(("batch", max_id, verdict, mark))


class Rig:
    """A worker over the test inventory, with its events and resets collected."""

    def __init__(
        self,
        mode: str = "protect",
        *,
        batch: bool = True,
        store: EventStore | None = None,
        config: WorkerConfig | None = None,
    ) -> None:
        inventory = parse_inventory_text(INVENTORY, "inv.yaml").inventory
        self.events: list[Event] = []
        self.resets: list[ResetTarget] = []
        ticks = iter(range(1_000_000))
        self.worker = Worker(
            policy_for(mode),
            Resolver(inventory),
            config or WorkerConfig(ALLOW_MARK, DENY_MARK, batch=batch),
            sink=store.write if store is not None else self.events.extend,
            resetter=self.resets.append,
            clock=lambda: 1000.0 + next(ticks) * 0.001,
        )
        self.next_id = 1

    def messages(self, frames: Sequence[tuple[float, bytes]], mark: int = 0) -> list[QueueMessage]:
        out = []
        for _, frame in frames:
            hw = int.from_bytes(frame[12:14], "big")
            out.append(QueueMessage(self.next_id, hw, HOOK_FORWARD, frame[14:], mark))  # raw IP: no Ethernet header
            self.next_id += 1
        return out

    def decide(self, frames: Sequence[tuple[float, bytes]], mark: int = 0) -> list[Decision]:
        return [self.worker.decide(m) for m in self.messages(frames, mark)]
