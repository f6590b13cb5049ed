"""Builders shared by the policy tests: endpoints of each kind, observations and small policies."""

from __future__ import annotations

from typing import Any

from podwall.core.types import PROTO_TCP, Endpoint, Observation
from podwall.policy.model import Policy


def wl(
    service: str,
    ns: str = "demo",
    *,
    ip: str = "10.1.0.1",
    port: int = 40000,
    labels: dict[str, str] | None = None,
    ns_labels: dict[str, str] | None = None,
    kind: str = "Deployment",
    node: str = "node-1",
    image: str | None = None,
) -> Endpoint:
    """A workload endpoint named like the identity layer names it (`nv.<service>.<ns>`)."""
    group = f"nv.{service}.{ns}"
    return Endpoint(
        ip=ip,
        port=port,
        group=group,
        workload=f"{ns}/{service}",
        namespace=ns,
        service=service,
        pod=f"{service}-abc12",
        kind=kind,
        node=node,
        image=image,
        labels=tuple(sorted((labels or {}).items())),
        ns_labels=tuple(sorted((ns_labels or {}).items())),
        groups=(group,),
    )


def ext(ip: str = "203.0.113.9", port: int = 40000) -> Endpoint:
    """An address outside the cluster."""
    return Endpoint(ip=ip, port=port, group="external", kind="External", groups=("external",))


def node(ip: str = "192.168.1.10", port: int = 40000, name: str = "node-1") -> Endpoint:
    """A Kubernetes node's own address."""
    return Endpoint(ip=ip, port=port, group="nodes", kind="Node", node=name, groups=("nodes",))


def unmanaged(ip: str, port: int = 40000) -> Endpoint:
    """An internal address with no workload behind it (named by its address)."""
    return Endpoint(ip=ip, port=port, group=ip, groups=(ip,))


def obs(
    client: Endpoint, server: Endpoint, port: int = 80, app: str | None = None, proto: int = PROTO_TCP
) -> Observation:
    return Observation(client=client, server=server, proto=proto, server_port=port, app=app)


def crit(key: str, op: str, value: str) -> dict[str, str]:
    return {"key": key, "op": op, "value": value}


def grp(name: str, *criteria: dict[str, str], mode: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "criteria": list(criteria)}
    if mode is not None:
        out["mode"] = mode
    return out


def svc_grp(service: str, ns: str = "demo", mode: str | None = None) -> dict[str, Any]:
    """The group the learner would make for a service."""
    return grp(f"nv.{service}.{ns}", crit("service", "=", service), crit("namespace", "=", ns), mode=mode)


def rule(
    rule_id: int,
    frm: str,
    to: str,
    ports: tuple[str, ...] = ("any",),
    apps: tuple[str, ...] = ("any",),
    action: str = "allow",
    *,
    disabled: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rule_id,
        "from": frm,
        "to": to,
        "ports": list(ports),
        "applications": list(apps),
        "action": action,
    }
    if disabled:
        out["disabled"] = True
    if name is not None:
        out["name"] = name
    return out


def make_policy(
    groups: list[dict[str, Any]], rules: list[dict[str, Any]] | None = None, default_mode: str = "discover"
) -> Policy:
    return Policy.model_validate(
        {
            "metadata": {"name": "test"},
            "spec": {"defaultMode": default_mode, "groups": groups, "rules": rules or []},
        }
    )
