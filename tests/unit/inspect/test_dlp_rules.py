"""The built-in DLP sensors: every card brand and the SSN rule, their near misses, Luhn/SSN checks and masking."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from podwall.inspect.dlp import DlpEngine, builtin_sensors
from podwall.inspect.dlp.validators import VERIFIERS, luhn_ok, mask_match, ssn_ok
from podwall.inspect.findings import Action, FindingKind


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DlpEngine:
    return DlpEngine(builtin_sensors(), cache_dir=tmp_path_factory.mktemp("hs"))


def _luhn_complete(prefix: str, length: int) -> str:
    """`prefix` padded with a fixed digit pattern to `length` digits, with a valid Luhn check digit."""
    body = (prefix + "3957104862" * 2)[: length - 1]
    return next(body + d for d in "0123456789" if luhn_ok((body + d).encode()))


def _bad_luhn(number: str) -> str:
    last = number[-1]
    return number[:-1] + str((int(last) + 1) % 10)


def _group(number: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, at = [], 0
    for n in sizes:
        parts.append(number[at : at + n])
        at += n
    return sep.join(parts)


# (rule, issuer prefix, digits, grouping)
CARDS = [
    ("visa", "4", 16, (4, 4, 4, 4)),
    ("visa", "4", 13, (4, 4, 5)),
    ("mastercard", "51", 16, (4, 4, 4, 4)),
    ("mastercard", "55", 16, (4, 4, 4, 4)),
    ("mastercard", "2221", 16, (4, 4, 4, 4)),
    ("mastercard", "2720", 16, (4, 4, 4, 4)),
    ("mastercard", "2500", 16, (4, 4, 4, 4)),
    ("amex", "34", 15, (4, 6, 5)),
    ("amex", "37", 15, (4, 6, 5)),
    ("discover", "6011", 16, (4, 4, 4, 4)),
    ("discover", "644", 16, (4, 4, 4, 4)),
    ("discover", "649", 16, (4, 4, 4, 4)),
    ("discover", "65", 16, (4, 4, 4, 4)),
    ("diners", "300", 14, (4, 6, 4)),
    ("diners", "305", 14, (4, 6, 4)),
    ("diners", "36", 14, (4, 6, 4)),
    ("jcb", "3528", 16, (4, 4, 4, 4)),
    ("jcb", "3589", 16, (4, 4, 4, 4)),
]
FORMS = [("plain", ""), ("spaces", " "), ("dashes", "-")]


@pytest.mark.parametrize("form,sep", FORMS, ids=[f[0] for f in FORMS])
@pytest.mark.parametrize("rule,prefix,length,sizes", CARDS, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CARDS])
def test_card_brand_is_found_in_each_form(
    engine: DlpEngine, rule: str, prefix: str, length: int, sizes: tuple[int, ...], form: str, sep: str
) -> None:
    """A Luhn-valid number of each brand, plain or grouped, is one finding of that brand's rule, masked."""
    number = _luhn_complete(prefix, length)
    text = number if not sep else _group(number, sizes, sep)
    found = engine.scan(f"paid with {text}.".encode())
    assert [f.id for f in found] == [f"dlp.sensor.creditcard/{rule}"]
    f = found[0]
    assert f.kind is FindingKind.DLP
    assert f.match == VERIFIERS["luhn"].mask(text)
    assert f.match.count("*") == length - 8
    assert f.detail["offset"] == len("paid with ")
    assert f.detail["length"] == len(text)


NEAR_MISS_CARDS = [
    ("wrong-luhn", lambda n: _bad_luhn(n)),
    ("longer-digit-run-after", lambda n: n + "7"),
    ("longer-digit-run-before", lambda n: "9" + n),
    ("mixed-separators", lambda n: f"{n[:4]} {n[4:8]}-{n[8:12]} {n[12:]}"),
    ("misplaced-group", lambda n: f"{n[:3]} {n[3:8]} {n[8:12]} {n[12:]}"),
    ("unknown-issuer-prefix", lambda n: _luhn_complete("9", 16)),
    ("mastercard-2220", lambda n: _luhn_complete("2220", 16)),
    ("mastercard-2721", lambda n: _luhn_complete("2721", 16)),
    ("discover-643", lambda n: _luhn_complete("643", 16)),
    ("visa-15-digits", lambda n: _luhn_complete("4", 15)),
]


@pytest.mark.parametrize("make", [m for _, m in NEAR_MISS_CARDS], ids=[i for i, _ in NEAR_MISS_CARDS])
def test_card_near_misses_are_not_found(engine: DlpEngine, make: Callable[[str], str]) -> None:
    """Numbers that look like cards but fail Luhn, issuer ranges, grouping or digit boundaries are not reported."""
    text = make(_luhn_complete("4", 16))
    assert [f.id for f in engine.scan(f"id {text} end".encode())] == []


