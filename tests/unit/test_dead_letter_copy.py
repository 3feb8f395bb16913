"""build_copy: every form fits the topic's limit and still says what the original was."""

from __future__ import annotations

import hashlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.ingest.dead_letter_copy import (
    HEADER_COPY,
    HEADER_CUT,
    HEADER_ORIGINAL_SHA256,
    HEADER_ORIGINAL_SIZE,
    MIN_RECORD_BYTES,
    RECORD_OVERHEAD,
    CopyForm,
    build_copy,
)

OWN = {"freshrec.reason": b"id_too_long", "freshrec.detail": b"d" * 1000,
       "freshrec.source.topic": b"events"}
SOURCE = ("events", 3, 41)

sizes = st.integers(0, 3_000_000)
headers = st.lists(st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 20_000)),
                   max_size=6)


@settings(max_examples=150, deadline=None)
@given(key_size=st.one_of(st.none(), st.integers(0, 200_000)), value_size=sizes,
       header_sizes=headers, limit=st.integers(0, 2_000_000),
       form=st.sampled_from(list(CopyForm)))
def test_every_copy_fits_and_identifies_the_original(
    key_size: int | None, value_size: int, header_sizes: list[tuple[str, int]], limit: int,
    form: CopyForm,
) -> None:
    key = None if key_size is None else b"k" * key_size
    value = bytes(range(256)) * (value_size // 256) + b"v" * (value_size % 256)
    original_headers = [(name, b"h" * n) for name, n in header_sizes]
    copy = build_copy(key, value, original_headers, OWN, form, max_bytes=limit,
                      source=SOURCE)
    assert copy.size <= max(limit, MIN_RECORD_BYTES) - RECORD_OVERHEAD
    assert copy.form >= form  # never larger than asked for
    h = dict(copy.headers)
    assert h[HEADER_COPY] == copy.form.label.encode()
    for name, v in OWN.items():
        assert h[name] == v  # freshrec's own headers are in every form
    if copy.form == CopyForm.FULL:
        assert (copy.key, copy.value, copy.headers[:len(original_headers)]) == (
            key, value, original_headers)
        return
    digest = hashlib.sha256(value).hexdigest()
    assert h[HEADER_ORIGINAL_SIZE] == str(len(value)).encode()
    assert h[HEADER_ORIGINAL_SHA256] == digest.encode()
    if copy.form == CopyForm.CUT:
        assert copy.value is not None and value.startswith(copy.value)
        cut = h[HEADER_CUT].decode().split(",")
        assert ("value" in cut) == (len(copy.value) < len(value))
        assert ("key" in cut) == (key is not None and copy.key != key)
    else:
        assert copy.key is None
        record = orjson.loads(copy.value or b"")
        assert record["source"] == {"topic": "events", "partition": 3, "offset": 41}
        assert (record["reason"], record["size"], record["sha256"]) == (
            "id_too_long", len(value), digest)


def test_a_copy_that_fits_is_full_and_a_failed_full_copy_can_be_asked_smaller() -> None:
    full = build_copy(b"k", b"{}", [("t", b"1")], OWN, CopyForm.FULL, max_bytes=1_048_588,
                      source=SOURCE)
    assert full.form == CopyForm.FULL
    cut = build_copy(b"k", b"{}", [("t", b"1")], OWN, CopyForm.CUT, max_bytes=1_048_588,
                     source=SOURCE)
    assert (cut.form, cut.value, dict(cut.headers)[HEADER_CUT]) == (CopyForm.CUT, b"{}",
                                                                      b"none")
    assert CopyForm.FULL.smaller() == CopyForm.CUT
    assert CopyForm.CUT.smaller() == CopyForm.REFERENCE
    assert CopyForm.REFERENCE.smaller() is None


def test_the_poison_pill_of_the_issue_is_cut_to_the_brokers_limit() -> None:
    # A valid event whose user id has about a million characters: just under the broker's
    # default limit as a message, over it once freshrec's headers are added.
    value = b'{"schema_version":1,"user_id":"' + b"u" * 1_048_000 + b'"}'
    copy = build_copy(b"user-1", value, [], OWN, CopyForm.FULL, max_bytes=1_048_588,
                      source=SOURCE)
    assert copy.form == CopyForm.CUT
    assert copy.size <= 1_048_588 - RECORD_OVERHEAD
    assert dict(copy.headers)[HEADER_CUT] == b"value"
