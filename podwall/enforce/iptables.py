"""iptables-nft rendering of the NFQUEUE handoff (pure): this kernel lacks nft's `queue`, so the
connections the `inet podwall` table marks for userspace are queued by iptables chains.

The chain `PODWALL` (filter table, IPv4 and IPv6 alike) is jumped to first from FORWARD, INPUT
and OUTPUT. It runs after the nft table (priority 0 against -5) and acts on the conntrack
mark that table (or the worker) wrote:

1. a packet coming back from the worker carries its verdict in the packet mark (NF_REPEAT
   re-runs this hook): save it to the connection;
2. decided allowed: accept (the fast path for the rest of the connection);
3. decided denied: TCP reset, anything else dropped (the resets themselves pass);
4. undecided, the verdict needs the payload: queue, with `--queue-bypass` only if the enforcer
   is configured to fail open;
5. a monitor/discover violation to record: queue, always bypassing (it is accepted anyway).

Only packets that can carry something for the DPI are queued (`PODWALL-Q`): every non-TCP
packet, and TCP segments with at least one payload byte (`PODWALL-PAYLOAD`, u32 tests of the IP
length against the TCP header length). Bare handshake, ACK, FIN and RST segments of an
undecided connection pass without a trip to userspace: they deliver no data, and the worker
rebuilds the handshake from the first payload segment. Before a packet is queued its mark gets
podwall's flags (`plan.PKT_*`): queued, sent in the reply direction (conntrack knows which end
opened the connection, the worker does not), and first of its connection to be queued (a new
connection, even on a reused address/port pair); the connection's mark gets `MARK_SEEN`.
"""

from __future__ import annotations

from dataclasses import dataclass

from podwall.enforce.plan import (
    MARK_ALLOW,
    MARK_DECIDE,
    MARK_DENY,
    MARK_MASK,
    MARK_OBSERVE,
    MARK_SEEN,
    MARK_VALUE,
    PKT_FIRST,
    PKT_QUEUED,
    PKT_REPLY,
)

CHAIN = "PODWALL"
CHAIN_QUEUE = "PODWALL-Q"
CHAIN_PAYLOAD = "PODWALL-PAYLOAD"
CHAINS = (CHAIN, CHAIN_QUEUE, CHAIN_PAYLOAD)
HOOKS = ("FORWARD", "INPUT", "OUTPUT")
QUEUE_FIRST = 100  # away from 0, the default of most NFQUEUE users (Suricata, Snort)
QUEUE_COUNT = 2
# TCP data offsets (header length / 4) with a payload test each, the usual ones first: 8 is a
# segment with timestamps, 5 one without options; a SYN (10) carries no payload as a rule.
_DATA_OFFSETS = (8, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15)


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


def _hex(value: int) -> str:
    return f"0x{value:x}"


def _value(value: int) -> str:
    """A match on one of podwall's verdict values, ignoring the `MARK_SEEN` flag."""
    return f"{_hex(value)}/{_hex(MARK_VALUE)}"


def _queue(queue: QueueConfig, bypass: bool) -> str:
    target = (
        f"--queue-num {queue.first}"
        if queue.count == 1
        else f"--queue-balance {queue.first}:{queue.first + queue.count - 1}"
    )
    return f"-j NFQUEUE {target}" + (" --queue-bypass" if bypass else "")


def _u32(test: str, negate: bool = False) -> str:
    return f'-m u32 {"! " if negate else ""}--u32 "{test}"'


def payload_tests(family: int) -> list[tuple[str, bool]]:
    """(u32 test, negated) pairs, in `iptables -S` form; a TCP segment matching any of them may
    carry payload. Where the headers cannot be measured with u32 (IPv4 options, IPv6 extension
    headers, an IPv4 GSO packet above 64 KiB whose length field is 0) the segment counts as
    carrying payload: it is queued, never waved through."""
    if family == 4:
        # ihl * 4 == 20; then the TCP data offset sits in the top nibble of byte 32 and the IP
        # total length in the low half of word 0: payload iff total >= 20 + 4 * doff + 1.
        tests = [("0x0>>0x16&0x3c=0x14", True), ("0x0&0xffff=0x0", False)]
        tests += [(f"0x20>>0x1c={_hex(d)}&&0x0&0xffff={_hex(21 + 4 * d)}:0xffff", False) for d in _DATA_OFFSETS]
        return tests
    # The next header must be TCP (6) for the fixed offsets; the payload length (upper half of
    # word 4) counts the TCP header and data: payload iff it is >= 4 * doff + 1.
    tests = [("0x4>>0x8&0xff=0x6", True)]
    tests += [(f"0x34>>0x1c={_hex(d)}&&0x4>>0x10={_hex(1 + 4 * d)}:0xffff", False) for d in _DATA_OFFSETS]
    return tests


