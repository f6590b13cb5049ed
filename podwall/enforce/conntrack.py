"""Conntrack operations of `podwall enforce` (I/O, through the `conntrack` tool in the node's namespace).

`requeue_decided` sends connections podwall had decided allowed back to the workers after a
policy change: their conntrack mark is rewritten so that their next payload packet is queued
again (docs/enforce.md, "Reload").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from podwall.enforce.apply import in_netns, run
from podwall.enforce.plan import MARK_ALLOW, MARK_DECIDE, MARK_MASK, MARK_SEEN, MARK_VALUE

__all__ = ["requeue_decided"]

log = logging.getLogger(__name__)


def _fields(line: str) -> tuple[str, dict[str, str], int] | None:
    """(protocol, first src/dst/sport/dport, mark) of one `conntrack -L` line."""
    parts = line.split()
    if not parts:
        return None
    tuple_: dict[str, str] = {}
    mark = 0
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            continue
        if key in ("src", "dst", "sport", "dport") and key not in tuple_:
            tuple_[key] = value
        elif key == "mark":
            mark = int(value)
    return parts[0], tuple_, mark


def requeue_decided(netns: str | None, runner: Callable[..., Any] = run) -> int:
    """Re-mark every connection podwall had decided allowed as undecided, so that its next packet
    is judged again by the workers (after a policy change). Returns how many were re-marked."""
    count = 0
    for family in ("ipv4", "ipv6"):
        listing = runner(in_netns(netns, ["conntrack", "-L", "-f", family]), None)
        if listing.returncode != 0:
            log.warning("cannot list connections (%s): %s", family, (listing.stderr or "").strip())
            continue
        for line in listing.stdout.splitlines():
            parsed = _fields(line)
            if parsed is None:
                continue
            proto, t, mark = parsed
            if mark & MARK_VALUE != MARK_ALLOW or len(t) != 4:
                continue
            argv = ["conntrack", "-U", "-f", family, "-p", proto, "-s", t["src"], "-d", t["dst"]]
            # Undecided, but seen before: its next payload packet is not taken for a new connection's
            # first, so the worker judges it with the application it already knows.
            requeued = MARK_DECIDE | MARK_SEEN
            argv += ["--sport", t["sport"], "--dport", t["dport"], "-m", f"{requeued:#x}/{MARK_MASK:#x}"]
            done = runner(in_netns(netns, argv), None)
            if done.returncode == 0:
                count += 1
            else:  # the connection ended meanwhile, most likely
                log.debug("cannot re-mark %s: %s", " ".join(argv), (done.stderr or "").strip())
    return count
