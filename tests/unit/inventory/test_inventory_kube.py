"""Kubernetes objects to inventory: owner chains, naming, labels, addresses, list dumps and located faults."""

from __future__ import annotations

import json
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml

from podwall.core.errors import InputError
from podwall.inventory.kube import Document, inventory_from_kube, parse_kube_text, read_documents
from podwall.inventory.model import NAMESPACE_NAME_LABEL, Inventory, LoadResult, Workload

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixtures() -> LoadResult:
    docs: list[Document] = []
    for name in ("kube_manifests.yaml", "kube_pods.json"):
        docs.extend(read_documents((FIXTURES / name).read_text(), name))
    return inventory_from_kube(docs)


def by_ref(inv: Inventory) -> dict[str, Workload]:
    return {w.ref: w for w in inv.workloads}


def pod(name: str, *, ns: str = "default", owner: tuple[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": extra.pop("labels", {"app": name})}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": owner[0], "name": owner[1], "controller": True}]
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}
    if "ip" in extra:
        obj["status"] = {"podIP": extra.pop("ip")}
    obj["spec"].update(extra)
    return obj


def controller(kind: str, name: str, *, ns: str = "default", owner: tuple[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"kind": kind, "metadata": meta, "spec": {"template": {"metadata": {"labels": {"app": name}}}}}


def from_objects(*objects: dict[str, Any]) -> LoadResult:
    return parse_kube_text(yaml.safe_dump_all(objects), "objects.yaml")


def test_fixture_workloads_are_named_by_their_top_owner() -> None:
    """Manifests plus a kubectl JSON dump give one workload per top owner, each with its pods."""
    refs = by_ref(load_fixtures().inventory)
    assert sorted(refs) == [
        "shop/agent[DaemonSet]",
        "shop/backup[CronJob]",
        "shop/cart-74f56fd4b[ReplicaSet]",
        "shop/db[StatefulSet]",
        "shop/debug[Pod]",
        "shop/idle[Deployment]",
        "shop/web[Deployment]",
    ]
    assert [p.name for p in refs["shop/web[Deployment]"].pods] == ["web-5d8f7c9b6-abcde"]
    assert [p.name for p in refs["shop/backup[CronJob]"].pods] == [
        "backup-28391100-zz9zz",
        "backup-28391234-q2w4e",
    ]
    assert refs["shop/idle[Deployment]"].pods == ()  # no pods in the input, still a workload with a group
    assert refs["shop/idle[Deployment]"].group == "nv.idle.shop"
    assert refs["shop/idle[Deployment]"].image == "idle:1"


def test_absent_replicaset_keeps_its_name_but_the_deployment_service() -> None:
    """With ReplicaSet and Deployment absent, the ReplicaSet names the workload, the Deployment its group."""
    cart = by_ref(load_fixtures().inventory)["shop/cart-74f56fd4b[ReplicaSet]"]
    assert cart.service == "cart"
    assert cart.group == "nv.cart.shop"


def test_volatile_labels_are_dropped_and_job_name_kept() -> None:
    """Hashes, generations and pod names vanish from labels; a single Job run keeps its job-name."""
    refs = by_ref(load_fixtures().inventory)
    assert dict(refs["shop/web[Deployment]"].labels) == {"app": "web", "tier": "front"}
    assert dict(refs["shop/db[StatefulSet]"].labels) == {"app": "db"}
    assert dict(refs["shop/agent[DaemonSet]"].labels) == {"app": "agent"}
    single = from_objects(pod("job-1-abcde", owner=("Job", "job-1"), labels={"app": "j", "job-name": "job-1"}))
    assert dict(single.inventory.workloads[0].labels) == {"app": "j", "job-name": "job-1"}


def test_pods_with_different_labels_keep_the_shared_ones_with_a_warning() -> None:
    """Two CronJob runs differ in job-name: the workload keeps the labels both pods carry, and says so."""
    result = load_fixtures()
    assert dict(by_ref(result.inventory)["shop/backup[CronJob]"].labels) == {"app": "backup"}
    assert any("carry different labels" in w.message for w in result.warnings)


def test_pod_addresses_dual_stack_and_finished_pods() -> None:
    """podIPs give every address; a finished pod claims none, so its old address may be reused."""
    refs = by_ref(load_fixtures().inventory)
    web = refs["shop/web[Deployment]"].pods[0]
    assert web.ips == (ip_address("10.244.1.10"), ip_address("fd00:244::10")) and web.node == "node-1"
    finished = refs["shop/backup[CronJob]"].pods[0]
    assert finished.name == "backup-28391100-zz9zz" and finished.ips == ()


def test_nodes_from_objects_and_from_pods() -> None:
    """Node objects give InternalIP/ExternalIP; a node known only from pods gets their host addresses."""
    inv = load_fixtures().inventory
    nodes = {n.name: n for n in inv.nodes}
    assert nodes["node-1"].ips == (ip_address("192.168.56.10"), ip_address("203.0.113.10"))
    assert nodes["node-1"].labels == {"kubernetes.io/hostname": "node-1"}
    assert nodes["node-2"].ips == (ip_address("192.168.56.11"),)


def test_host_network_pod_maps_to_its_node() -> None:
    """A hostNetwork pod claims no address of its own; its address belongs to its node."""
    agent = by_ref(load_fixtures().inventory)["shop/agent[DaemonSet]"].pods[0]
    assert agent.host_network and agent.ips == () and agent.node == "node-2"


def test_services_and_cluster_ips() -> None:
    """clusterIPs win over clusterIP, headless services have no address, named target ports stay names."""
    svcs = {s.name: s for s in load_fixtures().inventory.services}
    assert svcs["web"].cluster_ips == (ip_address("10.96.0.30"), ip_address("fd00:96::30"))
    assert [(p.name, p.port, p.protocol, p.target_port) for p in svcs["web"].ports] == [
        ("http", 80, "TCP", 8080),
        ("admin", 9000, "TCP", "admin"),
    ]
    assert svcs["db"].cluster_ips == () and svcs["db"].ports[0].target_port == 5432
    assert svcs["web"].selector == {"app": "web"}


def test_namespace_labels_are_kept() -> None:
    """Namespace labels survive (for ns:<label> criteria) with the metadata.name label Kubernetes adds."""
    inv = load_fixtures().inventory
    assert inv.namespace_labels("shop") == {"team": "web", "env": "prod", NAMESPACE_NAME_LABEL: "shop"}


def test_unsupported_kinds_warn_and_policies_are_silent() -> None:
    """A ConfigMap is reported as ignored; a NetworkPolicy is skipped without a word."""
    warnings = load_fixtures().warnings
    ignored = [w for w in warnings if "is not inventory" in w.message]
    assert [(w.location.file, w.location.document, w.location.obj) for w in ignored] == [
        ("kube_manifests.yaml", 10, "ConfigMap shop/settings")
    ]
    assert not any("NetworkPolicy" in str(w) for w in warnings)


OWNER_CASES = [
    (
        "pod-rs-deployment",
        [
            controller("Deployment", "api"),
            controller("ReplicaSet", "api-6d5f55986b", owner=("Deployment", "api")),
            pod("api-6d5f55986b-x1", owner=("ReplicaSet", "api-6d5f55986b")),
        ],
        "default/api[Deployment]",
        "api",
    ),
    (
        "pod-rs-absent-deployment-present",
        [controller("Deployment", "api"), pod("api-6d5f55986b-x1", owner=("ReplicaSet", "api-6d5f55986b"))],
        "default/api[Deployment]",
        "api",
    ),
    (
        "pod-rs-present-deployment-absent",
        [
            controller("ReplicaSet", "api-6d5f55986b", owner=("Deployment", "api")),
            pod("api-6d5f55986b-x1", owner=("ReplicaSet", "api-6d5f55986b")),
        ],
        "default/api[Deployment]",
        "api",
    ),
    (
        "pod-rs-both-absent",
        [pod("api-6d5f55986b-x1", owner=("ReplicaSet", "api-6d5f55986b"))],
        "default/api-6d5f55986b[ReplicaSet]",
        "api",
    ),
    (
        "rs-name-without-hash-shape",
        [pod("barbar-app-x1", owner=("ReplicaSet", "barbar-app"))],
        "default/barbar-app[ReplicaSet]",
        "barbar-app",
    ),
    (
        "hash-label-disagrees",
        [pod("api-x1", owner=("ReplicaSet", "api-6d5f55986b"), labels={"pod-template-hash": "77777777"})],
        "default/api-6d5f55986b[ReplicaSet]",
        "api-6d5f55986b",
    ),
    (
        "standalone-replicaset",
        [controller("ReplicaSet", "solo"), pod("solo-x1", owner=("ReplicaSet", "solo"))],
        "default/solo[ReplicaSet]",
        "solo",
    ),
    (
        "pod-job-cronjob",
        [
            controller("CronJob", "backup"),
            controller("Job", "backup-28391234", owner=("CronJob", "backup")),
            pod("backup-28391234-q2", owner=("Job", "backup-28391234")),
        ],
        "default/backup[CronJob]",
        "backup",
    ),
    (
        "pod-job-absent-cronjob-present",
        [controller("CronJob", "backup"), pod("backup-28391234-q2", owner=("Job", "backup-28391234"))],
        "default/backup[CronJob]",
        "backup",
    ),
    (
        "pod-job-absent-no-cronjob",
        [pod("migrate-28391234-q2", owner=("Job", "migrate-28391234"))],
        "default/migrate-28391234[Job]",
        "migrate-28391234",
    ),
    (
        "statefulset",
        [controller("StatefulSet", "db"), pod("db-0", owner=("StatefulSet", "db"))],
        "default/db[StatefulSet]",
        "db",
    ),
    (
        "daemonset-absent",
        [pod("agent-x7k2p", owner=("DaemonSet", "agent"))],
        "default/agent[DaemonSet]",
        "agent",
    ),
    (
        "operator-owned-statefulset",
        [
            controller("StatefulSet", "prometheus-k8s", owner=("Prometheus", "k8s")),
            pod("prometheus-k8s-0", owner=("StatefulSet", "prometheus-k8s")),
        ],
        "default/prometheus-k8s[StatefulSet]",
        "prometheus-k8s",
    ),
    (
        "pod-owned-by-custom-resource",
        [pod("spark-driver", owner=("SparkApplication", "etl"))],
        "default/etl[SparkApplication]",
        "etl",
    ),
    ("bare-pod", [pod("debug")], "default/debug[Pod]", "debug"),
    ("static-pod", [pod("etcd-node1", owner=("Node", "node1"))], "default/etcd-node1[Pod]", "etcd-node1"),
    (
        "owner-without-kind",
        [{"kind": "Pod", "metadata": {"name": "p1", "ownerReferences": [{"name": "internal-security"}]}}],
        "default/internal-security[Pod]",
        "internal-security",
    ),
    (
        "controller-reference-preferred",
        [
            {
                "kind": "Pod",
                "metadata": {
                    "name": "p1",
                    "ownerReferences": [
                        {"kind": "ConfigMap", "name": "cm"},
                        {"kind": "StatefulSet", "name": "db", "controller": True},
                    ],
                },
            }
        ],
        "default/db[StatefulSet]",
        "db",
    ),
]


@pytest.mark.parametrize(("objects", "ref", "service"), [c[1:] for c in OWNER_CASES], ids=[c[0] for c in OWNER_CASES])
def test_owner_chains(objects: list[dict[str, Any]], ref: str, service: str) -> None:
    """The pod lands in the workload its owner chain (as present in the input) leads to, with its service."""
    inv = from_objects(*objects).inventory
    holding = [w for w in inv.workloads if w.pods]
    assert [w.ref for w in holding] == [ref]
    assert holding[0].service == service
    assert {w.ref for w in inv.workloads} == {ref}  # intermediate owners are not workloads of their own


def test_kubectl_pod_list_in_yaml_with_untyped_items() -> None:
    """A `kind: PodList` dump with kind-less items reads as pods; a NamespaceList gives namespace labels."""
    text = (
        yaml.safe_dump(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "items": [{"metadata": {"name": "a", "namespace": "x"}, "status": {"podIP": "10.1.0.1"}}],
            }
        )
        + "---\n"
        + yaml.safe_dump({"kind": "NamespaceList", "items": [{"metadata": {"name": "x", "labels": {"tier": "gold"}}}]})
    )
    inv = parse_kube_text(text, "dump.yaml").inventory
    assert [(w.ref, w.pods[0].ips) for w in inv.workloads] == [("x/a[Pod]", (ip_address("10.1.0.1"),))]
    assert inv.namespace_labels("x")["tier"] == "gold"


