"""The compiled scanner reads typical messages exactly as orjson + pydantic would.

The scanner either reads a message completely or defers it to the slower paths. So two
properties cover it: whatever it reads equals what orjson parses from the same bytes, and
the whole decoder (scanner, screen, pydantic) equals pydantic alone on every input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.demo.generator import StreamSpec, SyntheticStream
from service.events.decode import _decode
from service.events.maps import PackedMaps
from service.events.model import CONTROL_PATTERN
from service.events.packed import PackedStrings
from service.events.reasons import RejectReason
from service.events.scan import Scanned, scan_batch
from tests.unit.test_events_fast import CFG, NOW, VALID, check, controlled, events, maps

MAP_FIELDS = ("context", "user_features", "item_features")
CONTROL = re.compile(CONTROL_PATTERN)


def compact(obj: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only,
                      allow_nan=True).encode("utf-8", "surrogatepass")


def assert_read_like_orjson(raw: bytes, s: Any, k: int) -> None:
    """Row ``k`` of scan ``s`` holds what orjson parses from ``raw``."""
    event = orjson.loads(raw)
    for name in ("event_id", "user_id", "item_id"):
        assert s.ids[name][k] == str(event[name]), name
    value = event.get("value")
    if value is None:
        assert math.isnan(s.value[k])
    else:  # bit for bit: -0.0 and 0.0 differ in the features
        assert np.float64(value).tobytes() == s.value[k].tobytes()
    if isinstance(event["timestamp"], str):
        assert s.ts_is_text[k] and s.ts_text[k] == event["timestamp"]
    else:
        assert not s.ts_is_text[k] and s.ts_ms[k] == event["timestamp"]
    for name in MAP_FIELDS:
        assert repr(s.maps[name].take(np.array([k])).to_dicts()[0]) == repr(
            event.get(name)), name


def assert_no_control_read(s: Scanned) -> None:
    """The decoder relies on it: no id or map key the scanner read holds a C0 or DEL."""
    rows = np.flatnonzero(s.ok)
    texts = [x for name in ("event_id", "user_id", "item_id")
             for x in s.ids[name].take(rows).to_list()]
    texts += [k for name in MAP_FIELDS for m in s.maps[name].take(rows).to_dicts() if m
              for k in m]
    assert not any(CONTROL.search(x) for x in texts)


numbers = (st.integers(-(10**19), 10**19) | st.floats(allow_nan=False, allow_infinity=False)
           | st.floats(-1e16, 1e16) | st.sampled_from([0.1, -0.0, 0.0, 1e22, 1e-22, 1e23,
                                                      123456789012345.6, 2.5e-7, 10**15]))


@st.composite
def spelled_numbers(draw: st.DrawFn) -> str:
    """JSON numbers as producers write them, not only as Python's repr does."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.sampled_from(["0", "1", "7", "12", "999999999999999",
                                  "1234567890123456789"]))
    frac = draw(st.sampled_from(["", ".0", ".5", ".000001", ".12345678901234567"]))
    exp = draw(st.sampled_from(["", "e0", "E+2", "e-5", "e22", "e-23", "e400"]))
    return sign + whole + frac + exp


@settings(max_examples=200, deadline=None)
@given(st.lists(events(), min_size=1, max_size=8), st.booleans())
def test_compact_events_decode_like_pydantic(batch: list[dict[str, Any]],
                                             ascii_only: bool) -> None:
    values = [compact(e, ascii_only) for e in batch]
    check(values)
    s = scan_batch(values)
    for k in np.flatnonzero(s.ok).tolist():
        assert_read_like_orjson(values[k], s, k)
    assert_no_control_read(s)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["event_id", "user_id", "item_id", "event_type", "key", "value"]),
       controlled, st.booleans())
def test_control_characters_are_deferred_and_refused(where: str, text: str,
                                                     ascii_only: bool) -> None:
    # ascii_only=False writes DEL raw (valid JSON); C0 is always escaped (raw, not JSON).
    event: dict[str, Any] = {**VALID, "context": {"device": "ios"}}
    if where == "key":
        event["context"] = {"device": "ios", text: 1}
    elif where == "value":  # a map string value may hold any character
        event["context"] = {"device": text}
    else:
        event[where] += text
    raw = compact(event, ascii_only)
    s = scan_batch([raw])
    assert_no_control_read(s)
    check([raw, compact(VALID)])
    batch = _decode([raw], NOW, CFG, fast=True)
    if where != "value" and CONTROL.search(text):
        assert not s.ok[0]
        assert [r.reason for r in batch.rejections] == [RejectReason.CONTROL_CHARACTER]
    elif where != "event_type":
        assert batch.rejections == []


@settings(max_examples=200, deadline=None)
@given(numbers, numbers, maps)
def test_numbers_are_read_exactly_or_deferred(value: Any, other: Any, context: Any) -> None:
    raw = compact({**VALID, "event_type": "purchase", "value": value,
                   "user_features": {"x": other}, "context": context})
    s = scan_batch([raw])
    if s.ok[0]:
        assert_read_like_orjson(raw, s, 0)
    check([raw, compact(VALID)])


