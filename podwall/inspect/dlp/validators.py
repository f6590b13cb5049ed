"""Checks a regex cannot express, run on each candidate match: card numbers' Luhn digit, SSN number ranges.

A verifier receives the raw bytes a pattern matched. The built-in patterns consume the
non-digit on each side of a number (hyperscan has no lookaround), so the verifier first trims
the match to its digits-and-separators core, then checks it. It returns where the value lies
inside the match (so the finding's offset points at the value itself) or None to drop it, and
says how much of the value masking keeps in clear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from podwall.inspect.findings import mask_value

__all__ = ["VERIFIERS", "Verifier", "luhn_ok", "mask_match", "ssn_ok"]

_NOT_DIGITS = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # digit d doubled, digits summed
# Published in advertising and widely misused; never issued to a person.
_SSN_ADVERTISING = frozenset({b"078051120", b"219099999"})


def luhn_ok(digits: bytes) -> bool:
    """True when `digits` (ASCII digits only) passes the Luhn mod-10 check."""
    total = 0
    doubled = False  # the rightmost digit is the check digit, not doubled
    for ch in reversed(digits):
        d = ch - 0x30
        total += _DOUBLED[d] if doubled else d
        doubled = not doubled
    return total % 10 == 0


def _card_ok(digits: bytes) -> bool:
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def ssn_ok(digits: bytes) -> bool:
    """True for a 9-digit US SSN the SSA could have issued: area not 000/666/9xx, group not 00, serial not 0000."""
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in (b"000", b"666") or area[0] == 0x39 or group == b"00" or serial == b"0000":
        return False
    return digits not in _SSN_ADVERTISING


@dataclass(frozen=True, slots=True)
class Verifier:
    """A named check on the digits of a match, and how much of the value masking keeps."""

    name: str
    check: Callable[[bytes], bool]
    keep_start: int
    keep_end: int

    def span(self, raw: bytes) -> tuple[int, int] | None:
        """Where the valid value lies in `raw` (first to last digit), or None when it is not valid."""
        start = 0
        end = len(raw)
        while start < end and not 0x30 <= raw[start] <= 0x39:
            start += 1
        while end > start and not 0x30 <= raw[end - 1] <= 0x39:
            end -= 1
        if start == end:
            return None
        return (start, end) if self.check(raw[start:end].translate(None, _NOT_DIGITS)) else None

    def mask(self, value: str) -> str:
        return mask_value(value, self.keep_start, self.keep_end)


VERIFIERS: dict[str, Verifier] = {
    # PCI DSS allows showing the first six and last four; the first and last four say enough.
    "luhn": Verifier("luhn", _card_ok, keep_start=4, keep_end=4),
    "ssn": Verifier("ssn", ssn_ok, keep_start=0, keep_end=4),
}


def mask_match(value: str) -> str:
    """Mask a value of a rule without verifier: at most a quarter of it (and 4 characters) shows at each end."""
    alnum = sum(1 for ch in value if ch.isalnum())
    keep = min(4, alnum // 4)
    return mask_value(value, keep, keep)