def test_kubectl_list_in_json_single_object_and_empty_documents() -> None:
    """A JSON `kind: List`, a single JSON object and empty YAML documents all read."""
    listing = json.dumps({"kind": "List", "items": [pod("a", ip="10.1.0.1"), pod("b", ip="10.1.0.2")]})
    assert len(parse_kube_text(listing, "pods.json").inventory.workloads) == 2
    assert len(parse_kube_text(json.dumps(pod("c")), "pod.json").inventory.workloads) == 1
    assert len(parse_kube_text("---\n---\n" + yaml.safe_dump(pod("d")) + "---\n", "m.yaml").inventory.workloads) == 1


def test_identical_objects_merge_and_different_ones_conflict() -> None:
    """The same object twice is one object; two different objects of one name are a located error."""
    assert len(from_objects(pod("a", ip="10.1.0.1"), pod("a", ip="10.1.0.1")).inventory.workloads) == 1
    with pytest.raises(InputError) as info:
        from_objects(pod("a", ip="10.1.0.1"), pod("a", ip="10.1.0.2"))
    assert info.value.problems[0].location.obj == "Pod default/a" and info.value.problems[0].location.document == 1


def test_pod_ip_claimed_twice_is_located() -> None:
    """Two running pods with one address are an error naming the second pod's field."""
    with pytest.raises(InputError) as info:
        from_objects(pod("a", ip="10.1.0.1"), pod("b", ip="10.1.0.1"))
    [problem] = info.value.problems
    assert (problem.location.obj, problem.location.path) == ("Pod default/b", "status.podIP")
    assert "already claimed by pod default/a" in problem.message


