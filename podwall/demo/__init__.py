"""The bundled demo: NeuVector's nginx -> node -> redis application and an intruder.

`run_demo` shows the conversations of the normal traffic, learns the whitelist from it,
checks the normal traffic (no violation) and then the traffic with the exploit, whose
violations it prints with their explanations. It checks itself: it returns 0 only when the
exploit capture yields exactly the expected violations.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from podwall.analysis.check import check, dns_service_groups, learn_policy, violation_events
from podwall.analysis.conversations import aggregate
from podwall.analysis.runner import read_flows
from podwall.cli import render
from podwall.inventory.loader import load_inventory
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.formats.podwall_yaml import dump_policy
from podwall.store.events import EventStore

DEMO_DIR = Path(__file__).parent
INVENTORY = DEMO_DIR / "inventory.yaml"
NORMAL = DEMO_DIR / "normal.pcapng"
EXPLOIT = DEMO_DIR / "exploit.pcapng"


def run_demo(console: Console, *, db: str | None = None, no_store: bool = False, workdir: Path | None = None) -> int:
    from podwall.demo.generate import EXPECTED_VIOLATIONS

    inventory = load_inventory([str(INVENTORY)])
    resolver = Resolver(inventory)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="podwall-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)

    console.rule("[bold]1. What the demo application does (normal.pcapng)")
    normal = list(read_flows([NORMAL], resolver))
    console.print(render.conversations_table(aggregate(normal)))

    console.rule("[bold]2. Learn the whitelist from it (discover), groups set to protect")
    policy, learned_events = learn_policy(normal, inventory, resolver, mode="protect", source=str(NORMAL))
    policy_path = workdir / "policy.yaml"
    policy_path.write_text(dump_policy(policy))
    console.print(render.rules_table(policy, title=f"Learned rules (written to {policy_path})"))

    engine = PolicyEngine(policy, dns_service_groups=dns_service_groups(inventory, resolver))
    console.rule("[bold]3. Check the normal traffic against the learned policy")
    normal_items = check(normal, engine)
    normal_violations = [i for i in normal_items if i.verdict.violation]
    console.print(f"{len(normal_violations)} violation(s) in {len(normal_items)} conversation(s)")

    console.rule("[bold]4. Check the traffic with the exploit (exploit.pcapng)")
    exploit = list(read_flows([EXPLOIT], resolver))
    items = check(exploit, engine)
    console.print(render.verdicts_table(items))
    render.print_violations(console, items)
    found = {
        (
            i.conversation.client_group,
            i.conversation.server_group,
            i.conversation.server_port,
            i.conversation.application,
        )
        for i in items
        if i.verdict.violation
    }
    events = violation_events(items, str(EXPLOIT))
    if not no_store:
        store = EventStore(db)
        try:
            store.add(learned_events + events)
        finally:
            store.close()
        console.print(
            f"{len(learned_events)} learned and {len(events)} violation event(s) stored; see `podwall events`"
        )

    ok = not normal_violations and found == EXPECTED_VIOLATIONS
    if ok:
        console.print(f"[bold green]demo ok:[/] the learned policy flags exactly the {len(found)} expected violations")
        return 0
    console.print(
        "[bold red]demo mismatch:[/] expected violations", sorted(EXPECTED_VIOLATIONS), "found", sorted(found)
    )
    return 1
