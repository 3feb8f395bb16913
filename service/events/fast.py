"""The fast path of decoding: parse with orjson, screen whole columns, defer the rest.

Validating each message with pydantic-core costs about 2 µs; parsing it with orjson about
0.5 µs. orjson knows nothing of the contract, so after parsing, the batch is *screened*
column by column with C-level passes (``map``, ``set``, ``max``, ``compress``): a message
whose fields all have exactly the types and sizes that :data:`~service.events.model.
EVENT_ADAPTER` would accept *without changing them* is clean, and its parsed values are
used as they are. Every other message (not bytes, not JSON, not an object, a missing field,
a wrong type, an integer beyond 64 bits, a number or string past a limit…) is returned in
``slow``, and the decoder gives it to pydantic exactly as before, so each rejection reason
and detail is unchanged. The screen is conservative: it may defer a message pydantic
would accept, never accept one pydantic would refuse or read differently (a property test
compares the two paths on generated messages).

Where orjson and pydantic-core agree, the screen relies on it: both keep the last of
duplicate keys at the position of the first, both refuse ``NaN``, lone surrogates, invalid
UTF-8 and trailing data. Where they differ, orjson refuses (``1e400``, a byte order mark)
or returns a float for an integer beyond 64 bits, which the screen never accepts where
pydantic would keep an integer.

Example
-------
>>> cols, slow = parse_columns([
...     b'{"schema_version":1,"event_id":"e1","event_type":"click","user_id":7,'
...     b'"item_id":"i1","timestamp":1700000000000,"context":{"device":"ios"}}',
...     b'{"schema_version":1,"event_id":"e2","event_type":"click","user_id":true}', None])
>>> cols["user_id"][0], cols["context"][0], slow
(7, {'device': 'ios'}, [1, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import chain, compress, islice, repeat
from operator import is_, itemgetter
from typing import Any

import orjson

from service.events.model import (
    EVENT_TYPE_CODES,
    INT64_MAX,
    INT64_MIN,
    MAX_ABS_NUMBER,
    MAX_EPOCH_MS,
    MAX_KEY_LENGTH,
    MAX_MAP_KEYS,
    MAX_TEXT_LENGTH,
    MAX_TIMESTAMP_TEXT,
    SCHEMA_VERSION,
)

FIELD_NAMES = (
    "schema_version", "event_id", "event_type", "user_id", "item_id", "timestamp",
    "value", "context", "user_features", "item_features",
)
MAP_FIELDS = ("context", "user_features", "item_features")
_REQUIRED = FIELD_NAMES[:6]
_OPTIONAL = FIELD_NAMES[6:]
_NONE = type(None)
_MAP_VALUE_TYPES = frozenset({str, int, float, bool, _NONE})
_MAX_MAP_INT = int(MAX_ABS_NUMBER)

Columns = dict[str, list[Any]]

# Stands in for a deferred message while the columns are screened: clean, so it never adds
# a false alarm, and overwritten (or dropped) once pydantic has judged the real message.
PLACEHOLDER: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION, "event_id": "-", "event_type": "click", "user_id": "-",
    "item_id": "-", "timestamp": 0, "value": None, "context": None, "user_features": None,
    "item_features": None,
}
PLACEHOLDER_BYTES = orjson.dumps(PLACEHOLDER)


def parse_columns(values: Sequence[Any]) -> tuple[Columns, list[int]]:
    """Parse every message and split the batch into clean columns and deferred positions.

    Returns one list per field of :data:`FIELD_NAMES` with an entry for *every* input
    (absent optional fields as ``None``; deferred messages hold :data:`PLACEHOLDER`'s
    values), and the ascending positions the caller must validate with pydantic.
    """
    n = len(values)
    slow: set[int] = set()
    if set(map(type, values)) != {bytes}:
        # Only bytes take the fast path: pydantic decides what other inputs mean.
        slow.update(k for k, v in enumerate(values) if v.__class__ is not bytes)
        values = [PLACEHOLDER_BYTES if k in slow else v for k, v in enumerate(values)]
    parsed: list[Any] = []
    loads = orjson.loads
    pos = 0
    # list.extend keeps what it appended before the exception, so the loop resumes there.
    while pos < n:
        start = len(parsed)
        try:
            parsed.extend(map(loads, islice(values, pos, None)))
            pos = n
        except orjson.JSONDecodeError:
            pos += len(parsed) - start
            parsed.append(PLACEHOLDER)
            slow.add(pos)
            pos += 1
    if set(map(type, parsed)) != {dict}:
        for k, obj in enumerate(parsed):
            if obj.__class__ is not dict:
                parsed[k] = PLACEHOLDER
                slow.add(k)
    cols: Columns = {}
    for name in _REQUIRED:
        try:
            cols[name] = list(map(itemgetter(name), parsed))
        except KeyError:
            cols[name] = list(map(dict.get, parsed, repeat(name)))
    for name in _OPTIONAL:
        cols[name] = list(map(dict.get, parsed, repeat(name)))
    for screen in _SCREENS:
        slow.update(screen(cols))
    return cols, sorted(slow)


# -- screens: each returns the positions its field(s) would not pass unchanged ------------


def _types(column: list[Any]) -> set[type]:
    return set(map(type, column))


def _where(column: Iterable[Any], bad: Callable[[Any], bool]) -> list[int]:
    return [k for k, v in enumerate(column) if bad(v)]


def _schema_version(cols: Columns) -> list[int]:
    col = cols["schema_version"]
    # Another integer version is valid for pydantic and refused later as unknown: defer it
    # so one code path decides (and a version beyond 64 bits never reaches numpy).
    if _types(col) == {int} and col.count(SCHEMA_VERSION) == len(col):
        return []
    return _where(col, lambda v: v.__class__ is not int or v != SCHEMA_VERSION)


def _event_id(cols: Columns) -> list[int]:
    col = cols["event_id"]
    return [] if _types(col) <= {str} else _where(col, lambda v: v.__class__ is not str)


def _event_type(cols: Columns) -> list[int]:
    col = cols["event_type"]
    try:
        # No value of another type equals one of these strings: one pass checks both.
        if set(col) <= EVENT_TYPE_CODES.keys():
            return []
    except TypeError:  # an unhashable value (a list, an object)
        pass
    return _where(col, lambda v: v.__class__ is not str or v not in EVENT_TYPE_CODES)


def _bad_id(v: Any) -> bool:
    if v.__class__ is str:
        return False
    return v.__class__ is not int or not INT64_MIN <= v <= INT64_MAX


def _ids(cols: Columns) -> list[int]:
    out: list[int] = []
    for name in ("user_id", "item_id"):
        col = cols[name]
        kinds = _types(col)
        if kinds <= {str}:
            continue
        if kinds <= {str, int}:
            ints = [v for v in col if v.__class__ is int]
            if min(ints) >= INT64_MIN and max(ints) <= INT64_MAX:
                continue
        out += _where(col, _bad_id)
    return out


def _bad_timestamp(v: Any) -> bool:
    if v.__class__ is int:
        return not 0 <= v <= MAX_EPOCH_MS
    return v.__class__ is not str or len(v) > MAX_TIMESTAMP_TEXT


def _timestamp(cols: Columns) -> list[int]:
    col = cols["timestamp"]
    kinds = _types(col)
    if kinds == {int} and min(col) >= 0 and max(col) <= MAX_EPOCH_MS:
        return []
    if kinds == {str} and max(map(len, col)) <= MAX_TIMESTAMP_TEXT:
        return []
    return _where(col, _bad_timestamp)


def _value(cols: Columns) -> list[int]:
    # orjson's floats are finite (it refuses NaN, Infinity and overflow), and pydantic
    # reads an integer as its float: the decoder converts the column with numpy alike.
    col = cols["value"]
    if _types(col) <= {float, _NONE, int}:
        return []
    return _where(col, lambda v: v.__class__ not in (float, _NONE, int))


def _maps_ok(maps: list[dict[str, Any]]) -> bool:
    """Whether every map in ``maps`` passes the contract unchanged (all at once)."""
    if max(map(len, maps)) > MAX_MAP_KEYS:
        return False
    keys = list(chain.from_iterable(maps))
    if keys and max(map(len, keys)) > MAX_KEY_LENGTH:
        return False
    values = list(chain.from_iterable(map(dict.values, maps)))
    kinds = list(map(type, values))
    present = set(kinds)
    if not present <= _MAP_VALUE_TYPES:
        return False
    if str in present:
        texts = values if present == {str} else compress(values, map(is_, kinds, repeat(str)))
        if max(map(len, texts)) > MAX_TEXT_LENGTH:
            return False
    if int in present:
        ints = compress(values, map(is_, kinds, repeat(int)))
        if max(map(abs, ints)) > _MAX_MAP_INT:
            return False
    if float in present:
        floats = compress(values, map(is_, kinds, repeat(float)))
        if max(map(abs, floats)) > MAX_ABS_NUMBER:
            return False
    return True


def _maps(cols: Columns) -> list[int]:
    out: list[int] = []
    for name in MAP_FIELDS:
        col = cols[name]
        kinds = _types(col)
        if kinds <= {_NONE}:
            continue
        if kinds <= {_NONE, dict}:
            maps = [m for m in col if m]
            if not maps or _maps_ok(maps):
                continue
        out += _where(col, lambda m: m is not None and (m.__class__ is not dict
                                                         or (bool(m) and not _maps_ok([m]))))
    return out


_SCREENS = (_schema_version, _event_id, _event_type, _ids, _timestamp, _value, _maps)
