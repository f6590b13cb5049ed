"""Verdicts as the NFQUEUE worker hands them to its queue: the decision type, and batching.

A decision is (NF_* verdict, packet mark or None). `send_verdicts` sends a run of packets'
decisions in queue order, one `VERDICT_BATCH` message for each run of consecutive packet ids
with the same decision that directly follows the last id verdicted: a batch verdict covers
every waiting packet up to an id, so it must never cover a packet that was not judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from podwall.datapath.io.nfqueue import NF_ACCEPT, NF_DROP, QueueMessage

__all__ = ["ACCEPT", "DROP", "Decision", "VerdictQueue", "send_verdicts"]

Decision = tuple[int, int | None]  # (NF_* verdict, packet mark or None)

ACCEPT: Decision = (NF_ACCEPT, None)
DROP: Decision = (NF_DROP, None)


class VerdictQueue(Protocol):
    """What the worker needs from a queue (`podwall.datapath.io.nfqueue.NfQueue`, or a fake)."""

    def recv(self, timeout: float | None = ..., max_messages: int = ..., spin: float = ...) -> list[QueueMessage]: ...

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None) -> None: ...

    def verdict_batch(self, max_id: int, verdict: int, mark: int | None = None) -> None: ...


def send_verdicts(
    queue: VerdictQueue,
    messages: Sequence[QueueMessage],
    decisions: Sequence[Decision],
    last_id: int | None,
    batch: bool,
    stats: dict[str, int],
) -> int | None:
    """Send `decisions` (one per message, in queue order); returns the last packet id verdicted.

    `last_id` is the id verdicted before these; `batch` False sends one verdict per packet.
    Counts single verdicts in `stats["verdicts"]` and batch verdicts in `stats["batches"]`."""
    n = len(messages)
    i = 0
    while i < n:
        first = decisions[i]
        j = i
        start = messages[i].packet_id
        contiguous = last_id is not None and start == (last_id + 1) & 0xFFFFFFFF
        while (
            j + 1 < n
            and decisions[j + 1] == first
            and messages[j + 1].packet_id == (messages[j].packet_id + 1) & 0xFFFFFFFF
        ):
            j += 1
        if batch and not contiguous and j > i + 1:
            # After a gap, the run's first packet alone: then the rest follows it without one.
            queue.verdict(start, first[0], first[1])
            stats["verdicts"] += 1
            i += 1
            contiguous = True
        if batch and contiguous and j > i:
            queue.verdict_batch(messages[j].packet_id, first[0], first[1])
            stats["batches"] += 1
        else:
            for k in range(i, j + 1):
                queue.verdict(messages[k].packet_id, first[0], first[1])
                stats["verdicts"] += 1
        last_id = messages[j].packet_id
        i = j + 1
    return last_id