@settings(max_examples=200, deadline=None)
@given(spelled_numbers(), spelled_numbers())
def test_spelled_numbers(value: str, feature: str) -> None:
    raw = (compact({**VALID, "event_type": "purchase"})[:-1]
           .replace(b'"value":4.0', b'"value":' + value.encode())
           + b',"context":{"x":' + feature.encode() + b"}}")
    s = scan_batch([raw])
    if s.ok[0]:
        assert_read_like_orjson(raw, s, 0)
    check([raw])


def test_typical_events_are_all_scanned() -> None:
    for mode in ("behaviour", "ratings"):
        stream = SyntheticStream(StreamSpec(n_users=50, n_items=20, mode=mode, seed=1))  # type: ignore[arg-type]
        values = stream.encoded_events(300, start_ms=1_800_000_000_000)
        s = scan_batch(values)
        assert s.ok.all(), mode
        assert_no_control_read(s)
        for k in range(0, len(values), 37):
            assert_read_like_orjson(values[k], s, k)


@pytest.mark.parametrize("raw", [
    compact({**VALID, "event_id": "é"}, ascii_only=False),    # non-ASCII
    compact({**VALID, "event_id": "a\nb"}),                   # an escape
    compact({**VALID, "extra": 1}),                           # a key the contract ignores
    compact(VALID)[:-1] + b',"user_id":"v"}',                 # a repeated key
    compact(VALID)[:-1] + b',"context":{"a":1,"a":2}}',       # a repeated map key
    compact({**VALID, "user_id": 10**18}),                    # 19 digits
    compact({**VALID, "value": 1.2345678901234567}),          # 17 significant digits
    compact({**VALID, "event_type": "purchase", "value": 1e30}),  # beyond 1e22
    compact(VALID).replace(b'"user_id":"u"', b'"user_id":-0'),  # the id "0"
    compact({**VALID, "context": {"a": [1]}}),                # a nested value
    compact(VALID) + b" x",                                   # trailing data
    compact(VALID).replace(b'"value":4.0', b'"value":04'),   # a leading zero
    compact({**VALID, "context": {str(i): i for i in range(17)}}),  # too many keys
    compact({**VALID, "schema_version": 2}),
    compact({**VALID, "event_id": 5}),
    compact({**VALID, "user_id": "u\x7f"}, ascii_only=False),  # a raw DEL in an id
    compact({**VALID, "user_id": "u\x00"}),                   # an escaped NUL in an id
    compact({**VALID, "context": {"\x7f": 1}}, ascii_only=False),    # in a map key
    compact({**VALID, "context": {"q": "\x7f"}}, ascii_only=False),  # a value: accepted
    compact({**VALID, "event_type": "rating\x7f"}, ascii_only=False),
    b"",
])
def test_what_the_scanner_defers_is_decoded_all_the_same(raw: bytes) -> None:
    assert not scan_batch([raw]).ok[0]
    check([raw, compact(VALID)])


def test_whitespace_and_key_order_do_not_matter() -> None:
    spaced = json.dumps(dict(reversed(list({**VALID, "context": {"d": "ios"}}.items()))),
                        indent=2).encode()
    s = scan_batch([b"  " + spaced + b"\n"])
    assert s.ok[0] and s.maps["context"].to_dicts() == [{"d": "ios"}]
    check([spaced])


# -- the packed containers -------------------------------------------------------------------

texts = st.text(max_size=6)


@settings(max_examples=100, deadline=None)
@given(st.lists(texts, max_size=8), st.lists(texts, max_size=8), st.data())
def test_packed_strings_take_and_concat(a: list[str], b: list[str], data: st.DataObject) -> None:
    both = PackedStrings.concat(PackedStrings.from_list(a), PackedStrings.from_list(b))
    assert both.to_list() == a + b and len(both) == len(a) + len(b)
    rows = data.draw(st.lists(st.integers(0, max(len(a + b) - 1, 0)), max_size=10)
                     if a + b else st.just([]))
    assert both.take(np.array(rows, dtype=np.int64)).to_list() == [(a + b)[r] for r in rows]


map_entries = st.none() | st.booleans() | st.integers(-(10**15), 10**15) | st.floats(
    -1e15, 1e15) | st.text(max_size=4)
dicts = st.none() | st.dictionaries(st.text(max_size=3), map_entries, max_size=4)


@settings(max_examples=100, deadline=None)
@given(st.lists(dicts, max_size=6), st.lists(dicts, max_size=6), st.data())
def test_packed_maps_round_trip(a: list[Any], b: list[Any], data: st.DataObject) -> None:
    both = PackedMaps.concat(PackedMaps.from_dicts(a), PackedMaps.from_dicts(b))
    assert repr(both.to_dicts()) == repr(a + b)
    rows = data.draw(st.lists(st.integers(0, max(len(a + b) - 1, 0)), max_size=8)
                     if a + b else st.just([]))
    taken = both.take(np.array(rows, dtype=np.int64)).to_dicts()
    assert repr(taken) == repr([(a + b)[r] for r in rows])
