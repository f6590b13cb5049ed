"""The built-in sensors: `sensor.creditcard` (one rule per card brand, Luhn-checked) and `sensor.ssn` (US SSN).

Patterns are bounded (at most 21 bytes), so a stream keeps only a short tail to recover a
match. Hyperscan has no lookaround, so each pattern consumes the character before and after
the number and requires it to be a non-digit (or the start / end of the stream): a longer run
of digits is never cut into a card. The verifier then trims those characters off. Card numbers
are plain digits or grouped by spaces or dashes, one separator throughout (4-4-4-4; 4-4-5 for
13-digit Visa; Amex 4-6-5; Diners 4-6-4).
"""

from __future__ import annotations

from functools import cache

from podwall.core.events import Severity
from podwall.inspect.dlp.model import Sensor, SensorPattern, SensorRule, Verify

__all__ = ["BUILTIN_NAMES", "CREDITCARD", "SSN", "builtin_sensor", "builtin_sensors"]

CREDITCARD = "sensor.creditcard"
SSN = "sensor.ssn"
BUILTIN_NAMES = (CREDITCARD, SSN)

_BEFORE = "(?:^|[^0-9])"  # start of the stream or a non-digit
_AFTER = "(?:[^0-9]|$)"  # a non-digit or the end of the stream

# Issuer prefixes written as exactly the first four digits, so that grouped forms need no split.
_FIRST4 = {
    "visa": "4[0-9]{3}",
    "mastercard": "5[1-5][0-9]{2}|222[1-9]|22[3-9][0-9]|2[3-6][0-9]{2}|27[01][0-9]|2720",
    "amex": "3[47][0-9]{2}",
    "discover": "6011|64[4-9][0-9]|65[0-9]{2}",
    "diners": "30[0-5][0-9]|3[689][0-9]{2}",
    "jcb": "352[89]|35[3-8][0-9]",
}
# Digits after the first four, as the sizes of the groups that follow when grouped.
_LAYOUTS = {
    "visa": ((4, 4, 4), (4, 5)),  # 16 digits, or 13
    "mastercard": ((4, 4, 4),),
    "amex": ((6, 5),),
    "discover": ((4, 4, 4),),
    "diners": ((6, 4),),
    "jcb": ((4, 4, 4),),
}


def _card_pattern(brand: str) -> str:
    first = f"(?:{_FIRST4[brand]})"
    forms: list[str] = []
    for groups in _LAYOUTS[brand]:
        forms.append(f"{first}[0-9]{{{sum(groups)}}}")
        for sep in (" ", "-"):
            forms.append(first + "".join(f"{sep}[0-9]{{{n}}}" for n in groups))
    return f"{_BEFORE}(?:{'|'.join(forms)}){_AFTER}"


_SSN_PATTERN = f"{_BEFORE}(?:[0-9]{{3}}-[0-9]{{2}}-[0-9]{{4}}|[0-9]{{3}} [0-9]{{2}} [0-9]{{4}}){_AFTER}"


def _rule(name: str, regex: str, verify: Verify) -> SensorRule:
    return SensorRule(name=name, patterns=[SensorPattern(value=regex)], verify=verify)


@cache
def builtin_sensors() -> tuple[Sensor, ...]:
    """The built-in sensors, validated once per process."""
    cards = Sensor(
        name=CREDITCARD,
        comment="Credit card number",
        severity=Severity.HIGH,
        rules=[_rule(brand, _card_pattern(brand), "luhn") for brand in _FIRST4],
    )
    ssn = Sensor(
        name=SSN,
        comment="US social security number",
        severity=Severity.HIGH,
        rules=[_rule("ssn", _SSN_PATTERN, "ssn")],
    )
    return (cards, ssn)


def builtin_sensor(name: str) -> Sensor | None:
    """A built-in sensor by name, or None."""
    return next((s for s in builtin_sensors() if s.name == name), None)
