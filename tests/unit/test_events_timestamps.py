"""The compiled RFC 3339 parser agrees with Python's datetime and refuses everything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from service.events.timestamps import format_rfc3339, parse_rfc3339, parse_rfc3339_one

instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


@given(instants, offsets, st.integers(min_value=0, max_value=9), st.sampled_from("Tt "))
def test_parses_like_datetime(
    when: datetime, offset_min: int, digits: int, sep: str
) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    local = when.replace(tzinfo=tz)
    sign = "+" if offset_min >= 0 else "-"
    zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    frac = f"{local.microsecond:06d}000"[:digits]
    # strftime's %Y does not pad years below 1000, RFC 3339 does.
    text = (f"{local.year:04d}-{local.month:02d}-{local.day:02d}{sep}{local.hour:02d}:"
            f"{local.minute:02d}:{local.second:02d}" + (f".{frac}" if digits else "") + zone)
    expected = local.replace(microsecond=int((frac + "000")[:3]) * 1000 if digits else 0)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_rfc3339_one(text) == (expected - epoch) // timedelta(milliseconds=1)


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_format_then_parse_round_trips(ms: int) -> None:
    assert parse_rfc3339_one(format_rfc3339(ms)) == ms


@given(st.text(max_size=40))
def test_never_raises_and_rejects_junk(text: str) -> None:
    result = parse_rfc3339_one(text)
    if result is not None:  # then it must at least look like a timestamp
        assert text[4] == "-" and text[7] == "-" and text[13] == ":"


def test_rejects_near_misses() -> None:
    bad = [
        "2026-11-27T18:00:00", "2026-11-27", "2026-13-01T00:00:00Z", "2026-11-31T00:00:00Z",
        "2025-02-29T00:00:00Z", "2026-11-27T24:00:00Z", "2026-11-27T18:60:00Z",
        "2026-11-27T18:00:00.Z", "2026-11-27T18:00:00+0100", "2026-11-27T18:00:00Zjunk",
        "2026/11/27T18:00:00Z", "\uff12\uff10\uff12\uff16-11-27T18:00:00Z",  # full-width digits
    ]
    _, ok = parse_rfc3339(bad)
    assert not ok.any()


def test_leap_day_and_leap_second() -> None:
    assert parse_rfc3339_one("2024-02-29T00:00:00Z") == 1_709_164_800_000
    assert parse_rfc3339_one("2016-12-31T23:59:60Z") == 1_483_228_799_999
