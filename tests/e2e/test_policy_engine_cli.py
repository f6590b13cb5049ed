"""End to end through the `podwall` command on the demo: `check --what-if`, `policy diff` of podwall
policies, `policy analyze` and `policy explain`, with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from podwall.demo import EXPLOIT, INVENTORY, NORMAL
from tests.e2e.test_demo_cli import podwall

REDIS = ("nv.node.demo", "nv.redis.demo")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learned policy, the same policy without its node → redis rule, and the event store of the learning."""
    base = tmp_path_factory.mktemp("engine")
    learned = base / "learned.yaml"
    res = podwall("learn", NORMAL, "--inventory", INVENTORY, "-o", learned, "--db", base / "events.db")
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load(learned.read_text())
    rules = doc["spec"]["rules"]
    kept = [r for r in rules if (r["from"], r["to"]) != REDIS]
    assert len(kept) == len(rules) - 1
    doc["spec"]["rules"] = kept
    (base / "proposed.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return base


def _redis_rule(work: Path) -> int:
    doc = yaml.safe_load((work / "learned.yaml").read_text())
    return next(r["id"] for r in doc["spec"]["rules"] if (r["from"], r["to"]) == REDIS)


@pytest.mark.parametrize(
    "source",
    [pytest.param("capture", id="on-a-capture"), pytest.param("store", id="on-stored-connections")],
)
def test_what_if_blocks_exactly_the_removed_rules_traffic(work: Path, source: str) -> None:
    """Without the node → redis rule, exactly the node → redis sessions would be blocked (exit 1)."""
    captures: list[str | Path] = [NORMAL] if source == "capture" else []
    args: list[str | Path] = [
        "check",
        *captures,
        "-p",
        work / "learned.yaml",
        "--what-if",
        work / "proposed.yaml",
        "-i",
        INVENTORY,
    ]
    res = podwall(*args, "--json", "--db", work / "events.db")
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    blocked = [c for c in doc["connections"] if c["would_block"]]
    assert [(c["client_group"], c["server_group"], c["port"], c["application"]) for c in blocked] == [
        (*REDIS, 6379, "redis")
    ]
    assert blocked[0]["newly_blocked"] and blocked[0]["current"]["rule_id"] == _redis_rule(work)
    assert blocked[0]["sessions"] == doc["sessions_blocked"] > 0
    assert all(c["proposed"]["rule_id"] != 0 for c in doc["connections"] if not c["would_block"])


def test_what_if_with_the_same_policy_blocks_nothing(work: Path) -> None:
    """The learned policy as its own proposal blocks none of the traffic it was learned from (exit 0)."""
    res = podwall("check", NORMAL, "--what-if", work / "learned.yaml", "-i", INVENTORY, "--no-store")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 of" in res.stdout


@pytest.mark.parametrize(
    "extra",
    [pytest.param([], id="synthetic-universe"), pytest.param(["--capture", EXPLOIT], id="captured-traffic")],
)
def test_policy_diff_of_podwall_policies(work: Path, extra: list[Path]) -> None:
    """The semantic diff reports node → redis as newly denied and nothing else (exit 1)."""
    res = podwall("policy", "diff", work / "learned.yaml", work / "proposed.yaml", "-i", INVENTORY, *extra, "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["universe"] == ("capture" if extra else "synthetic")
    assert [(c["change"], c["client_group"], c["server_group"], c["port"]) for c in doc["changes"]] == [
        ("newly-denied", *REDIS, 6379)
    ]
    assert doc["changes"][0]["before"]["rule_id"] == _redis_rule(work)
    assert doc["changes"][0]["after"]["rule_id"] == 0


def test_policy_diff_identical_policies_exit_0(work: Path) -> None:
    """Two identical podwall policies differ in nothing (exit 0)."""
    res = podwall("policy", "diff", work / "learned.yaml", work / "learned.yaml", "-i", INVENTORY)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 change(s)" in res.stdout


HAND_WRITTEN = """
apiVersion: podwall.io/v1
kind: Policy
metadata: {name: hand-written}
spec:
  defaultMode: monitor
  groups:
    - name: web
      criteria: [{key: service, op: '=', value: nginx}, {key: namespace, op: '=', value: demo}]
    - name: app
      criteria: [{key: app, op: '=', value: node-pod}]
    - name: cache
      criteria: [{key: service, op: '=', value: redis}]
  rules:
    - {id: 1, name: app to cache, from: app, to: cache, ports: [tcp/6379], action: deny}
    - {id: 2, name: cache for app, from: app, to: cache, ports: [tcp/6379], applications: [redis]}
    - {id: 3, name: web to app, from: web, to: app, ports: [tcp/8000-8888]}
    - {id: 4, name: no high ports, from: web, to: app, ports: [tcp/8800-9000], action: deny}
"""


def test_analyze_finds_the_shadowed_rule_and_the_conflict(tmp_path: Path) -> None:
    """A hand-written policy with one shadowed rule and one conflict gives exactly those (exit 1)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(HAND_WRITTEN)
    res = podwall("policy", "analyze", policy, "-i", INVENTORY, "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    findings = json.loads(res.stdout)["findings"]
    assert [(f["kind"], f["rule_ids"]) for f in findings] == [("shadowed", [2, 1]), ("conflict", [3, 4])]
    assert findings[1]["detail"]["winner"] == 3
    text = podwall("policy", "analyze", policy)
    assert text.returncode == 1 and "rule 2 (cache for app)" in text.stdout


def test_analyze_learned_policy_is_clean(work: Path) -> None:
    """The learned demo policy has no finding against its inventory (exit 0)."""
    res = podwall("policy", "analyze", work / "learned.yaml", "-i", INVENTORY, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["findings"] == []


@pytest.mark.parametrize(
    ("client", "expect_rule"),
    [
        pytest.param("nv.node.demo", True, id="allowed-by-learned-rule"),
        pytest.param("10.244.1.66", False, id="exploit-ip"),
    ],
)
def test_explain_names_the_deciding_rule(work: Path, client: str, expect_rule: bool) -> None:
    """explain decides a hypothetical connection and names the deciding rule (or the implicit deny)."""
    args: list[str | Path] = ["policy", "explain", work / "learned.yaml", "--from", client, "--to", "nv.redis.demo"]
    res = podwall(*args, "--port", "tcp/6379", "--app", "redis", "-i", INVENTORY, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    rule_id = _redis_rule(work) if expect_rule else 0
    assert doc["rule_id"] == rule_id
    assert doc["explanation"]["deciding_rule"]["id"] == rule_id
    assert doc["violation"] is not expect_rule
    text = podwall(*args, "--port", "tcp/6379", "--app", "redis", "-i", INVENTORY)
    assert (f"Rule {rule_id}" if expect_rule else "implicit deny") in text.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            ["policy", "explain", "{learned}", "--from", "x", "--to", "y", "--port", "tcp/1-2"], id="port-range"
        ),
        pytest.param(
            ["policy", "explain", "{learned}", "--from", "nobody", "--to", "nv.redis.demo", "--port", "tcp/1"],
            id="unknown-end",
        ),
        pytest.param(["policy", "diff", "{learned}", "{dir}"], id="podwall-vs-kubernetes"),
        pytest.param(["check", "-p", "{learned}"], id="check-without-captures"),
    ],
)
def test_bad_input_exit_2(work: Path, tmp_path: Path, args: list[str]) -> None:
    """Unusable arguments are rejected with a message and exit code 2."""
    filled = [a.replace("{learned}", str(work / "learned.yaml")).replace("{dir}", str(tmp_path)) for a in args]
    res = podwall(*filled)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "error:" in res.stderr
