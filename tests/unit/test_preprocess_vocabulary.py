"""Vocabulary: admission after K sightings, eviction after T, recycled rows reported."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.preprocess.vocabulary import HashingEncoder, Vocabulary


def enc(v: Vocabulary, keys: list[int], ts: list[int]) -> tuple[list[int], list[int]]:
    rows, recycled = v.encode(np.array(keys, dtype=np.uint64), np.array(ts, dtype=np.int64))
    return rows.tolist(), recycled.tolist()


def test_admitted_at_the_kth_sighting() -> None:
    v = Vocabulary(capacity=100, admit_after=3)
    rows, _ = enc(v, [5, 6, 5, 5, 6, 5], [0, 1, 2, 3, 4, 5])
    assert rows[:3] == [0, 0, 0]
    assert rows[3] != 0 and rows[5] == rows[3]  # 3rd sighting of 5, then stable
    assert rows[4] == 0  # 6 seen twice only
    assert len(v) == 1 and v.counters()["admitted"] == 1


def test_evicted_after_unseen_for_t_and_row_recycled_for_a_new_id() -> None:
    v = Vocabulary(capacity=3, admit_after=1, evict_after_ms=100)
    rows, recycled = enc(v, [1, 2], [0, 0])
    assert rows == [1, 2] and recycled == []
    rows, recycled = enc(v, [3], [50])  # full, nobody old enough: row 0
    assert rows == [0] and v.counters()["full"] == 1
    rows, recycled = enc(v, [2, 3], [120, 130])  # 1 unseen for > 100 ms: its row goes to 3
    assert rows == [2, 1] and recycled == [1]
    rows, _ = enc(v, [1], [140])  # 1 is a new id now; 3 is too recent to evict
    assert rows == [0]


def test_recently_seen_rows_survive_eviction() -> None:
    v = Vocabulary(capacity=3, admit_after=1, evict_after_ms=100)
    enc(v, [1, 2], [0, 0])
    enc(v, [1], [90])  # 1 seen again: 2 is now the oldest
    rows, recycled = enc(v, [3], [150])
    assert rows == [2] and recycled == [2]
    assert enc(v, [1], [160])[0] == [1]


def test_aged_rows_are_kept_while_the_table_has_room() -> None:
    # An id that went quiet keeps its row (and what it learned) until a new id needs one.
    v = Vocabulary(capacity=5, admit_after=1, evict_after_ms=100)  # rows 1-4 (0: unknown)
    enc(v, [1, 2, 3], [0, 0, 0])
    rows, recycled = enc(v, [4, 1], [500, 501])  # a fresh row for 4; 1 comes back to its own
    assert rows == [4, 1] and recycled == []
    assert len(v) == 4 and v.counters()["evicted"] == 0
    rows, recycled = enc(v, [5], [502])  # full now: the aged rows of 2 and 3 are freed
    assert rows == recycled and rows[0] in (2, 3) and v.counters()["evicted"] == 2
    assert v.evict_expired() == 0  # nothing left that has aged out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 30), st.integers(-20, 40)), min_size=1, max_size=200),
    st.lists(st.integers(1, 199), max_size=12),
    st.integers(2, 8), st.integers(1, 3), st.sampled_from([5, 30, 1000]),
)
def test_rows_and_state_do_not_depend_on_batch_boundaries(
    events: list[tuple[int, int]], cuts: list[int], capacity: int, k: int, t: int,
) -> None:
    """Encoding a stream in one call or cut anywhere gives the same rows, the same changes
    of owner at the same positions and the same state (out-of-order times included)."""
    keys = np.array([key for key, _ in events], dtype=np.uint64)
    ts = np.maximum(np.cumsum([step for _, step in events]), 0).astype(np.int64)
    ids = [f"id{key}" for key in keys.tolist()]

    def encode(bounds: list[int]) -> tuple[Vocabulary, list[int], list[tuple[int, int]]]:
        v = Vocabulary(capacity=capacity, admit_after=k, evict_after_ms=t, candidate_slots=8)
        rows: list[int] = []
        changes: list[tuple[int, int]] = []
        for lo, hi in itertools.pairwise(bounds):
            rows += v.encode(keys[lo:hi], ts[lo:hi], ids[lo:hi])[0].tolist()
            changes += [(lo + at, row) for row, at in zip(
                v.last_recycled.tolist(), v.last_recycled_at.tolist(), strict=True)]
        return v, rows, changes

    whole, rows, changes = encode([0, len(keys)])
    cut, cut_rows, cut_changes = encode(sorted({0, len(keys), *(c for c in cuts
                                                                 if c < len(keys))}))
    assert cut_rows == rows and cut_changes == changes
    (a, ma), (b, mb) = whole.get_state(), cut.get_state()
    assert ma == mb and a.keys() == b.keys()
    assert all(a[name].tobytes() == b[name].tobytes() for name in a), [
        name for name in a if a[name].tobytes() != b[name].tobytes()]
    assert whole.row_ids() == cut.row_ids()


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 25), st.integers(0, 40)), max_size=150),
    st.integers(2, 8), st.integers(1, 3), st.sampled_from([5, 30, 1000]),
    st.integers(1, 40),
)
def test_invariants(
    events: list[tuple[int, int]], capacity: int, k: int, t: int, batch: int
) -> None:
    v = Vocabulary(capacity=capacity, admit_after=k, evict_after_ms=t)
    clock = 0
    owner: dict[int, int] = {}  # row -> id that last had it
    sightings: dict[int, int] = {}
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        keys = [key for key, _ in chunk]
        ts = []
        for _, step in chunk:
            clock += step
            ts.append(clock)
        rows, recycled = enc(v, keys, ts)
        live: dict[int, int] = {}
        for key, row in zip(keys, rows, strict=True):
            sightings[key] = sightings.get(key, 0) + 1
            assert 0 <= row < capacity
            if row == 0:
                continue
            assert sightings[key] >= k  # never admitted early
            # A row changes owner only when reported as recycled in that batch.
            if owner.get(row, key) != key:
                assert row in recycled
            assert live.setdefault(row, key) == key or row in recycled
            owner[row] = key
        assert len(v) <= capacity - 1
        assert sorted(set(recycled)) == recycled


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 25), st.integers(0, 40)), max_size=120),
       st.integers(0, 120))
def test_state_round_trip(events: list[tuple[int, int]], cut: int) -> None:
    keys = np.array([k for k, _ in events], dtype=np.uint64)
    ts = np.cumsum([s for _, s in events]).astype(np.int64)
    a = Vocabulary(capacity=6, admit_after=2, evict_after_ms=50, candidate_slots=8)
    a.encode(keys[:cut], ts[:cut])
    b = Vocabulary(capacity=6, admit_after=2, evict_after_ms=50, candidate_slots=8)
    b.set_state(*a.get_state())
    ra, ca = a.encode(keys[cut:], ts[cut:])
    rb, cb = b.encode(keys[cut:], ts[cut:])
    assert np.array_equal(ra, rb) and np.array_equal(ca, cb)
    assert a.counters() == b.counters()


def test_hashing_encoder_stays_in_its_rows() -> None:
    keys = np.random.default_rng(1).integers(0, 2**63, 10_000).astype(np.uint64)
    rows, recycled = HashingEncoder(bits=6).encode(keys)
    assert rows.min() >= 1 and rows.max() < 64 and len(recycled) == 0
    assert len(np.unique(rows)) == 63


def test_row_ids_follow_recycling_through_compactions_and_restores() -> None:
    v = Vocabulary(capacity=50, admit_after=1, evict_after_ms=10)
    expected: dict[int, str] = {}
    for step in range(200):  # 25 new ids per step: rows are recycled over and over
        names = [f"id-{step}-{k}-" + "é" * (k % 5) for k in range(25)]
        keys = np.array([hash(n) % 2**62 + 1 for n in names], dtype=np.uint64)
        rows, _ = v.encode(keys, np.full(25, step * 100, dtype=np.int64), names)
        expected |= {r: n for r, n in zip(rows.tolist(), names, strict=True) if r}
        v.evict_expired()
        if step % 50 == 49:
            restored = Vocabulary(capacity=50, admit_after=1, evict_after_ms=10)
            restored.set_state(*v.get_state())
            v = restored
    owned = set(v._queue_rows().tolist())
    assert v.counters()["recycled"] > 1000 and owned
    ids = v.row_ids()
    assert len(ids) == 50 and ids[0] == ""
    assert all(ids[r] == (expected[r] if r in owned else "") for r in range(1, 50))
    # The id arena was compacted along the way: it holds about the live ids, not 5000.
    assert v.nbytes < 40_000


def test_memory_and_state_follow_the_rows_in_use() -> None:
    v = Vocabulary(capacity=1 << 20, admit_after=1)
    assert v.nbytes < 30 * 2**20  # candidates are lazily committed; rows start small
    v.encode(np.arange(1, 1001, dtype=np.uint64), np.zeros(1000, dtype=np.int64))
    arrays, meta = v.get_state()
    assert meta["high"] == 1000 and len(arrays["row_key"]) == 1001
    assert sum(a.nbytes for a in arrays.values()) < 1001 * 64
