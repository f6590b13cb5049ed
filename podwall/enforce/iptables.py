"""iptables-nft rendering of the NFQUEUE handoff (pure): this kernel lacks nft's `queue`, so the
connections the `inet podwall` table marks for userspace are queued by an iptables chain.

The chain `PODWALL` (filter table, IPv4 and IPv6 alike) is jumped to first from FORWARD, INPUT
and OUTPUT. It runs after the nft table (priority 0 against -5) and acts on the conntrack
mark that table (or the worker) wrote:

1. a packet coming back from the worker carries its verdict in the packet mark (NF_REPEAT
   re-runs this hook): save it to the connection;
2. decided allowed: accept (the fast path for the rest of the connection);
3. decided denied: TCP reset, anything else dropped (the resets themselves pass);
4. undecided, the verdict needs the payload: NFQUEUE, with `--queue-bypass` only if the
   enforcer is configured to fail open;
5. a monitor/discover violation to record: NFQUEUE, always bypassing (it is accepted anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

from podwall.enforce.plan import MARK_ALLOW, MARK_DECIDE, MARK_DENY, MARK_MASK, MARK_OBSERVE

CHAIN = "PODWALL"
HOOKS = ("FORWARD", "INPUT", "OUTPUT")
QUEUE_FIRST = 100  # away from 0, the default of most NFQUEUE users (Suricata, Snort)
QUEUE_COUNT = 2


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The NFQUEUE numbers the workers bind (`first` .. `first + count - 1`) and the fail mode.

    `fail_open`: when no worker listens, undecided connections are accepted unchecked (True) or
    their packets dropped (False). A hung worker blocks its queue either way until the kernel
    queue fills (docs/enforce.md).
    """

    first: int = QUEUE_FIRST
    count: int = QUEUE_COUNT
    fail_open: bool = True

    def __post_init__(self) -> None:
        if not self.count >= 1 or not self.first >= 0 or self.first + self.count - 1 > 65535:
            raise ValueError(f"queues {self.first}..{self.first + self.count - 1} are outside 0-65535")

    @property
    def numbers(self) -> range:
        return range(self.first, self.first + self.count)


def _mark(value: int) -> str:
    return f"0x{value:x}/0x{MARK_MASK:x}"


def _queue(queue: QueueConfig, bypass: bool) -> str:
    target = (
        f"--queue-num {queue.first}"
        if queue.count == 1
        else f"--queue-balance {queue.first}:{queue.first + queue.count - 1}"
    )
    return f"-j NFQUEUE {target}" + (" --queue-bypass" if bypass else "")


def chain_rules(queue: QueueConfig, chain: str = CHAIN) -> list[str]:
    """The rules of the handoff chain, as `iptables -S` prints them."""
    save = f"-j CONNMARK --save-mark --nfmask 0x{MARK_MASK:x} --ctmask 0x{MARK_MASK:x}"
    return [
        f"-A {chain} -m mark --mark {_mark(MARK_ALLOW)} {save}",
        f"-A {chain} -m mark --mark {_mark(MARK_DENY)} {save}",
        f"-A {chain} -m connmark --mark {_mark(MARK_ALLOW)} -j ACCEPT",
        # The resets that cut a denied connection (REJECT's, towards the client) are sent from this
        # namespace on the same connection: they pass, or the next rule would swallow them.
        f"-A {chain} -p tcp -m tcp --tcp-flags RST RST -m connmark --mark {_mark(MARK_DENY)} -j ACCEPT",
        f"-A {chain} -p tcp -m connmark --mark {_mark(MARK_DENY)} -j REJECT --reject-with tcp-reset",
        f"-A {chain} -m connmark --mark {_mark(MARK_DENY)} -j DROP",
        f"-A {chain} -m connmark --mark {_mark(MARK_DECIDE)} {_queue(queue, queue.fail_open)}",
        f"-A {chain} -m connmark --mark {_mark(MARK_OBSERVE)} {_queue(queue, True)}",
    ]


def render_restore(queue: QueueConfig, chain: str = CHAIN) -> str:
    """An `iptables-restore --noflush` (or `ip6tables-restore`) script that replaces the chain's
    rules atomically, leaving every other chain alone. The jumps from the hooks are kept apart
    (`jump_rules`): they must not be duplicated on each apply."""
    return "\n".join(["*filter", f":{chain} - [0:0]", *chain_rules(queue, chain), "COMMIT"]) + "\n"


def jump_rules(chain: str = CHAIN) -> list[tuple[str, list[str]]]:
    """(hook, rule arguments) of the jumps into the chain, for `-C` / `-I hook 1` / `-D`."""
    return [(hook, ["-j", chain]) for hook in HOOKS]
