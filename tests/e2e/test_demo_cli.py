"""End to end through the `podwall` command on the bundled demo: learn on the normal traffic, check
the same traffic (no violation), check the traffic with the exploit (exactly the expected
violations, each explained), events stored and listed, bad input rejected with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podwall.demo import EXPLOIT, INVENTORY, NORMAL
from podwall.demo.generate import EXPECTED_VIOLATIONS, generate


def podwall(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "podwall.cli.main", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    policy = work / "policy.yaml"
    res = podwall("learn", NORMAL, "--inventory", INVENTORY, "-o", policy, "--db", work / "events.db")
    assert res.returncode == 0, res.stderr
    return policy


def test_demo_captures_regenerate_identically(tmp_path: Path) -> None:
    """The committed demo captures are exactly what the generator makes, so they can be regenerated."""
    normal, exploit = generate(tmp_path)
    assert normal.read_bytes() == NORMAL.read_bytes()
    assert exploit.read_bytes() == EXPLOIT.read_bytes()


def test_learned_policy_validates(learned: Path) -> None:
    """The learned policy passes `podwall policy validate` and holds learned rules from ID 10001."""
    res = podwall("policy", "validate", learned)
    assert res.returncode == 0, res.stderr
    text = learned.read_text()
    assert "10001" in text and "nv.redis.demo" in text


def test_check_normal_has_no_violation(learned: Path, tmp_path: Path) -> None:
    """Checking the traffic the policy was learned from finds no violation (exit 0)."""
    res = podwall("check", NORMAL, "-i", INVENTORY, "-p", learned, "--json", "--db", tmp_path / "e.db")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["violations"] == 0
    assert all(v["action"] == "allow" and v["rule_id"] >= 10001 for v in doc["verdicts"])


def test_check_exploit_finds_exactly_the_expected_violations(learned: Path, tmp_path: Path) -> None:
    """The exploit capture gives exit 1 and exactly the expected violations, each explained by rule 0."""
    jsonl = tmp_path / "events.jsonl"
    db = tmp_path / "e.db"
    res = podwall("check", EXPLOIT, "-i", INVENTORY, "-p", learned, "--json", "--db", db, "--jsonl", jsonl)
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    violations = [v for v in doc["verdicts"] if v["violation"]]
    found = {(v["client_group"], v["server_group"], v["server_port"], v["application"]) for v in violations}
    assert found == EXPECTED_VIOLATIONS
    for v in violations:
        assert v["rule_id"] == 0
        assert "implicit deny" in v["explanation"]
        assert v["client_group"] in v["explanation"] and v["server_group"] in v["explanation"]
    lines = jsonl.read_text().splitlines()
    assert len(lines) == len(EXPECTED_VIOLATIONS)
    listed = podwall("events", "--type", "violation", "--json", "--db", db)
    assert listed.returncode == 0, listed.stderr
    events = json.loads(listed.stdout)
    assert {
        (e["client"]["group"], e["server"]["group"], e["server"]["port"], e["application"]) for e in events
    } == found
    only_redis = json.loads(podwall("events", "--group", "nv.redis.demo", "--json", "--db", db).stdout)
    assert only_redis and all("nv.redis.demo" in (e["client"]["group"], e["server"]["group"]) for e in only_redis)


def test_http_to_redis_port_is_flagged_by_application(learned: Path, tmp_path: Path) -> None:
    """node -> redis over HTTP on 6379 is a violation although node -> redis over Redis is allowed."""
    res = podwall("check", EXPLOIT, "-i", INVENTORY, "-p", learned, "--json", "--no-store")
    doc = json.loads(res.stdout)
    pairs = {(v["client_group"], v["server_group"], v["application"]): v for v in doc["verdicts"]}
    assert pairs[("nv.node.demo", "nv.redis.demo", "redis")]["action"] == "allow"
    assert pairs[("nv.node.demo", "nv.redis.demo", "http")]["violation"] is True


def test_analyze_names_conversations_and_flows() -> None:
    """analyze prints conversations by group with applications, and --flows shows server names."""
    res = podwall("analyze", NORMAL, "-i", INVENTORY, "--json")
    assert res.returncode == 0, res.stderr
    convs = json.loads(res.stdout)["conversations"]
    keys = {(c["client_group"], c["server_group"], c["server_port"], c["application"]) for c in convs}
    assert ("nv.nginx.demo", "nv.node.demo", 8888, "http") in keys
    assert ("nv.node.demo", "nv.redis.demo", 6379, "redis") in keys
    assert ("nv.node.demo", "external", 443, "tls") in keys
    assert ("external", "nv.nginx.demo", 80, "http") in keys
    flows = json.loads(podwall("analyze", NORMAL, "--flows", "--json").stdout)["flows"]
    names = {f["server_name"] for f in flows}
    assert {"api.payments.example", "redis.demo.svc.cluster.local", "shop.example.com"} <= names
    # Without an inventory, internal ends are named by address and the internet is `external`.
    assert {f["client_group"] for f in flows} >= {"10.244.1.10", "external"}


def test_demo_command_succeeds(tmp_path: Path) -> None:
    """`podwall demo` runs learn and check on the bundled demo and reports the expected violations."""
    res = podwall("demo", "--db", tmp_path / "demo.db", "--workdir", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "demo ok" in res.stdout
    assert (tmp_path / "policy.yaml").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "nope.pcap", "-p", "nope.yaml"], "no such"),
        (["analyze", "{bad}"], "not a pcap"),
        (["policy", "validate", "{badpolicy}"], "spec"),
        (["analyze", str(NORMAL), "-i", "{badinv}"], "pods[0]"),
        (["events", "--since", "yesterday-ish"], "--since"),
    ],
    ids=["missing-file", "not-a-capture", "bad-policy", "bad-inventory", "bad-since"],
)
def test_bad_input_exits_2_with_a_located_message(tmp_path: Path, args: list[str], needle: str) -> None:
    """Bad captures, policies, inventories and options give exit code 2 and say what and where."""
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture at all")
    badpolicy = tmp_path / "policy.yaml"
    badpolicy.write_text(
        "apiVersion: podwall.io/v1\nkind: Policy\nmetadata: {name: x}\nspec:\n  rules:\n    - {id: 1, frm: a}\n"
    )
    badinv = tmp_path / "inv.yaml"
    badinv.write_text(
        "apiVersion: podwall.io/v1\nkind: Inventory\n"
        "workloads:\n  - {name: a, namespace: b, pods: [{ips: [999.1.1.1]}]}\n"
    )
    subst = {"{bad}": str(bad), "{badpolicy}": str(badpolicy), "{badinv}": str(badinv)}
    res = podwall(*[subst.get(a, a) for a in args])
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_truncated_capture_is_read_up_to_the_damage(tmp_path: Path) -> None:
    """A capture cut mid-record is analysed up to the cut, with a warning naming the file and offset."""
    cut = tmp_path / "cut.pcapng"
    data = NORMAL.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    res = podwall("analyze", cut, "-i", INVENTORY)
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr and str(cut) in res.stderr and "offset" in res.stderr
    assert "nv.nginx.demo" in res.stdout


def test_checking_the_same_traffic_twice_records_each_event_once(learned: Path, tmp_path: Path) -> None:
    """Event ids derive from the traffic, so a re-run adds nothing to the store."""
    db = tmp_path / "e.db"
    for _ in range(2):
        res = podwall("check", EXPLOIT, "-i", INVENTORY, "-p", learned, "--db", db)
        assert res.returncode == 1, res.stderr
    events = json.loads(podwall("events", "--json", "--db", db).stdout)
    assert len(events) == len(EXPECTED_VIOLATIONS)


def test_check_on_a_damaged_capture_is_not_a_clean_result(learned: Path, tmp_path: Path) -> None:
    """A capture that ends in damage makes `check` exit 2 (verdicts cover only part of it) unless allowed."""
    cut = tmp_path / "cut.pcapng"
    data = EXPLOIT.read_bytes()
    cut.write_bytes(data[: len(data) // 3 + 5])
    res = podwall("check", cut, "-i", INVENTORY, "-p", learned, "--no-store", "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "damaged capture" in res.stderr and "offset" in res.stderr
    assert json.loads(res.stdout)["complete"] is False
    allowed = podwall("check", cut, "-i", INVENTORY, "-p", learned, "--no-store", "--allow-damaged")
    assert allowed.returncode in (0, 1), allowed.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["events", "--type", "bogus"],
        ["events", "--limit", "0"],
        ["events", "--db", "http://[::1"],
        ["check", str(NORMAL), "-p", "{policy}", "-i", str(INVENTORY), "--db", "http://[::1"],
    ],
    ids=["bad-type", "bad-limit", "bad-db-url", "check-bad-db-url"],
)
def test_bad_options_exit_2_without_a_traceback(learned: Path, args: list[str]) -> None:
    """Bad option values are usage errors (exit 2, no traceback), never mistaken for violations (1)."""
    res = podwall(*[str(learned) if a == "{policy}" else a for a in args])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