def test_every_card_of_a_list_is_found_once(engine: DlpEngine) -> None:
    """Cards separated by a single comma or newline share their boundary character and are all found."""
    cards = [_luhn_complete(p, n) for _, p, n, _ in CARDS]
    found = engine.scan(",".join(cards).encode() + b"\n" + "\n".join(cards).encode())
    assert [f.detail["length"] for f in found] == [len(c) for c in cards] * 2


SSNS = [
    ("dashes", "123-45-6789", "***-**-6789"),
    ("spaces", "123 45 6789", "*** ** 6789"),
    ("area-001", "001-01-0001", "***-**-0001"),
    ("area-665", "665-12-3456", "***-**-3456"),
    ("area-899", "899-99-9999", "***-**-9999"),
]


@pytest.mark.parametrize("text,masked", [(t, m) for _, t, m in SSNS], ids=[i for i, _, _ in SSNS])
def test_ssn_is_found_and_masked_to_its_last_four(engine: DlpEngine, text: str, masked: str) -> None:
    """A valid SSN with dashes or spaces is one `dlp.sensor.ssn/ssn` finding showing only its serial."""
    found = engine.scan(f"ssn: {text}\n".encode())
    assert [(f.id, f.match) for f in found] == [("dlp.sensor.ssn/ssn", masked)]
    assert text not in found[0].message


NOT_SSNS = [
    ("area-000", "000-12-3456"),
    ("area-666", "666-12-3456"),
    ("area-900", "900-12-3456"),
    ("area-999", "999-12-3456"),
    ("group-00", "123-00-4567"),
    ("serial-0000", "123-45-0000"),
    ("advertising-number", "078-05-1120"),
    ("digit-before", "1123-45-6789"),
    ("digit-after", "123-45-67891"),
    ("mixed-separators", "123-45 6789"),
    ("phone-shape", "942-568-3249"),
    ("no-separators", "123456789"),
]


@pytest.mark.parametrize("text", [t for _, t in NOT_SSNS], ids=[i for i, _ in NOT_SSNS])
def test_ssn_near_misses_are_not_found(engine: DlpEngine, text: str) -> None:
    """Invalid areas, groups, serials, published numbers and digit runs that only look like SSNs are not reported."""
    assert [f.id for f in engine.scan(f"x {text} y".encode()) if f.id.startswith("dlp.sensor.ssn")] == []


LUHN = [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("0", True), ("18", True)]


@pytest.mark.parametrize("digits,ok", LUHN, ids=[d for d, _ in LUHN])
def test_luhn(digits: str, ok: bool) -> None:
    """The Luhn check accepts exactly the numbers whose weighted digit sum is a multiple of ten."""
    assert luhn_ok(digits.encode()) is ok


SSN_CHECK = [("123456789", True), ("000456789", False), ("666456789", False), ("900456789", False),
             ("123006789", False), ("123450000", False), ("12345678", False)]  # fmt: skip


@pytest.mark.parametrize("digits,ok", SSN_CHECK, ids=[d for d, _ in SSN_CHECK])
def test_ssn_ranges(digits: str, ok: bool) -> None:
    """The SSN check rejects area 000/666/9xx, group 00, serial 0000 and wrong lengths."""
    assert ssn_ok(digits.encode()) is ok


MASKS = [("abcdefghijklmnop", "abcd********mnop"), ("hunter22x", "hu*****2x"), ("abc", "***"), ("a-b", "*-*")]


@pytest.mark.parametrize("value,masked", MASKS, ids=[v for v, _ in MASKS])
def test_values_of_rules_without_verifier_show_at_most_a_quarter(value: str, masked: str) -> None:
    """Custom matches keep at most a quarter (and 4 characters) of the value at each end, separators stay."""
    assert mask_match(value) == masked


def test_findings_never_carry_the_clear_value(engine: DlpEngine) -> None:
    """No field of a finding (message, match, location, detail) contains the clear card or SSN."""
    card, ssn = _group(_luhn_complete("4539", 16), (4, 4, 4, 4), " "), "219-44-1234"
    found = engine.scan(f"{card} and {ssn}".encode())
    assert len(found) == 2
    for f in found:
        text = repr(f)
        assert card not in text and card.replace(" ", "") not in text and ssn not in text


def test_action_comes_from_the_setting(tmp_path: Path) -> None:
    """A sensor set to deny yields DENY findings; sensors without a setting only alert."""
    engine = DlpEngine(builtin_sensors(), {"sensor.ssn": Action.DENY}, cache_dir=tmp_path)
    found = {f.id: f.action for f in engine.scan(b"4111111111111111 123-45-6789")}
    assert found == {"dlp.sensor.creditcard/visa": Action.ALERT, "dlp.sensor.ssn/ssn": Action.DENY}