MALFORMED_CASES = [
    ("missing-kind", {"metadata": {"name": "x"}}, None, "kind", "is required"),
    ("missing-name", {"kind": "Pod", "metadata": {}}, "Pod", "metadata.name", "is required"),
    ("bad-name", {"kind": "Pod", "metadata": {"name": "Bad_Name"}}, "Pod", "metadata.name", "invalid name"),
    ("metadata-not-mapping", {"kind": "Pod", "metadata": "x"}, None, "metadata", "must be a mapping"),
    ("bad-pod-ip", pod("a", ip="10.1.0.300"), "Pod default/a", "status.podIP", "invalid IP address"),
    ("label-not-string", pod("a", labels={"v": 2}), "Pod default/a", 'metadata.labels["v"]', "quote it"),
    (
        "spec-not-mapping",
        {"kind": "Pod", "metadata": {"name": "a"}, "spec": []},
        "Pod default/a",
        "spec",
        "must be a mapping",
    ),
    (
        "owner-refs-not-list",
        {"kind": "Pod", "metadata": {"name": "a", "ownerReferences": {"kind": "X"}}},
        "Pod default/a",
        "metadata.ownerReferences",
        "must be a list",
    ),
    (
        "owner-without-name",
        {"kind": "Pod", "metadata": {"name": "a", "ownerReferences": [{"kind": "Job"}]}},
        "Pod default/a",
        "metadata.ownerReferences[0].name",
        "is required",
    ),
    (
        "service-bad-cluster-ip",
        {"kind": "Service", "metadata": {"name": "s"}, "spec": {"clusterIP": "1.2.3"}},
        "Service default/s",
        "spec.clusterIP",
        "invalid IP address",
    ),
    (
        "service-bad-port",
        {"kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "http"}]}},
        "Service default/s",
        "spec.ports[0].port",
        "must be an integer",
    ),
    (
        "node-bad-address",
        {
            "kind": "Node",
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": "InternalIP", "address": "nope"}]},
        },
        "Node n",
        "status.addresses[0].address",
        "invalid IP address",
    ),
    (
        "namespace-bad-labels",
        {"kind": "Namespace", "metadata": {"name": "n", "labels": ["a"]}},
        "Namespace n",
        "metadata.labels",
        "must be a mapping",
    ),
]


@pytest.mark.parametrize(
    ("obj", "where", "path", "message"), [c[1:] for c in MALFORMED_CASES], ids=[c[0] for c in MALFORMED_CASES]
)
def test_malformed_objects_are_located(obj: dict[str, Any], where: str | None, path: str, message: str) -> None:
    """A malformed object raises InputError naming file, document, `Kind ns/name` and the field path."""
    text = yaml.safe_dump(pod("fine")) + "---\n" + yaml.safe_dump(obj)
    with pytest.raises(InputError) as info:
        parse_kube_text(text, "objects.yaml")
    found = [p for p in info.value.problems if (p.location.obj, p.location.path) == (where, path)]
    assert found and message in found[0].message, [str(p) for p in info.value.problems]
    assert found[0].location.file == "objects.yaml" and found[0].location.document == 1


def test_faults_inside_a_list_carry_the_item_path() -> None:
    """A fault in the third item of a List is located at `items[2]...` of that document."""
    text = json.dumps({"kind": "List", "items": [pod("a"), pod("b"), pod("c", ip="bad")]})
    with pytest.raises(InputError) as info:
        parse_kube_text(text, "dump.json")
    [problem] = info.value.problems
    assert (problem.location.obj, problem.location.path) == ("Pod default/c", "items[2].status.podIP")


def test_every_malformed_object_is_reported_at_once() -> None:
    """Faults in several objects and documents come back together, and no inventory is returned."""
    text = "\n---\n".join(yaml.safe_dump(o) for o in (pod("a", ip="x"), pod("b", labels={"k": 1}), {"kind": "Pod"}))
    with pytest.raises(InputError) as info:
        parse_kube_text(text, "m.yaml")
    assert [p.location.document for p in info.value.problems] == [0, 1, 2]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("kind: Pod\nmetadata: {name: a\n", "line 3, column 1"),
        ("kind: Pod\n---\nkind: Pod\n  bad: indent\n", "line 4, column 6"),
        ("kind: Pod\nkind: Service\n", "line 2, column 1"),
    ],
    ids=["unclosed-flow", "bad-indent-second-doc", "duplicate-key"],
)
def test_yaml_syntax_errors_name_line_and_column(text: str, where: str) -> None:
    """A YAML syntax error (or duplicate key) is reported with its file, line and column."""
    with pytest.raises(InputError) as info:
        read_documents(text, "m.yaml")
    [problem] = info.value.problems
    assert problem.location.file == "m.yaml" and where in problem.message


def test_yaml_syntax_error_names_its_document() -> None:
    """The document index of a syntax error counts the documents before it, empty ones included."""
    with pytest.raises(InputError) as info:
        read_documents("---\n---\nkind: Pod\n---\na: [\n", "m.yaml")  # documents: empty, Pod, broken
    assert info.value.problems[0].location.document == 2


def test_json_syntax_error_names_line_and_column() -> None:
    """A JSON syntax error is reported with its line and column."""
    with pytest.raises(InputError, match=r"JSON syntax error at line 2, column 1"):
        read_documents('{"kind": "Pod",\n}', "p.json")
