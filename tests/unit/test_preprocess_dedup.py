"""Deduplicator: matches a plain-Python reference, stays bounded, and restores exactly."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.preprocess.dedup import Deduplicator


def reference(keys: list[int], ts: list[int], cap: int, window_ms: int) -> list[bool]:
    ring: deque[tuple[int, int]] = deque()
    present: set[int] = set()
    watermark = -(2**63)
    out = []
    for key, t in zip(keys, ts, strict=True):
        key = key or 1  # 0 marks an empty slot inside the table
        if t > watermark:
            watermark = t
            while window_ms and ring and ring[0][1] < watermark - window_ms:
                present.discard(ring.popleft()[0])
        if key in present:
            out.append(True)
            continue
        if len(ring) == cap:
            present.discard(ring.popleft()[0])
        ring.append((key, t))
        present.add(key)
        out.append(False)
    return out


streams = st.lists(
    st.tuples(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=200)),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(streams, st.integers(min_value=1, max_value=12), st.sampled_from([0, 10, 50]),
       st.integers(min_value=1, max_value=50))
def test_matches_reference(
    events: list[tuple[int, int]], cap: int, window_ms: int, batch: int
) -> None:
    keys = [k for k, _ in events]
    ts = [t for _, t in events]
    d = Deduplicator(cap, window_ms)
    got: list[bool] = []
    for start in range(0, len(keys), batch):
        got += d.observe(np.array(keys[start:start + batch], dtype=np.uint64),
                         np.array(ts[start:start + batch], dtype=np.int64)).tolist()
    assert got == reference(keys, ts, cap, window_ms)
    assert len(d) <= cap


@settings(max_examples=60, deadline=None)
@given(streams, streams, st.integers(min_value=1, max_value=12), st.sampled_from([0, 20]))
def test_state_round_trip(
    first: list[tuple[int, int]], second: list[tuple[int, int]], cap: int, window_ms: int
) -> None:
    def arrays(events: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([k for k, _ in events], dtype=np.uint64),
                np.array([t for _, t in events], dtype=np.int64))

    a = Deduplicator(cap, window_ms)
    a.observe(*arrays(first))
    b = Deduplicator(cap, window_ms)
    b.set_state(*a.get_state())
    assert np.array_equal(a.observe(*arrays(second)), b.observe(*arrays(second)))
    (sa, ma), (sb, mb) = a.get_state(), b.get_state()
    assert ma == mb and sa.keys() == sb.keys()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_disabled_window_flags_nothing() -> None:
    d = Deduplicator(0)
    assert not d.observe(np.array([1, 1, 1], dtype=np.uint64), np.zeros(3, np.int64)).any()


def test_memory_grows_with_the_ids_and_stops_at_the_window() -> None:
    d = Deduplicator(100_000, 0)
    empty = d.nbytes
    assert empty < 100_000 * 8  # not the whole window up front
    rng = np.random.default_rng(0)
    keys = rng.integers(1, 2**63, 300_000).astype(np.uint64)
    sizes = []
    for start in range(0, len(keys), 20_000):
        d.observe(keys[start:start + 20_000], np.arange(start, start + 20_000))
        sizes.append(d.nbytes)
    assert len(d) == 100_000
    # Bounded by the window (ring 16 bytes an id, table at most 4 x 16 bytes an id)...
    assert max(sizes) <= 100_000 * 16 + 4 * 100_000 * 16
    # ...and once the window is full, it no longer grows.
    assert sizes[-1] == sizes[len(sizes) // 2] and sizes[0] < sizes[-1]


def test_state_holds_only_the_live_ids() -> None:
    d = Deduplicator(100_000, window_ms=10)
    d.observe(np.arange(1, 501, dtype=np.uint64), np.arange(500))
    arrays, meta = d.get_state()
    # Ids more than 10 ms behind the newest (499) were forgotten: 489..499 remain.
    assert arrays["keys"].tolist() == list(range(490, 501))
    assert arrays["ts"].tolist() == list(range(489, 500)) and meta["watermark"] == 499


def test_restoring_into_a_smaller_window_is_refused() -> None:
    a = Deduplicator(10)
    a.observe(np.arange(1, 9, dtype=np.uint64), np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="dedup_window_events"):
        Deduplicator(4).set_state(*a.get_state())
