"""The `podwall policy connlist` and `podwall policy diff` commands on Kubernetes objects."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import corpus_dir
from tests.e2e.test_demo_cli import podwall

NETPOL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{protocol: TCP, port: 5432}]
"""
PODS = """
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
  - {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: shop, labels: {app: web}},
     status: {podIP: 10.0.0.1}}
  - {apiVersion: v1, kind: Pod, metadata: {name: db, namespace: shop, labels: {app: db}},
     status: {podIP: 10.0.0.2}}
"""


def _dir(base: Path, name: str, *docs: str) -> Path:
    d = base / name
    d.mkdir()
    for i, doc in enumerate(docs):
        (d / f"{i}.yaml").write_text(doc)
    return d


def test_connlist_prints_netpol_analyzer_lines(tmp_path: Path) -> None:
    """connlist prints the allowed pairs: db only from web on TCP 5432, everything else open."""
    d = _dir(tmp_path, "a", PODS, NETPOL)
    res = podwall("policy", "connlist", d)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "shop/web[Pod] => shop/db[Pod] : TCP 5432" in lines
    assert "shop/db[Pod] => shop/web[Pod] : All Connections" in lines
    assert not any(line.endswith("=> shop/db[Pod] : All Connections") for line in lines)


def test_connlist_matches_a_corpus_case() -> None:
    """On a netpol-analyzer corpus case the command's output is exactly the expected list."""
    case = corpus_dir("netpol", "netpol-analyzer", "onlineboutique")
    res = podwall("policy", "connlist", case / "input")
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.splitlines()) == sorted((case / "expected_connlist.txt").read_text().splitlines())


def test_diff_reports_newly_denied_connections(tmp_path: Path) -> None:
    """Adding the policy newly restricts who reaches db: the diff says so and exits 1."""
    old = _dir(tmp_path, "old", PODS)
    new = _dir(tmp_path, "new", PODS, NETPOL)
    res = podwall("policy", "diff", old, new, "--json")
    assert res.returncode == 1, res.stderr
    changes = json.loads(res.stdout)
    web_db = [c for c in changes if c["src"] == "shop/web[Pod]" and c["dst"] == "shop/db[Pod]"]
    assert web_db == [
        {
            "change": "changed",
            "src": "shop/web[Pod]",
            "dst": "shop/db[Pod]",
            "before": "All Connections",
            "after": "TCP 5432",
        }
    ]
    same = podwall("policy", "diff", new, new)
    assert same.returncode == 0 and "0 connection(s) differ" in same.stdout


def test_connlist_rejects_bad_policy_with_location(tmp_path: Path) -> None:
    """A malformed NetworkPolicy is rejected with exit 2 and a message naming file and field."""
    d = _dir(tmp_path, "bad", PODS, NETPOL.replace("port: 5432", "port: 99999"))
    res = podwall("policy", "connlist", d)
    assert res.returncode == 2
    assert "1.yaml" in res.stderr and "port" in res.stderr


def test_neuvector_export_then_import_gives_the_same_rules(tmp_path: Path) -> None:
    """A learned policy exported as NeuVector CRDs and imported back allows the same connections."""
    from podwall.demo import INVENTORY, NORMAL
    from podwall.policy.formats.podwall_yaml import load_policy

    learned = tmp_path / "learned.yaml"
    assert podwall("learn", NORMAL, "-i", INVENTORY, "-o", learned, "--no-store").returncode == 0
    crds = tmp_path / "nv.yaml"
    res = podwall("policy", "export", learned, "-o", crds)
    assert res.returncode == 0, res.stderr
    assert "kind: NvSecurityRule" in crds.read_text()
    back = tmp_path / "back.yaml"
    res = podwall("policy", "import", crds, "-o", back)
    assert res.returncode == 0, res.stderr

    def shape(path: Path) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...], str]]:
        rules = load_policy(path).spec.rules
        return {(r.from_, r.to, tuple(sorted(r.ports)), tuple(sorted(r.applications)), r.action) for r in rules}

    assert shape(back) == shape(learned)
    check = podwall("check", NORMAL, "-i", INVENTORY, "-p", back, "--no-store")
    assert check.returncode == 0, check.stdout + check.stderr
