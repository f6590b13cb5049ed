"""Conformance with np-guard netpol-analyzer: podwall's connectivity list equals its `list` output.

Every case folder of `netpol/netpol-analyzer/` holds Kubernetes manifests (workloads, namespaces,
NetworkPolicies, AdminNetworkPolicies, a BaselineAdminNetworkPolicy) and the connectivity list
netpol-analyzer printed for them. `podwall.policy.connlist.connlist` must produce the same lines
(compared as sets: the order is checked by the unit tests). A failing case prints its missing and
extra lines; the last test prints the pass rate over all cases.
"""

from __future__ import annotations

import time

import pytest

from podwall.policy.connlist import connlist
from tests.conftest import CORPUS, corpus_dir

NETPOL = CORPUS / "netpol" / "netpol-analyzer"
CASES = sorted(p.name for p in NETPOL.iterdir() if (p / "input").is_dir()) if NETPOL.is_dir() else []
SHOWN_LINES = 20  # per side of a failing case's report
SLOW_SECONDS = 10.0  # the largest case (ipblockstest_4, 23,943 lines) takes well under a second


def _compare(case: str) -> tuple[list[str], list[str], float]:
    """Missing and extra lines of podwall's list for a case, and the seconds it took."""
    folder = corpus_dir("netpol", "netpol-analyzer", case)
    expected = {line for line in (folder / "expected_connlist.txt").read_text().splitlines() if line.strip()}
    started = time.perf_counter()
    got = set(connlist([folder / "input"]))
    elapsed = time.perf_counter() - started
    return sorted(expected - got), sorted(got - expected), elapsed


def _report(case: str, missing: list[str], extra: list[str]) -> str:
    lines = [f"{case}: {len(missing)} missing, {len(extra)} extra"]
    lines += [f"  - {line}" for line in missing[:SHOWN_LINES]]
    lines += [f"  + {line}" for line in extra[:SHOWN_LINES]]
    return "\n".join(lines)


@pytest.mark.parametrize("case", CASES or ["corpus-absent"])  # the placeholder skips with a message
def test_connlist_matches_netpol_analyzer(case: str) -> None:
    """podwall lists exactly the connections netpol-analyzer lists for the case, in reasonable time."""
    missing, extra, elapsed = _compare(case)
    if missing or extra:
        print(_report(case, missing, extra))
    assert not missing and not extra, _report(case, missing, extra)
    assert elapsed < SLOW_SECONDS, f"{case} took {elapsed:.1f}s"


def test_pass_rate() -> None:
    """Prints the pass rate over every case (and each failure); fails unless every case passes."""
    corpus_dir("netpol", "netpol-analyzer")
    assert CASES, "the corpus holds no netpol-analyzer case"
    failures: list[str] = []
    for case in CASES:
        missing, extra, _ = _compare(case)
        if missing or extra:
            failures.append(_report(case, missing, extra))
    passed = len(CASES) - len(failures)
    print(f"netpol-analyzer conformance: {passed}/{len(CASES)} cases exact ({100 * passed / len(CASES):.1f} %)")
    for failure in failures:
        print(failure)
    assert not failures
