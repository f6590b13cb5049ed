"""Loading from files and directories: format detection, merging sources, and whole-input rejection."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path

import pytest

from podwall.core.errors import InputError
from podwall.inventory.loader import inventory_files, load_inventory, load_inventory_with_warnings

FIXTURES = Path(__file__).parent / "fixtures"
HEADER = "apiVersion: podwall.io/v1\nkind: Inventory\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_directory_is_read_recursively_by_extension(tmp_path: Path) -> None:
    """A directory yields its .yaml/.yml/.json files at any depth, sorted, skipping other and hidden ones."""
    write(tmp_path / "b.yaml", HEADER)
    write(tmp_path / "sub" / "a.yml", HEADER)
    write(tmp_path / "sub" / "deeper" / "c.json", '{"apiVersion": "podwall.io/v1", "kind": "Inventory"}')
    write(tmp_path / "notes.md", "# not an input")
    write(tmp_path / ".git" / "x.yaml", "not: [valid")
    write(tmp_path / ".hidden.yaml", "not: [valid")
    found = [p.relative_to(tmp_path).as_posix() for p in inventory_files([tmp_path])]
    assert found == ["b.yaml", "sub/a.yml", "sub/deeper/c.json"]
    load_inventory([tmp_path])  # the broken hidden files are never read


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    """A file given directly and through its directory is read once."""
    path = write(tmp_path / "inv.yaml", HEADER)
    assert inventory_files([tmp_path, path, str(path)]) == [path]


def test_kubernetes_files_and_podwall_file_merge(tmp_path: Path) -> None:
    """Kubernetes objects from a directory and a podwall file combine into one inventory."""
    kube = tmp_path / "kube"
    kube.mkdir()
    for name in ("kube_manifests.yaml", "kube_pods.json"):
        shutil.copy(FIXTURES / name, kube / name)
    extra = write(
        tmp_path / "extra.yaml",
        HEADER + "cluster: prod\nexternalGroups: [{name: ext.github, cidrs: [140.82.112.0/20]}]\n",
    )
    result = load_inventory_with_warnings([kube, extra])
    inv = result.inventory
    assert inv.cluster == "prod"
    assert [g.name for g in inv.external_groups] == ["ext.github"]
    assert "shop/web[Deployment]" in {w.ref for w in inv.workloads}
    assert any("ConfigMap" in w.message for w in result.warnings)


def test_pods_and_their_owners_may_sit_in_different_files(tmp_path: Path) -> None:
    """A pod in one file is attached to the Deployment defined in another."""
    write(tmp_path / "deploy.yaml", "kind: Deployment\nmetadata: {name: api, namespace: x}\n")
    write(
        tmp_path / "pods.yaml",
        "kind: Pod\nmetadata:\n  name: api-6d5f55986b-q\n  namespace: x\n"
        "  ownerReferences: [{kind: ReplicaSet, name: api-6d5f55986b, controller: true}]\n"
        "status: {podIP: 10.1.0.1}\n",
    )
    [workload] = load_inventory([tmp_path]).workloads
    assert workload.ref == "x/api[Deployment]" and workload.pods[0].ips == (ip_address("10.1.0.1"),)


def test_conflict_between_sources_is_an_error(tmp_path: Path) -> None:
    """A node described differently by a podwall file and a Node object is reported with both places."""
    a = write(tmp_path / "a.yaml", HEADER + "nodes: [{name: node-1, ips: [192.168.56.99]}]\n")
    b = write(tmp_path / "b.yaml", "kind: Node\nmetadata: {name: node-1}\n")
    with pytest.raises(InputError) as info:
        load_inventory([a, b])
    [problem] = info.value.problems
    assert "node node-1 is defined differently" in problem.message and str(a) in problem.message


def test_address_claimed_in_two_files_is_an_error(tmp_path: Path) -> None:
    """A pod address that a podwall file gives to a node is rejected, naming both files."""
    a = write(tmp_path / "a.yaml", HEADER + "nodes: [{name: n, ips: [10.1.0.1]}]\n")
    b = write(tmp_path / "b.yaml", "kind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.1.0.1}\n")
    with pytest.raises(InputError) as info:
        load_inventory([a, b])
    [problem] = info.value.problems
    assert problem.location.file == str(b) and problem.location.path == "status.podIP"
    assert "already claimed by node n" in problem.message and str(a) in problem.message


def test_faults_in_every_file_are_reported_together(tmp_path: Path) -> None:
    """Syntax errors in two files and a bad field in a third come back in one error; nothing is loaded."""
    write(tmp_path / "1.yaml", "kind: Pod\nmetadata: {name: a\n")
    write(tmp_path / "2.json", '{"kind": "Pod",}')
    write(tmp_path / "3.yaml", HEADER + "nodes: [{name: n, ips: [bad]}]\n")
    write(tmp_path / "4.yaml", HEADER + "nodes: [{name: ok, ips: [10.0.0.1]}]\n")
    with pytest.raises(InputError) as info:
        load_inventory([tmp_path])
    files = [Path(p.location.file or "").name for p in info.value.problems]
    assert files == ["1.yaml", "2.json", "3.yaml"]
    assert "line 3, column 1" in info.value.problems[0].message


def missing(d: Path) -> Path:
    return d / "missing.yaml"


def empty_directory(d: Path) -> Path:
    (d / "empty").mkdir()
    (d / "empty" / "README.md").write_text("no inventory here")
    return d / "empty"


def not_utf8(d: Path) -> Path:
    (d / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    return d / "latin1.yaml"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (missing, "no such file or directory"),
        (empty_directory, "files in this directory"),
        (not_utf8, "cannot read"),
    ],
    ids=["missing-path", "empty-directory", "not-utf8"],
)
def test_unreadable_inputs_are_errors(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    """A missing path, a directory without inventory files and a non-UTF-8 file are clear errors."""
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        load_inventory([path])
    assert message in info.value.problems[0].message and info.value.problems[0].location.file == str(path)


def test_explicit_file_of_any_extension_is_read(tmp_path: Path) -> None:
    """A file named on the command line is read whatever its extension."""
    path = write(tmp_path / "inventory.txt", HEADER + "cluster: odd\n")
    assert load_inventory([path]).cluster == "odd"


def test_other_podwall_documents_are_skipped_with_a_warning(tmp_path: Path) -> None:
    """A podwall document of another kind (say a policy) next to the inventory is left to its own loader."""
    path = write(tmp_path / "mixed.yaml", HEADER + "cluster: c\n---\napiVersion: podwall.io/v1\nkind: Policy\n")
    result = load_inventory_with_warnings([path])
    assert result.inventory.cluster == "c"
    assert [w.location.document for w in result.warnings] == [1]


def test_demo_inventory_loads() -> None:
    """The inventory shipped with the demo loads with its workloads and services."""
    demo = Path(__file__).resolve().parents[3] / "podwall" / "demo" / "inventory.yaml"
    inv = load_inventory([demo])
    assert inv.cluster == "demo" and len(inv.workloads) == 5 and len(inv.services) == 4
