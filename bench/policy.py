"""Benchmark: policy verdicts per second as the rule count grows, and compile time at cluster scale.

Verdicts per second are measured at 100, 10,000 and 100,000 rules over the same 1,000 service
groups and the same 2,000 connections, so only the rule count changes; each figure is the
best of `--rounds` timed passes, interleaved across the three policies, after a warm-up
pass (membership, lookup and explanation caches warm, as in a running enforcer). The ratio
is verdicts per second at N rules over those at 100 rules (goal: at least 0.8). Compile
time is `PolicyEngine(policy)` for 10,000 workload groups and 50,000 rules, plus resolving
all 10,000 workloads to their groups once. Policy validation (pydantic) is timed
separately. Not a test: it prints a table.

    .venv/bin/python bench/policy.py [--rounds 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from podwall.core.types import PROTO_TCP, PROTO_UDP, Endpoint, Observation  # noqa: E402
from podwall.policy.evaluate import PolicyEngine  # noqa: E402
from podwall.policy.model import Policy  # noqa: E402

PORTS = (80, 443, 5432, 6379, 8080, 9090, 53)
APPS = {80: "http", 443: "tls", 5432: "postgresql", 6379: "redis", 8080: "http", 9090: "grpc", 53: "dns"}
ID_BLOCKS = ((1, 9999), (10001, 99999), (100001, 109999), (110001, 119999))


def rule_ids(n: int) -> list[int]:
    out: list[int] = []
    for lo, hi in ID_BLOCKS:
        out.extend(range(lo, min(hi, lo + n - len(out) - 1) + 1))
        if len(out) >= n:
            break
    return out[:n]


def group(i: int) -> dict[str, Any]:
    return {
        "name": f"nv.svc{i}.ns{i % 50}",
        "mode": "protect",
        "criteria": [
            {"key": "service", "op": "=", "value": f"svc{i}"},
            {"key": "namespace", "op": "=", "value": f"ns{i % 50}"},
        ],
    }


def make_rules(n: int, groups: int, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rule_id in rule_ids(n):
        port = rng.choice(PORTS)
        spec = f"udp/{port}" if port == 53 else f"tcp/{port}"
        if rng.random() < 0.05:
            spec = "tcp/8000-8100"
        a, b = rng.randrange(groups), rng.randrange(groups)
        r: dict[str, Any] = {
            "id": rule_id,
            "from": f"nv.svc{a}.ns{a % 50}",
            "to": f"nv.svc{b}.ns{b % 50}",
            "ports": [spec],
            "applications": [APPS[port]] if rng.random() < 0.5 else ["any"],
            "action": "deny" if rng.random() < 0.1 else "allow",
        }
        if rule_id >= 110001:
            r["priority"] = rng.randrange(100)
        out.append(r)
    return out


def endpoint(i: int, port: int) -> Endpoint:
    return Endpoint(
        ip=f"10.{(i >> 8) & 255}.{i & 255}.{(i >> 16) + 1}",
        port=port,
        group=f"nv.svc{i}.ns{i % 50}",
        workload=f"ns{i % 50}/svc{i}",
        namespace=f"ns{i % 50}",
        service=f"svc{i}",
    )


def observations(count: int, groups: int, rng: random.Random) -> list[Observation]:
    out = []
    for _ in range(count):
        port = rng.choice(PORTS)
        c, s = rng.randrange(groups), rng.randrange(groups)
        proto = PROTO_UDP if port == 53 else PROTO_TCP
        out.append(Observation(endpoint(c, 40000), endpoint(s, port), proto, port, APPS[port]))
    return out


def policy_of(groups: list[dict[str, Any]], rules: list[dict[str, Any]]) -> Policy:
    return Policy.model_validate({"metadata": {"name": "bench"}, "spec": {"groups": groups, "rules": rules}})


def verdict_rates(engines: list[PolicyEngine], obs: list[Observation], rounds: int) -> list[float]:
    """Best verdicts per second of each engine; rounds interleave the engines so that noise on a
    shared machine hits them alike."""
    for engine in engines:
        for o in obs:
            engine.evaluate(o)
    best = [0.0] * len(engines)
    for _ in range(rounds):
        for i, engine in enumerate(engines):
            start = time.perf_counter()
            for o in obs:
                engine.evaluate(o)
            best[i] = max(best[i], len(obs) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    n_groups = 1000
    groups = [group(i) for i in range(n_groups)]
    obs = observations(2000, n_groups, random.Random(args.seed + 1))
    print(f"verdicts per second ({n_groups} groups, {len(obs)} connections, best of {args.rounds})")
    print(f"{'rules':>8} {'validate s':>11} {'compile s':>10} {'verdicts/s':>12} {'ratio':>7}")
    sizes = (100, 10_000, 100_000)
    engines: list[PolicyEngine] = []
    times: list[tuple[float, float]] = []
    for n in sizes:
        t0 = time.perf_counter()
        policy = policy_of(groups, make_rules(n, n_groups, rng))
        t1 = time.perf_counter()
        engines.append(PolicyEngine(policy))
        times.append((t1 - t0, time.perf_counter() - t1))
    rates = verdict_rates(engines, obs, args.rounds)
    for n, (validate, compile_s), rate in zip(sizes, times, rates, strict=True):
        print(f"{n:>8} {validate:>11.2f} {compile_s:>10.2f} {rate:>12,.0f} {rate / rates[0]:>7.2f}")

    print()
    workloads, n_rules = 10_000, 50_000
    groups = [group(i) for i in range(workloads)]
    t0 = time.perf_counter()
    policy = policy_of(groups, make_rules(n_rules, workloads, rng))
    t1 = time.perf_counter()
    engine = PolicyEngine(policy)
    t2 = time.perf_counter()
    for i in range(workloads):
        engine.membership(endpoint(i, 0))
    t3 = time.perf_counter()
    print(f"compile at scale: {workloads:,} workload groups, {n_rules:,} rules")
    print(f"{'validate s':>11} {'compile s':>10} {'resolve all workloads s':>24}")
    print(f"{t1 - t0:>11.2f} {t2 - t1:>10.2f} {t3 - t2:>24.2f}")


if __name__ == "__main__":
    main()
