"""Apply, read back, reconcile and remove the L3/L4 ruleset inside a network namespace (I/O).

Applying is all or nothing per piece: the iptables handoff chain is replaced first with
`iptables-restore --noflush` (harmless on its own: it only acts on marks the nft table sets),
then table `inet podwall` with one `nft -f -` transaction, so the kernel never holds a half
table and a failed apply leaves the previous ruleset in force. After each apply the kernel's own
view is read back (`nft -j list table`, `iptables -S`) and kept as the fingerprint that
`Enforcer.reconcile` compares against: any difference (a flushed table, a deleted jump, a
failed earlier apply) makes it apply the desired state again.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from podwall.core.errors import PodwallError
from podwall.enforce import iptables
from podwall.enforce.nft import TABLE, render_delete, render_ruleset
from podwall.enforce.plan import KernelPlan

Runner = Callable[[Sequence[str], str | None], "subprocess.CompletedProcess[str]"]
TOOLS = {4: ("iptables", "iptables-restore"), 6: ("ip6tables", "ip6tables-restore")}


class ApplyError(PodwallError):
    """The kernel refused a ruleset or could not be read; the message names the command and why."""


def run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, feeding `stdin`; never raises for a non-zero exit."""
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` run inside a named network namespace (None: the current one)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


@dataclass(frozen=True, slots=True)
class KernelState:
    """What the kernel holds of podwall's ruleset, normalised so that two reads compare equal."""

    table: tuple[str, ...]  # one JSON text per nft object, handles removed; empty: no table
    chains: tuple[tuple[str, ...], ...]  # `iptables -S` of podwall's chains, then `ip6tables -S` of them
    jumps: tuple[bool, ...]  # for each family and hook: is the jump into the chain present?

    @property
    def present(self) -> bool:
        return bool(self.table)


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "handle"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


class Enforcer:
    """The L3/L4 ruleset of one network namespace: apply a plan, check for drift, reconcile, remove."""

    def __init__(
        self,
        netns: str | None,
        queue: iptables.QueueConfig | None = None,
        *,
        table: str = TABLE,
        runner: Runner = run,
    ) -> None:
        self.netns = netns
        self.queue = queue or iptables.QueueConfig()
        self.table = table
        self._run = runner
        self.desired: KernelPlan | None = None
        self.applied: KernelState | None = None  # the kernel's view right after the last good apply

    def _exec(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
        done = self._run(in_netns(self.netns, argv), stdin)
        if check and done.returncode != 0:
            where = f" in {self.netns}" if self.netns else ""
            raise ApplyError(f"`{' '.join(argv)}`{where} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout if done.returncode == 0 else ""

    # -- apply -----------------------------------------------------------------------------

    def apply(self, plan: KernelPlan) -> KernelState:
        """Make the kernel hold `plan` (handoff chain, then the table); returns the state read back.

        On failure the plan stays desired and the next `reconcile` tries again.
        """
        self.desired = plan
        self.applied = None
        for family in (4, 6):
            tool, restore_tool = TOOLS[family]
            self._exec([restore_tool, "--noflush"], iptables.render_restore(self.queue, family))
            for hook, rule in iptables.jump_rules():
                if self._run(in_netns(self.netns, [tool, "-C", hook, *rule]), None).returncode != 0:
                    self._exec([tool, "-I", hook, "1", *rule])
        self._exec(["nft", "-f", "-"], render_ruleset(plan, self.table))
        self.applied = self.read()
        return self.applied

    def read(self) -> KernelState:
        """The kernel's current view of the ruleset."""
        listing = self._run(in_netns(self.netns, ["nft", "-j", "list", "table", "inet", self.table]), None)
        table: tuple[str, ...] = ()
        if listing.returncode == 0:
            try:
                objects = json.loads(listing.stdout)["nftables"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ApplyError(f"cannot read `nft -j list table inet {self.table}`: {exc}") from None
            table = tuple(json.dumps(_strip(o), sort_keys=True) for o in objects if "metainfo" not in o)
        chains = []
        jumps = []
        for family in (4, 6):
            tool = TOOLS[family][0]
            listed: list[str] = []
            for chain in iptables.CHAINS:
                listed += self._exec([tool, "-S", chain], check=False).splitlines()
            chains.append(tuple(listed))
            for hook, rule in iptables.jump_rules():
                jumps.append(self._run(in_netns(self.netns, [tool, "-C", hook, *rule]), None).returncode == 0)
        return KernelState(table, tuple(chains), tuple(jumps))

    # -- drift -----------------------------------------------------------------------------

    def drift(self) -> list[str]:
        """How the kernel differs from the last good apply (empty: no drift, or nothing desired)."""
        if self.desired is None:
            return []
        if self.applied is None:
            return ["the last apply did not complete"]
        now = self.read()
        out = []
        if not now.present:
            out.append(f"table inet {self.table} is missing")
        elif now.table != self.applied.table:
            out.append(f"table inet {self.table} was changed")
        if now.chains != self.applied.chains:
            out.append(f"iptables chains {', '.join(iptables.CHAINS)} were changed")
        if now.jumps != self.applied.jumps:
            out.append(f"a jump into {iptables.CHAIN} is missing")
        return out

    def reconcile(self) -> list[str]:
        """Re-apply the desired plan if the kernel drifted from it; returns the drift found.

        Raises ApplyError when re-applying fails (the caller retries later)."""
        found = self.drift()
        if found and self.desired is not None:
            self.apply(self.desired)
        return found

    # -- remove ----------------------------------------------------------------------------

    def remove(self) -> None:
        """Take the ruleset out (table first, so nothing is marked for a chain that is gone);
        idempotent. Connections keep their conntrack marks but nothing reads them any more."""
        self._exec(["nft", "-f", "-"], render_delete(self.table))
        for family in (4, 6):
            tool = TOOLS[family][0]
            for hook, rule in iptables.jump_rules():
                while self._run(in_netns(self.netns, [tool, "-C", hook, *rule]), None).returncode == 0:
                    self._exec([tool, "-D", hook, *rule])
            # Flushed first, then deleted: the chains jump to one another.
            present = [
                chain
                for chain in iptables.CHAINS
                if self._run(in_netns(self.netns, [tool, "-S", chain]), None).returncode == 0
            ]
            for chain in present:
                self._exec([tool, "-F", chain])
            for chain in present:
                self._exec([tool, "-X", chain])
        self.desired = None
        self.applied = None


def apply_ruleset(
    netns: str | None, plan: KernelPlan, queue: iptables.QueueConfig | None = None, *, runner: Runner = run
) -> Enforcer:
    """Apply `plan` in `netns` once; returns the Enforcer to reconcile or remove it later."""
    enforcer = Enforcer(netns, queue, runner=runner)
    enforcer.apply(plan)
    return enforcer


def remove_ruleset(netns: str | None, *, runner: Runner = run) -> None:
    """Remove podwall's table and handoff chain from `netns`, whatever an earlier run left."""
    Enforcer(netns, runner=runner).remove()
