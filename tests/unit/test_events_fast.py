"""The orjson fast path decodes exactly like validating every message with pydantic.

``_decode(..., fast=False)`` sends every message through pydantic-core, the contract's
reference; the fast path must agree on every column, every rejection reason and every
detail, for well-formed events, near misses and garbage alike.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.events.decode import DecodedBatch, _decode
from service.events.fast import parse_columns
from service.events.model import CONTROL_PATTERN, EVENT_TYPE_CODES
from service.events.reasons import RejectReason
from service.preprocess.config import PreprocessConfig

NOW = 1_795_802_400_000
CONTROL = re.compile(CONTROL_PATTERN)
CFG = PreprocessConfig()


def assert_same(fast: DecodedBatch, slow: DecodedBatch) -> None:
    assert fast.n_input == slow.n_input
    for name in ("index", "event_type", "ts_ms", "value"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
    for name in ("event_id", "user_id", "item_id", "context", "user_features",
                 "item_features"):
        a, b = getattr(fast, name), getattr(slow, name)
        # repr: True == 1 == 1.0 in Python, but a map value's type is part of the output.
        assert repr(a) == repr(b), name
    assert [(r.index, r.reason, r.detail) for r in fast.rejections] == [
        (r.index, r.reason, r.detail) for r in slow.rejections]


def check(values: list[Any]) -> None:
    assert_same(_decode(values, NOW, CFG, fast=True), _decode(values, NOW, CFG, fast=False))


scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
           | st.sampled_from([2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, 10**15,
                              10**15 + 1, 1e15, -1e15, 1.0, 0.0, -0.0]))
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                 max_size=3),
    max_leaves=8)
map_values = (st.none() | st.booleans() | st.integers(-(10**16), 10**16)
              | st.floats(-2e15, 2e15) | st.text(max_size=5)
              | st.sampled_from(["x" * 256, "x" * 257, 2**64, [1], {"a": 1}]))
# Text that often holds a control character (C0, DEL), among ordinary and C1 characters:
# refused in ids, the event type and map keys, allowed in map string values.
controlled = st.text(st.sampled_from("a\x00\t\n\x1f \x7f\x80\x9f\u00e9"), min_size=1,
                     max_size=4)
map_values |= controlled
maps = st.none() | st.dictionaries(
    st.text(max_size=3) | controlled | st.sampled_from(["k" * 64, "k" * 65, "device"]),
    map_values, max_size=5) | st.just({str(i): i for i in range(17)})
ids = (st.text(min_size=0, max_size=4) | st.integers(-(2**64), 2**64) | st.booleans()
       | st.none() | st.floats(allow_nan=False, allow_infinity=False) | controlled
       | st.sampled_from(["x" * 128, "x" * 129, "x" * 129 + "\x00", "é", "\ud800",
                          "u\x00x", "\x7f", "\n"]))
FIELDS = {
    "schema_version": st.sampled_from([1, 2, 0, "1", True, 1.0, None, 2**64]),
    "event_id": ids,
    "event_type": st.sampled_from([*EVENT_TYPE_CODES, "x", 1, None, True, "click\x00",
                                   "\x7fpurchase", "x\x1f"]),
    "user_id": ids,
    "item_id": ids,
    "timestamp": st.integers(NOW - 10**11, NOW + 10**9)
    | st.sampled_from(["2026-11-27T17:00:00Z", "2026-11-27T17:00:00.5+05:00", "bad",
                       "2026-11-27T17:00:00." + "0" * 30 + "Z", -5, 1.7e12, True,
                       2**64, 253_402_300_799_999, 253_402_300_800_000, None]),
    "value": st.floats(allow_nan=True) | st.none() | st.integers(-(2**65), 2**65)
    | st.booleans() | st.sampled_from([4, "4", 0.5, 5.0, 5.5, -1.0, 1e9, 1e10]),
    "context": maps,
    "user_features": maps,
    "item_features": maps | json_values,
    "extra": json_values,
}
# Valid events, then up to two fields replaced by anything and one perhaps dropped: most
# checks see an event that is valid but for one or two details.
valid_events = st.fixed_dictionaries(
    {
        "schema_version": st.just(1),
        "event_id": st.text(min_size=1, max_size=5),
        "event_type": st.sampled_from(list(EVENT_TYPE_CODES)),
        "user_id": st.text(min_size=1, max_size=5) | st.integers(-(2**63), 2**63 - 1),
        "item_id": st.text(min_size=1, max_size=5) | st.integers(0, 10**6),
        "timestamp": st.integers(NOW - 10**7, NOW)
        | st.sampled_from(["2026-11-27T17:00:00Z", "2026-11-27T17:00:00.5+00:30"]),
        "value": st.floats(0.5, 5.0) | st.integers(1, 5),
    },
    optional={"context": maps, "user_features": maps, "item_features": maps},
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(valid_events)
    for name in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=2)):
        event[name] = draw(FIELDS[name])
    for name in draw(st.sets(st.sampled_from(sorted(event)), max_size=1)):
        del event[name]
    return event


def dump(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def dump_raw(obj: Any) -> bytes:
    """Without escapes where JSON allows it: non-ASCII and DEL as raw bytes."""
    return json.dumps(obj, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


messages = st.one_of(
    events().map(dump),
    events().map(dump_raw),
    events().map(lambda e: dump(e)[: len(dump(e)) // 2]),  # truncated
    json_values.map(dump),
    st.binary(max_size=24),
    st.none(),
    st.sampled_from([b"", b"\xef\xbb\xbf{}", b'{"a": "\xc3\x28"}', b"1e400", 42, "text",
                     b'{"value": 1e400}', bytearray(b"{}")]),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, max_size=10))
def test_fast_path_agrees_with_pydantic_on_anything(values: list[Any]) -> None:
    check(values)


@settings(max_examples=100, deadline=None)
@given(st.lists(events().map(dump) | events().map(dump_raw), min_size=1, max_size=10))
def test_fast_path_agrees_with_pydantic_on_near_events(values: list[bytes]) -> None:
    check(values)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional={
    "event_id": controlled, "user_id": controlled, "item_id": controlled,
    "event_type": st.sampled_from(["click", "click\x00", "\x7fclick"]),
    "context": st.dictionaries(controlled, controlled, max_size=2),
    "item_features": st.dictionaries(controlled, controlled | st.integers(-9, 9), max_size=2),
}), min_size=1, max_size=10), st.booleans())
def test_fast_path_agrees_with_pydantic_on_control_characters(
        changes: list[dict[str, Any]], raw: bool) -> None:
    events = [{**VALID, **c} for c in changes]
    values = [(dump_raw if raw else dump)(e) for e in events]
    check(values)
    # Refused exactly when an id, the event type or a map key holds one; values may.
    fast = _decode(values, NOW, CFG, fast=True)
    refused = {r.index for r in fast.rejections}
    assert {r.reason for r in fast.rejections} <= {RejectReason.CONTROL_CHARACTER}
    for k, e in enumerate(events):
        names = [e["event_id"], e["user_id"], e["item_id"], e["event_type"],
                 *e.get("context", ()), *e.get("item_features", ())]
        assert (k in refused) == any(CONTROL.search(x) for x in names), e


VALID = {"schema_version": 1, "event_id": "e", "event_type": "rating", "user_id": "u",
         "item_id": "i", "timestamp": NOW, "value": 4.0}


@pytest.mark.parametrize("raw", [
    # Duplicate keys: the last value wins, at the position of the first (maps keep order).
    b'{"schema_version":1,"event_id":"e","event_type":"rating","user_id":"a","user_id":"b",'
    b'"item_id":"i","timestamp":1795802400000,"value":4,'
    b'"context":{"a":1,"b":2,"a":"x"}}',
    # Escapes, non-ASCII and an astral character.
    b'{"schema_version":1,"event_id":"\\u00e9\\n","event_type":"click","user_id":"\xf0\x9f\x98'
    b'\x80","item_id":"i","timestamp":"2026-11-27T17:00:00Z"}',
    # A rating sent as an integer, and a price as a large one: both read as floats.
    dump({**VALID, "value": 4}),
    dump({**VALID, "event_type": "purchase", "value": 2**64 - 1}),
    dump({**VALID, "event_type": "purchase", "value": 2**64 + 1}),
    dump({**VALID, "user_id": 2**63 - 1, "item_id": -(2**63)}),
    dump({**VALID, "user_id": 2**63}),
    dump({**VALID, "context": {"n": 10**15, "m": -1e15, "t": True, "z": None}}),
    dump({**VALID, "context": {"n": 10**15 + 1}}),
    dump({**VALID, "schema_version": 2**64}),
])
def test_tricky_messages(raw: bytes) -> None:
    check([raw])
    check([raw, dump(VALID)])


def test_clean_batches_defer_nothing() -> None:
    values = [dump({**VALID, "event_id": f"e{i}", "user_id": i,
                    "context": {"device": "ios", "position": i}}) for i in range(50)]
    cols, slow = parse_columns(values)
    assert slow == [] and cols["user_id"][:3] == [0, 1, 2]
    _, slow = parse_columns([*values[:2], b"{", None, dump({**VALID, "user_id": True})])
    assert slow == [2, 3, 4]
