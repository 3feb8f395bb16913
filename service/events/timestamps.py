"""RFC 3339 timestamps to epoch milliseconds, for a whole batch in one compiled pass.

Accepted: ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)``, with ``T``, ``t`` or a space
between date and time and ``z`` for ``Z`` (RFC 3339 §5.6 and its note on the separator).
Digits beyond milliseconds are truncated. A leap second (``:60``) is read as ``:59.999``
because Unix time has no leap seconds. Anything else is invalid: there is no guessing of
other formats, since a silently misread timestamp would poison windows and lateness checks.

Example
-------
>>> parse_rfc3339_one("1970-01-01T00:00:01.5+01:00")
-3598500
>>> parse_rfc3339_one("2026-11-27 18:00:00Z")
1795802400000
>>> parse_rfc3339_one("27/11/2026") is None
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numba import njit

from service.events.packed import PackedStrings


@njit(cache=True, inline="always")
def _digits(cp: npt.NDArray[np.uint32], start: int, count: int) -> int:
    """The number written by ``count`` ASCII digits at ``start``, or -1."""
    value = 0
    for k in range(start, start + count):
        c = int(cp[k]) - 48
        if c < 0 or c > 9:
            return -1
        value = value * 10 + c
    return value


@njit(cache=True, inline="always")
def _days_from_civil(y: int, m: int, d: int) -> int:
    # Howard Hinnant's algorithm: days since 1970-01-01 in the proleptic Gregorian calendar.
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True)
def _parse_kernel(
    cp: npt.NDArray[np.uint32], offsets: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=np.bool_)
    mdays = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    for i in range(n):
        s = offsets[i]
        e = offsets[i + 1]
        if e - s < 20:  # shortest form: 2026-11-27T18:00:00Z
            continue
        if cp[s + 4] != 45 or cp[s + 7] != 45 or cp[s + 13] != 58 or cp[s + 16] != 58:
            continue
        sep = cp[s + 10]
        if sep != 84 and sep != 116 and sep != 32:  # 'T', 't', ' '
            continue
        year = _digits(cp, s, 4)
        month = _digits(cp, s + 5, 2)
        day = _digits(cp, s + 8, 2)
        hour = _digits(cp, s + 11, 2)
        minute = _digits(cp, s + 14, 2)
        second = _digits(cp, s + 17, 2)
        if year < 0 or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23:
            continue
        if minute < 0 or minute > 59 or second < 0 or second > 60:
            continue
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        dim = mdays[month - 1] + (1 if (month == 2 and leap) else 0)
        if day > dim:
            continue
        pos = s + 19
        millis = 0
        if pos < e and cp[pos] == 46:  # '.'
            pos += 1
            nd = 0
            while pos < e and 48 <= cp[pos] <= 57:
                if nd < 3:
                    millis = millis * 10 + int(cp[pos]) - 48
                nd += 1
                pos += 1
            if nd == 0:
                continue
            for _ in range(nd, 3):
                millis *= 10
        if second == 60:  # leap second: the last representable instant of the minute
            second = 59
            millis = 999
        if pos >= e:
            continue
        tz = cp[pos]
        offset_min = 0
        if tz == 90 or tz == 122:  # 'Z', 'z'
            if pos + 1 != e:
                continue
        elif tz == 43 or tz == 45:  # '+', '-'
            if pos + 6 != e or cp[pos + 3] != 58:
                continue
            oh = _digits(cp, pos + 1, 2)
            om = _digits(cp, pos + 4, 2)
            if oh < 0 or oh > 23 or om < 0 or om > 59:
                continue
            offset_min = oh * 60 + om
            if tz == 45:
                offset_min = -offset_min
        else:
            continue
        days = _days_from_civil(year, month, day)
        secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_min * 60
        out[i] = secs * 1000 + millis
        ok[i] = True
    return out, ok


def parse_rfc3339(
    strings: Sequence[str],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Epoch milliseconds of each string and whether it was a valid RFC 3339 timestamp."""
    packed = PackedStrings.from_list(strings)
    return _parse_kernel(packed.codepoints, packed.offsets)  # type: ignore[no-any-return]


def parse_packed_rfc3339(
    packed: PackedStrings,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Like :func:`parse_rfc3339` for strings already packed."""
    return _parse_kernel(packed.codepoints, packed.offsets)  # type: ignore[no-any-return]


def parse_rfc3339_one(text: str) -> int | None:
    """Epoch milliseconds of one timestamp, or ``None`` when it is not valid RFC 3339."""
    ms, ok = parse_rfc3339([text])
    return int(ms[0]) if ok[0] else None


def format_rfc3339(epoch_ms: int) -> str:
    """``epoch_ms`` as an RFC 3339 UTC string with milliseconds (``...T18:00:00.000Z``)."""
    whole = np.datetime64(int(epoch_ms), "ms")
    return f"{np.datetime_as_string(whole, unit='ms')}Z"
