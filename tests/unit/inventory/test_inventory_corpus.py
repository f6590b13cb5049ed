"""netpol-analyzer's test inputs load with the Kubernetes loader, and name workloads as netpol-analyzer does.

Each case folder holds Kubernetes objects (pods, workloads, namespaces, policies) and the connectivity
list netpol-analyzer printed for them; every non-External peer of that list must be one of our
workloads, written `namespace/name[Kind]`, and we must not invent others.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from podwall.inventory.kube import Document, inventory_from_kube, read_documents
from podwall.inventory.loader import inventory_files
from tests.conftest import CORPUS, corpus_dir

NETPOL = CORPUS / "netpol" / "netpol-analyzer"
CASES = sorted(p.name for p in NETPOL.iterdir() if (p / "input").is_dir()) if NETPOL.is_dir() else []
PEER_LINE = re.compile(r"^(\S+) => (\S+) : ")
# Warnings these inputs are known to deserve: pods of one owner with different labels, owner
# references without a kind. Anything else (an ignored kind, say) would mean a gap in the loader.
EXPECTED_WARNINGS = ("carry different labels", "has no kind")


def expected_peers(case: Path) -> set[str]:
    peers: set[str] = set()
    for line in (case / "expected_connlist.txt").read_text().splitlines():
        m = PEER_LINE.match(line)
        if m:
            peers.update(p for p in m.groups() if not p.endswith("[External]"))
    return peers


def test_corpus_present() -> None:
    """The corpus holds the netpol-analyzer cases (skips with a message when the corpus is absent)."""
    corpus_dir("netpol", "netpol-analyzer")
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES)
def test_case_loads_and_names_workloads_like_netpol_analyzer(case: str) -> None:
    """Each input loads without error (policies silently ignored) and names peers as netpol-analyzer does."""
    folder = corpus_dir("netpol", "netpol-analyzer", case)
    docs: list[Document] = []
    for path in inventory_files([folder / "input"]):
        docs.extend(read_documents(path.read_text(encoding="utf-8-sig"), str(path)))
    result = inventory_from_kube(docs)
    unexpected = [str(w) for w in result.warnings if not any(e in w.message for e in EXPECTED_WARNINGS)]
    assert unexpected == []
    assert {w.ref for w in result.inventory.workloads} == expected_peers(folder)
