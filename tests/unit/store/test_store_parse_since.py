"""parse_since: ISO 8601 times and relative ages for `--since`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podwall.store.events import parse_since

NOW = datetime(2024, 5, 10, 12, 0, 0, tzinfo=UTC)

VALID: list[tuple[str, str, datetime]] = [
    ("date", "2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ("datetime-z", "2024-05-01T10:20:30Z", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
    ("datetime-offset", "2024-05-01T12:20:30+02:00", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
    ("negative-offset", "2024-05-01T05:20-05:00", datetime(2024, 5, 1, 10, 20, tzinfo=UTC)),
    ("fraction", "2024-05-01T10:20:30.250Z", datetime(2024, 5, 1, 10, 20, 30, 250000, tzinfo=UTC)),
    ("naive-is-utc", "2024-05-01T10:20:30", datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)),
    ("space-separator", "2024-05-01 10:20Z", datetime(2024, 5, 1, 10, 20, tzinfo=UTC)),
    ("seconds", "45s", NOW - timedelta(seconds=45)),
    ("minutes", "30m", NOW - timedelta(minutes=30)),
    ("hours", "2h", NOW - timedelta(hours=2)),
    ("days", "7d", NOW - timedelta(days=7)),
    ("zero", "0m", NOW),
    ("surrounding-space", " 2h\n", NOW - timedelta(hours=2)),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid(text: str, expected: datetime) -> None:
    """Accepted forms give the expected instant, always as an aware UTC datetime."""
    parsed = parse_since(text, now=NOW)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


INVALID: list[tuple[str, str, str]] = [
    ("empty", "", "cannot read '' as a time"),
    ("number-without-unit", "45", "cannot read '45' as a time"),
    ("unknown-unit", "3y", "cannot read '3y' as a time"),
    ("fractional-age", "1.5h", "cannot read '1.5h'"),
    ("negative-age", "-5m", "cannot read '-5m'"),
    ("words", "yesterday", "expected ISO 8601 .* or an age such as 45s, 30m, 2h, 7d"),
    ("bad-month", "2024-13-01", "cannot read '2024-13-01'"),
    ("too-far-back", "99999999999d", "reaches too far back"),
    ("out-of-range", "0001-01-01T00:00+01:00", "out of range"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(text: str, message: str) -> None:
    """Anything else is a ValueError that quotes the input and lists the accepted forms."""
    with pytest.raises(ValueError, match=message):
        parse_since(text, now=NOW)


def test_default_now_is_current_time() -> None:
    """Without `now`, an age counts back from the current time."""
    before = datetime.now(UTC)
    parsed = parse_since("1h")
    after = datetime.now(UTC)
    assert before - timedelta(hours=1) <= parsed <= after - timedelta(hours=1)


def test_naive_now_is_refused() -> None:
    """A naive `now` is refused rather than silently taken as local or UTC time."""
    with pytest.raises(ValueError, match=r"now .* has no timezone"):
        parse_since("1h", now=datetime(2024, 5, 1))


@given(
    amount=st.integers(min_value=0, max_value=100_000),
    unit=st.sampled_from([("s", "seconds"), ("m", "minutes"), ("h", "hours"), ("d", "days")]),
)
def test_age_property(amount: int, unit: tuple[str, str]) -> None:
    """Any whole age N<unit> is exactly that long before `now`."""
    suffix, name = unit
    assert parse_since(f"{amount}{suffix}", now=NOW) == NOW - timedelta(**{name: amount})


@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_isoformat_property(moment: datetime, offset_minutes: int) -> None:
    """Any aware datetime written in ISO 8601 with any offset parses back to the same instant."""
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert parse_since(local.isoformat(), now=NOW) == moment
