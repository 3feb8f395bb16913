"""decode_batch: every rejection reason, the columns of accepted events, and totality."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.events.decode import decode_batch
from service.events.model import CONTROL_PATTERN, EVENT_TYPE_CODES
from service.events.reasons import RejectReason
from service.events.timestamps import parse_rfc3339_one
from service.events.watermark import Watermarks
from service.preprocess.config import PreprocessConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
CONTROL = re.compile(CONTROL_PATTERN)
NOW = parse_rfc3339_one("2026-11-27T18:00:00Z")
assert NOW is not None
GOOD = {
    "schema_version": 1, "event_id": "e-1", "event_type": "rating", "user_id": "u42",
    "item_id": "i7", "timestamp": "2026-11-27T18:00:00Z", "value": 4.0,
    "context": {"device": "ios", "position": 3},
}


def _stream_at_now() -> Watermarks:
    """The watermarks of a stream whose events have reached NOW (lateness is judged
    against the stream, so a lone old event is only too old behind newer ones)."""
    return Watermarks({0: NOW})


def _one(raw: bytes | None, **config: object) -> RejectReason | None:
    batch = decode_batch([raw], NOW, PreprocessConfig(**config),  # type: ignore[arg-type]
                         watermarks=_stream_at_now())
    assert len(batch) + len(batch.rejections) == 1
    return batch.rejections[0].reason if batch.rejections else None


def _event(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


# -- every reason --------------------------------------------------------------------------

INVALID_FILES = sorted((EXAMPLES / "invalid").glob("*.json"))


def named_reason(path: Path) -> RejectReason:
    """``<reason>.json`` or ``<reason>.<variant>.json``: the reason the file is refused with."""
    return RejectReason(path.name.split(".")[0])


@pytest.mark.parametrize("path", INVALID_FILES, ids=[p.stem for p in INVALID_FILES])
def test_each_invalid_example_is_rejected_with_the_reason_it_is_named_after(path: Path) -> None:
    batch = decode_batch([path.read_bytes()], NOW, watermarks=_stream_at_now())
    assert len(batch) == 0
    (rejection,) = batch.rejections
    assert rejection.reason == named_reason(path)
    assert rejection.index == 0
    assert len(rejection.detail) > 10


VALID_FILES = sorted((EXAMPLES / "valid").glob("*.json"))


@pytest.mark.parametrize("path", VALID_FILES, ids=[p.stem for p in VALID_FILES])
def test_each_valid_example_is_accepted(path: Path) -> None:
    batch = decode_batch([path.read_bytes()], NOW)
    assert batch.rejections == []
    assert batch.index.tolist() == [0]


CASES: list[tuple[bytes | None, RejectReason, dict[str, object]]] = [
    (None, RejectReason.TOMBSTONE, {}),
    (_event(pad="x" * 300), RejectReason.OVERSIZED_MESSAGE, {"max_message_bytes": 256}),
    (b'{"a": "\xc3\x28"}', RejectReason.NOT_UTF8, {}),
    (b"", RejectReason.NOT_JSON, {}),
    (_event(value=1.0).replace(b"1.0", b"NaN"), RejectReason.NON_FINITE_NUMBER, {}),
    (_event(value=1.0).replace(b"1.0", b"-Infinity"), RejectReason.NON_FINITE_NUMBER, {}),
    (b'"hello"', RejectReason.NOT_OBJECT, {}),
    (b"null", RejectReason.NOT_OBJECT, {}),
    (_event(schema_version=7, user_id=None), RejectReason.UNKNOWN_SCHEMA_VERSION, {}),
    (_event(schema_version="1"), RejectReason.WRONG_TYPE, {}),
    (_event(schema_version=True), RejectReason.WRONG_TYPE, {}),
    (json.dumps({k: v for k, v in GOOD.items() if k != "timestamp"}).encode(),
     RejectReason.MISSING_FIELD, {}),
    (_event(value=None), RejectReason.MISSING_FIELD, {}),  # ratings need a value
    (_event(user_id=4.5), RejectReason.WRONG_TYPE, {}),
    (_event(user_id=True), RejectReason.WRONG_TYPE, {}),
    (_event(event_type=3), RejectReason.WRONG_TYPE, {}),
    (_event(context=["ios"]), RejectReason.WRONG_TYPE, {}),
    (_event(context={"device": {"os": "ios"}}), RejectReason.WRONG_TYPE, {}),
    (_event(timestamp=1.7e12), RejectReason.WRONG_TYPE, {}),
    (_event(event_type="Click"), RejectReason.UNKNOWN_EVENT_TYPE, {}),
    (_event(value=float("inf")), RejectReason.NON_FINITE_NUMBER, {}),
    (_event(context={"price": float("nan")}), RejectReason.NON_FINITE_NUMBER, {}),
    (_event(value=2e9, event_type="purchase"), RejectReason.ABSURD_NUMBER, {}),
    (_event(timestamp=-5), RejectReason.ABSURD_NUMBER, {}),
    (_event(item_id=2**64), RejectReason.ABSURD_NUMBER, {}),
    (_event(context={"n": 10**16}), RejectReason.ABSURD_NUMBER, {}),
    (_event(event_id=""), RejectReason.EMPTY_ID, {}),
    (_event(user_id=""), RejectReason.EMPTY_ID, {}),
    (_event(event_id="e" * 129), RejectReason.ID_TOO_LONG, {}),
    (_event(item_id="é" * 129), RejectReason.ID_TOO_LONG, {}),
    # Control characters (C0 and DEL) in ids, the event type and map keys.
    (_event(user_id="u\u0000x"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(event_id="e\x1f"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(item_id="\x7f"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(item_id="i7\n"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(user_id="\tu42"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(event_type="rating\x00"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(event_type="\x7fclick"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(context={"dev\x00ice": "ios"}), RejectReason.CONTROL_CHARACTER, {}),
    (_event(user_features={"age\x7f": 3}), RejectReason.CONTROL_CHARACTER, {}),
    (_event(item_features={"\r": None}), RejectReason.CONTROL_CHARACTER, {}),
    # Raw DEL bytes are valid JSON; a raw C0 byte inside a string is not.
    (_event(user_id="u42").replace(b"u42", b"u42\x7f"), RejectReason.CONTROL_CHARACTER, {}),
    (_event(context={"dev": "ios"}).replace(b"dev", b"d\x7fev"),
     RejectReason.CONTROL_CHARACTER, {}),
    (_event(user_id="u42").replace(b"u42", b"u\x00"), RejectReason.NOT_JSON, {}),
    # Map string values may hold any character; C1 controls, non-ASCII are not C0/DEL.
    (_event(context={"query": "a\tb\n\x00\x7f"}), None, {}),  # type: ignore[list-item]
    (_event(user_id="u\x85", item_id="\u00e9\u2028"), None, {}),  # type: ignore[list-item]
    (_event(context={"k" * 65: 1}), RejectReason.FIELD_TOO_LONG, {}),
    (_event(timestamp="2026-11-27T18:00:00.000000000000000000000000000000Z"),
     RejectReason.FIELD_TOO_LONG, {}),
    (_event(user_features={str(i): i for i in range(17)}), RejectReason.MAP_TOO_LARGE, {}),
    (_event(timestamp="2026-11-27"), RejectReason.INVALID_TIMESTAMP, {}),
    (_event(timestamp="2026-02-30T00:00:00Z"), RejectReason.INVALID_TIMESTAMP, {}),
    (_event(timestamp="2026-11-27T18:00:00"), RejectReason.INVALID_TIMESTAMP, {}),  # no zone
    (_event(timestamp="1795802400000"), RejectReason.INVALID_TIMESTAMP, {}),
    (_event(timestamp=NOW + 301_000), RejectReason.TIMESTAMP_IN_FUTURE, {}),
    (_event(timestamp="2026-11-27T19:00:00+00:30"), RejectReason.TIMESTAMP_IN_FUTURE, {}),
    (_event(timestamp=NOW - 3_600_001), RejectReason.TIMESTAMP_TOO_OLD,
     {"allowed_lateness_ms": 3_600_000}),
    (_event(value=5.5), RejectReason.VALUE_OUT_OF_RANGE, {}),
    (_event(value=0.0), RejectReason.VALUE_OUT_OF_RANGE, {}),
    (_event(value=7.0), None, {"rating_max": 10.0}),  # type: ignore[list-item]
    (_event(event_type="impression", value=-1.0), RejectReason.VALUE_OUT_OF_RANGE, {}),
]


@pytest.mark.parametrize(("raw", "reason", "config"), CASES)
def test_rejection_reason_table(
    raw: bytes | None, reason: RejectReason | None, config: dict[str, object]
) -> None:
    assert _one(raw, **config) == reason


def test_every_reason_but_duplicate_and_internal_error_is_exercised() -> None:
    # duplicate is the preprocessor's (see test_preprocess_preprocessor); internal_error
    # would mean a bug.
    covered = {r for _, r, _ in CASES} | {named_reason(p) for p in INVALID_FILES}
    expected = set(RejectReason) - {RejectReason.DUPLICATE, RejectReason.INTERNAL_ERROR}
    assert expected <= covered


def test_every_reason_is_documented_in_order() -> None:
    # docs/events.md's table is the producers' list of codes, in the order they win.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    table = doc.split("## Rejection reasons", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.MULTILINE)
    assert codes == [r.value for r in RejectReason]


def test_the_version_is_judged_before_the_rest() -> None:
    # A v2 event may look nothing like v1: it must not be reported as missing fields.
    assert _one(b'{"schema_version": 2, "totally": "different"}') == (
        RejectReason.UNKNOWN_SCHEMA_VERSION
    )


def test_details_tell_the_producer_what_to_fix() -> None:
    batch = decode_batch([_event(value=9.0), _event(event_type="like")], NOW)
    details = [r.detail for r in batch.rejections]
    assert "[0.5, 5]" in details[0]
    assert "impression" in details[1] and "'like'" in details[1]


def test_control_character_details_name_the_field_and_the_character() -> None:
    batch = decode_batch([
        _event(user_id="u\u0000x"),
        _event(event_type="click\x7f"),
        _event(context={"device": "ios", "po\x1fs": 3}),
        _event(user_id="u\x01", item_id="i\x02"),  # the first id in field order
        _event(item_id="i\x02", item_features={"\x03": 1}),  # ids before keys
    ], NOW)
    fix = ("; remove it (ids, event types and map keys must not contain U+0000-U+001F or "
           "U+007F)")
    assert [(r.index, r.reason, r.detail) for r in batch.rejections] == [
        (0, RejectReason.CONTROL_CHARACTER,
         "'user_id' holds the control character U+0000 at index 1" + fix),
        (1, RejectReason.CONTROL_CHARACTER,
         "'event_type' holds the control character U+007F at index 5" + fix),
        (2, RejectReason.CONTROL_CHARACTER,
         "the key 'po\\x1fs' of 'context' holds the control character U+001F at index 2"
         + fix),
        (3, RejectReason.CONTROL_CHARACTER,
         "'user_id' holds the control character U+0001 at index 1" + fix),
        (4, RejectReason.CONTROL_CHARACTER,
         "'item_id' holds the control character U+0002 at index 1" + fix),
    ]
    # The detail goes into a dead-letter header: it holds no control character itself.
    assert not any(c < " " or c == "\x7f" for r in batch.rejections for c in r.detail)


@pytest.mark.parametrize(("changes", "reason"), [
    # The types and limits pydantic checks come first, as in the table of reasons...
    ({"user_id": "u\x00", "value": "4"}, RejectReason.WRONG_TYPE),
    ({"event_type": "click\x00", "value": "4"}, RejectReason.WRONG_TYPE),
    ({"item_id": "\x7f", "context": {str(i): i for i in range(17)}},
     RejectReason.MAP_TOO_LARGE),
    ({"user_id": "u\x00", "context": {"k" * 65: 1}}, RejectReason.FIELD_TOO_LONG),
    # ...then the batch-wide checks, in the order of the table.
    ({"event_id": "", "user_id": "u\x00"}, RejectReason.EMPTY_ID),
    ({"event_id": "e" * 129, "context": {"\x00": 1}}, RejectReason.ID_TOO_LONG),
    ({"user_id": "u\x00", "timestamp": "yesterday"}, RejectReason.CONTROL_CHARACTER),
    ({"user_id": "u\x00", "value": 9.0}, RejectReason.CONTROL_CHARACTER),
    ({"context": {"\x7f": 1}, "timestamp": NOW - 10**9}, RejectReason.CONTROL_CHARACTER),
])
def test_which_reason_wins_with_a_control_character(changes: dict[str, object],
                                                    reason: RejectReason) -> None:
    assert _one(_event(**changes)) == reason


# -- accepted columns ------------------------------------------------------------------------


def test_columns_of_accepted_events() -> None:
    raws = [
        _event(),
        _event(event_id="e-2", event_type="click", user_id=42, item_id=-7, value=None,
               timestamp="2026-11-27T18:30:00.250+01:00", context=None),
        b"garbage",
        _event(event_id="e-3", event_type="impression", timestamp=NOW - 5, value=2.5,
               item_features={"price": 3}),
    ]
    b = decode_batch(raws, NOW)
    assert b.index.tolist() == [0, 1, 3]
    assert b.n_input == 4
    assert b.event_id == ["e-1", "e-2", "e-3"]
    assert b.user_id == ["u42", "42", "u42"]
    assert b.item_id == ["i7", "-7", "i7"]
    assert b.event_type.tolist() == [
        EVENT_TYPE_CODES["rating"], EVENT_TYPE_CODES["click"], EVENT_TYPE_CODES["impression"]
    ]
    assert b.event_type.dtype == np.int8
    assert b.ts_ms.tolist() == [NOW, NOW - 30 * 60_000 + 250, NOW - 5]
    assert b.value[0] == 4.0 and np.isnan(b.value[1]) and b.value[2] == 2.5
    assert b.context[0] == {"device": "ios", "position": 3} and b.context[1] is None
    assert b.item_features[2] == {"price": 3} and b.user_features == [None, None, None]


def test_values_that_are_not_bytes_are_rejected_not_raised() -> None:
    b = decode_batch([_event(), 42, _event(event_id="e-2")], NOW)  # type: ignore[list-item]
    assert b.index.tolist() == [0, 2]
    assert [(r.index, r.reason) for r in b.rejections] == [(1, RejectReason.WRONG_TYPE)]


def test_empty_batch() -> None:
    b = decode_batch([], NOW)
    assert len(b) == 0 and b.rejections == [] and b.n_input == 0


# -- totality ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
# Text that often holds a control character (C0, DEL) next to ordinary and C1 characters.
controlled = st.text(st.sampled_from("a\x00\t\n\x1f \x7f\x80\x9f\u00e9"), min_size=1,
                     max_size=3)
near_events = st.fixed_dictionaries(
    {},
    optional={
        "schema_version": st.sampled_from([1, 1, 1, 2, "1", None]),
        "event_id": st.text(max_size=3) | st.integers() | controlled,
        "event_type": st.sampled_from([*EVENT_TYPE_CODES, "x", 1, "click\x00", "\x7fclick"]),
        "user_id": st.text(max_size=3) | st.integers(min_value=-(2**70), max_value=2**70)
        | controlled,
        "item_id": st.text(max_size=3) | st.integers() | controlled,
        "timestamp": st.integers(min_value=NOW - 10**11, max_value=NOW + 10**9)
        | st.sampled_from(["2026-11-27T17:00:00Z", "2026-11-27T17:00:00+05:00", "bad"]),
        "value": st.floats(allow_nan=True) | st.none() | st.integers(),
        "context": st.none() | st.dictionaries(st.text(max_size=3) | controlled, json_values,
                                               max_size=3),
    },
)


def _encode(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


messages = st.one_of(
    st.none(),
    st.binary(max_size=64),
    json_values.map(_encode),
    near_events.map(_encode),
    near_events.map(lambda e: _encode(e)[: len(_encode(e)) // 2]),  # truncated
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=12))
def test_every_message_is_either_accepted_or_rejected_once(values: list[bytes | None]) -> None:
    b = decode_batch(values, NOW, watermarks=_stream_at_now())
    rejected = [r.index for r in b.rejections]
    assert sorted(rejected + b.index.tolist()) == list(range(len(values)))
    assert all(isinstance(r.reason, RejectReason) and r.detail for r in b.rejections)
    assert RejectReason.INTERNAL_ERROR not in {r.reason for r in b.rejections}
    n = len(b)
    assert len(b.event_id) == len(b.user_id) == len(b.item_id) == len(b.context) == n
    assert len(b.event_type) == len(b.ts_ms) == len(b.value) == n
    assert all(isinstance(x, str) and 0 < len(x) <= 128 for x in b.user_id + b.item_id)
    keys = [k for name in ("context", "user_features", "item_features")
            for m in getattr(b, name) if m for k in m]
    assert not any(CONTROL.search(x) for x in b.event_id + b.user_id + b.item_id + keys)
    assert bool(np.all(b.ts_ms <= NOW + 300_000)) and bool(np.all(b.ts_ms >= NOW - 86_400_000))


# -- lateness against the stream's watermark ---------------------------------------------------


def test_history_replayed_in_time_order_is_accepted_with_default_settings() -> None:
    # A public ratings set from 1997-1998, in time order: every event years before "now".
    start = parse_rfc3339_one("1997-09-20T00:00:00Z")
    assert start is not None
    values = [_event(event_id=f"e{i}", timestamp=start + i * 600_000) for i in range(2000)]
    marks = Watermarks()
    for lo in range(0, 2000, 300):
        batch = decode_batch(values[lo:lo + 300], NOW, watermarks=marks)
        assert batch.rejections == []
    assert marks.marks == {0: start + 1999 * 600_000}


def test_an_event_far_older_than_its_neighbours_is_still_too_old() -> None:
    start = NOW - 30 * 86_400_000
    old = _event(event_id="late", timestamp=start - 2 * 86_400_000)  # 2 days behind
    values = [_event(event_id=f"e{i}", timestamp=start + i) for i in range(10)]
    batch = decode_batch([*values[:5], old, *values[5:]], NOW)
    (rejection,) = batch.rejections
    assert (rejection.index, rejection.reason) == (5, RejectReason.TIMESTAMP_TOO_OLD)
    assert "behind the stream" in rejection.detail and "allowed lateness" in rejection.detail


def test_lateness_is_judged_per_partition() -> None:
    # Partition 1 is a day and a half behind partition 0: on time for its own partition.
    day = 86_400_000
    p0 = [_event(event_id=f"a{i}", timestamp=NOW - i) for i in range(3)][::-1]
    p1 = [_event(event_id=f"b{i}", timestamp=NOW - day * 3 // 2 + i) for i in range(3)]
    parts = np.array([0, 0, 0, 1, 1, 1], dtype=np.int64)
    marks = Watermarks()
    assert decode_batch([*p0, *p1], NOW, watermarks=marks, partitions=parts).rejections == []
    assert decode_batch([*p0, *p1], NOW, watermarks=Watermarks()).rejections != []