def chain_rules(queue: QueueConfig, family: int = 4) -> list[str]:
    """The rules of the handoff chains for one address family, as `iptables -S` prints them."""
    save = f"-j CONNMARK --save-mark --nfmask {_hex(MARK_MASK)} --ctmask {_hex(MARK_MASK)}"
    full = f"/{_hex(MARK_MASK)}"
    rules = [
        f"-A {CHAIN} -m mark --mark {_hex(MARK_ALLOW)}{full} {save}",
        f"-A {CHAIN} -m mark --mark {_hex(MARK_DENY)}{full} {save}",
        f"-A {CHAIN} -m connmark --mark {_value(MARK_ALLOW)} -j ACCEPT",
        # The resets that cut a denied connection (REJECT's, towards the client) are sent from this
        # namespace on the same connection: they pass, or the next rule would swallow them.
        f"-A {CHAIN} -p tcp -m tcp --tcp-flags RST RST -m connmark --mark {_value(MARK_DENY)} -j ACCEPT",
        f"-A {CHAIN} -p tcp -m connmark --mark {_value(MARK_DENY)} -j REJECT --reject-with tcp-reset",
        f"-A {CHAIN} -m connmark --mark {_value(MARK_DENY)} -j DROP",
        f"-A {CHAIN} -m connmark --mark {_value(MARK_DECIDE)} -j {CHAIN_QUEUE}",
        f"-A {CHAIN} -m connmark --mark {_value(MARK_DECIDE)} {_queue(queue, queue.fail_open)}",
        f"-A {CHAIN} -m connmark --mark {_value(MARK_OBSERVE)} -j {CHAIN_QUEUE}",
        f"-A {CHAIN} -m connmark --mark {_value(MARK_OBSERVE)} {_queue(queue, True)}",
        # PODWALL-Q returns only packets to queue (a bare TCP segment is accepted in
        # PODWALL-PAYLOAD), flagged for the worker.
        f"-A {CHAIN_QUEUE} -p tcp -j {CHAIN_PAYLOAD}",
        f"-A {CHAIN_QUEUE} -j MARK --set-xmark {_hex(PKT_QUEUED)}{full}",
        f"-A {CHAIN_QUEUE} -m conntrack --ctdir REPLY -j MARK --set-xmark {_hex(PKT_REPLY)}/{_hex(PKT_REPLY)}",
        f"-A {CHAIN_QUEUE} -m connmark --mark 0x0/{_hex(MARK_SEEN)} -j MARK --set-xmark "
        f"{_hex(PKT_FIRST)}/{_hex(PKT_FIRST)}",
        f"-A {CHAIN_QUEUE} -j CONNMARK --set-xmark {_hex(MARK_SEEN)}/{_hex(MARK_SEEN)}",
    ]
    rules += [f"-A {CHAIN_PAYLOAD} {_u32(test, negate)} -j RETURN" for test, negate in payload_tests(family)]
    rules.append(f"-A {CHAIN_PAYLOAD} -j ACCEPT")
    return rules


def render_restore(queue: QueueConfig, family: int = 4) -> str:
    """An `iptables-restore --noflush` (or `ip6tables-restore`) script that replaces the chains'
    rules atomically, leaving every other chain alone. The jumps from the hooks are kept apart
    (`jump_rules`): they must not be duplicated on each apply."""
    heads = [f":{chain} - [0:0]" for chain in CHAINS]
    return "\n".join(["*filter", *heads, *chain_rules(queue, family), "COMMIT"]) + "\n"


def jump_rules(chain: str = CHAIN) -> list[tuple[str, list[str]]]:
    """(hook, rule arguments) of the jumps into the chain, for `-C` / `-I hook 1` / `-D`."""
    return [(hook, ["-j", chain]) for hook in HOOKS]
