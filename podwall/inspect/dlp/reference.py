"""The same sensors with Python's `re`: a baseline for the benchmark and an oracle for the tests.

Hyperscan reports every match with its leftmost start, overlapping ones included; `re.finditer`
consumes what it matched. To see the same matches, each pattern is wrapped in a lookahead
(`(?=(P))`), which tries it at every position. For the built-in patterns (each start has one
possible end) the two agree exactly; for patterns that can end in several places from one start
hyperscan's first (shortest) end and `re`'s greedy one may differ. Only stream rules (packet
context, all positive) are covered, over one whole buffer: `re` cannot scan a stream.

By default each pattern makes its own pass over the buffer. `combined=True` joins them into one
alternation and one pass (the fastest plain-`re` form); it reports one pattern per start
position, which is exact when no two patterns can match from the same start (true of the
built-ins: brands differ in their first digits, SSNs have a separator after three).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from podwall.core.errors import InputError, Location, Problem
from podwall.inspect.dlp.model import Sensor, pattern_path
from podwall.inspect.dlp.scanner import RuleInfo, rule_info, value_of
from podwall.inspect.findings import Action, Finding

__all__ = ["ReferenceScanner"]


class ReferenceScanner:
    """Scans a buffer with one `re` pattern per stream-rule pattern; findings as `DlpEngine.scan` gives them."""

    def __init__(
        self, sensors: Sequence[Sensor], actions: Mapping[str, Action] | None = None, *, combined: bool = False
    ) -> None:
        acts = actions or {}
        self._rules: list[RuleInfo] = []
        self._patterns: list[tuple[int, int, re.Pattern[bytes]]] = []  # (rule, pattern index, compiled)
        self._sources: list[bytes] = []
        problems: list[Problem] = []
        for sensor in sensors:
            for r, rule in enumerate(sensor.rules):
                if not rule.streamed:
                    continue
                self._rules.append(rule_info(sensor, r, acts.get(sensor.name, Action.ALERT)))
                for p, pattern in enumerate(rule.patterns):
                    try:
                        source = pattern.value.encode("utf-8")
                        rx = re.compile(b"(?=(" + source + b"))")
                    except re.error as exc:
                        at = Location(obj=sensor.name, path=pattern_path(r, rule.name, p))
                        problems.append(Problem(at, f"Python re cannot compile {pattern.value!r}: {exc}"))
                        continue
                    self._patterns.append((len(self._rules) - 1, p, rx))
                    self._sources.append(source)
        if problems:
            raise InputError("DLP sensors (Python re reference)", problems)
        self._combined: re.Pattern[bytes] | None = None
        if combined and self._patterns:
            alternatives = b"|".join(b"(?P<_pw%d>%s)" % (pid, src) for pid, src in enumerate(self._sources))
            self._combined = re.compile(b"(?=(?:" + alternatives + b"))")
        self._names = [f"_pw{pid}" for pid in range(len(self._sources))]

    def _hits(self, data: bytes) -> list[tuple[int, int, int]]:
        hits: list[tuple[int, int, int]] = []  # (end, pattern, start)
        if self._combined is not None:
            for m in self._combined.finditer(data):
                pid, name = next((i, name) for i, name in enumerate(self._names) if m.start(name) >= 0)
                hits.append((m.end(name), pid, m.start(name)))
        else:
            for pid, (_rule, _index, rx) in enumerate(self._patterns):
                hits.extend((m.end(1), pid, m.start(1)) for m in rx.finditer(data))
        hits.sort()
        return hits

    def scan(self, data: bytes) -> list[Finding]:
        """Every finding in `data`, in the order hyperscan would report them (by where the match ends)."""
        hits = self._hits(data)
        found: list[Finding] = []
        pending: dict[int, set[int]] = {}
        for end, pid, start in hits:
            rule_index, index, _rx = self._patterns[pid]
            info = self._rules[rule_index]
            got = value_of(data[start:end], info.verifier, False)
            if got is None:
                continue
            if info.needed > 1:
                seen = pending.setdefault(rule_index, set())
                seen.add(index)
                if len(seen) < info.needed:
                    continue
                del pending[rule_index]
            vstart, vend, masked = got
            at = start + vstart
            detail: dict[str, Any] = {"offset": at, "length": vend - vstart, "context": "packet"}
            found.append(info.finding(masked, f"offset {at}", None, detail))
        return found
