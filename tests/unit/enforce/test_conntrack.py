"""`requeue_decided` (podwall/enforce/conntrack.py) against a recorded `conntrack` tool: which entries
are sent back to the workers after a reload, and with which mark."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from podwall.enforce.conntrack import requeue_decided

LISTING = {
    "ipv4": (
        "tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=10.96.0.60 sport=40000 dport=6379 src=10.0.0.9 "
        "dst=10.0.0.2 sport=6379 dport=40000 [ASSURED] mark=1048576 use=1\n"  # ALLOW
        "tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=10.0.0.9 sport=40001 dport=6379 src=10.0.0.9 "
        "dst=10.0.0.2 sport=6379 dport=40001 [ASSURED] mark=2097152 use=1\n"  # DENY: left alone
        "tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=10.0.0.9 sport=40002 dport=6379 src=10.0.0.9 "
        "dst=10.0.0.2 sport=6379 dport=40002 [ASSURED] mark=1064960 use=1\n"  # ALLOW | 0x4000 (kube-proxy)
        "udp      17 29 src=10.0.0.2 dst=10.0.0.53 sport=5353 dport=53 src=10.0.0.53 dst=10.0.0.2 sport=53 "
        "dport=5353 mark=0 use=1\n"  # not podwall's
    ),
    "ipv6": "",
}


def test_only_allowed_connections_are_requeued_as_seen_and_undecided() -> None:
    """Entries podwall allowed (whatever their other mark bits) get DECIDE|SEEN in podwall's bits only;
    denied and foreign entries are not touched."""
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        out = LISTING[argv[argv.index("-f") + 1]] if "-L" in argv else ""
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    assert requeue_decided(None, runner) == 2
    updates = [c for c in calls if "-U" in c]
    assert [c[c.index("--sport") + 1] for c in updates] == ["40000", "40002"]
    assert all(c[c.index("-m") + 1] == "0xb00000/0xf00000" for c in updates)
    assert updates[0][updates[0].index("-d") + 1] == "10.96.0.60"  # the original tuple, as listed
