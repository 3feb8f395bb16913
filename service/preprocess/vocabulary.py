"""Ids to dense model rows: a bounded vocabulary with admission and eviction, or hashing.

A model keeps one row of parameters per user and per item, so the id → row map decides
the model's memory. :class:`Vocabulary` bounds it three ways:

* **admission by frequency**: an id gets its own row only at its ``admit_after``-th
  sighting; before that it maps to row 0, the shared "unknown" row. One-off ids (bots,
  crawlers, typos) never take a row. Sightings are counted in a 4-way set-associative
  table of fixed size, so counting is bounded too: under pressure a count may be lost,
  which delays an admission but never admits early.
* **eviction by age, under pressure**: an id unseen for ``evict_after_ms`` of event time
  gives its row back when the table is full and a new id needs a row; until then it keeps
  its row, and what its row learned (ids that come back after months are common: a film
  rated again, a user back from holiday). Rows wait in a queue ordered by when they were
  last queued; a hit requeues its row only when that is more than ``evict_after_ms / 64``
  old, and the eviction scan gives a second chance to a row seen since it was queued, so
  the victim is found in amortised O(1) without touching the queue on most hits.
  Eviction runs inside :meth:`encode`, at the event that needs the row: which rows are
  free, and so which row a new id gets, is a function of the events alone, however they
  are cut into batches (a batch-end sweep would follow the broker's fetch timing).
* **recycling**: a row that changes owner is reported by :meth:`encode`, and the learner
  must reinitialise it, so a new id never inherits an old id's factors.

When every row is taken and none has aged out, new ids stay on row 0 (counted as
``full``) until one does.

Ids are keyed by a 64-bit hash: two ids share a row with probability about
``capacity**2 / 2**65`` (3e-8 at a million rows).

:class:`HashingEncoder` is the stateless alternative: ``row = 1 + hash mod (2**bits - 1)``.

Example
-------
>>> import numpy as np
>>> v = Vocabulary(capacity=3, admit_after=2, evict_after_ms=1000)
>>> keys = np.array([7, 7, 8, 9, 9], dtype=np.uint64)
>>> rows, recycled = v.encode(keys, np.array([0, 1, 2, 3, 4]))
>>> rows.tolist(), recycled.tolist()  # 7 and 9 admitted at their 2nd sighting
([0, 1, 0, 0, 2], [])
>>> rows, recycled = v.encode(np.array([5, 5], dtype=np.uint64), np.array([5000, 5001]))
>>> rows.tolist(), recycled.tolist()  # full, 7 and 9 aged out: 5 takes a recycled row
([0, 2], [2])

References
----------
Einziger, Friedman, Manes. TinyLFU: A Highly Efficient Cache Admission Policy (2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from service.events.packed import PackedStrings
from service.preprocess.table import (
    Table,
    find,
    insert,
    new_table,
    nonzero,
    remove,
    reserve,
    value_at,
)
from service.residency import prefault

_WAYS = 4
_INT64_MIN = np.iinfo(np.int64).min
_INITIAL_ROWS = 1024  # rows allocated before the first doubling
# meta slots. HIGH: the highest row ever handed out. Rows above it are fresh; every row at
# or below it is either owned (in the queue) or in the freed stack.
_SIZE, _WATERMARK, _FREED_TOP, _ADMITTED, _EVICTED, _RECYCLED, _FULL, _HIGH = range(8)
_COUNTERS = {"admitted": _ADMITTED, "evicted": _EVICTED, "recycled": _RECYCLED,
             "full": _FULL}


@njit(cache=True, inline="always")
def _unlink(prev: npt.NDArray[np.int64], nxt: npt.NDArray[np.int64], r: int) -> None:
    p, q = prev[r], nxt[r]
    nxt[p] = q
    prev[q] = p


@njit(cache=True, inline="always")
def _append(prev: npt.NDArray[np.int64], nxt: npt.NDArray[np.int64], r: int) -> None:
    # Row 0 is the sentinel of the circular least-recently-seen list: nxt[0] is the oldest.
    tail = prev[0]
    nxt[tail] = r
    prev[r] = tail
    nxt[r] = 0
    prev[0] = r


@njit(cache=True)
def _evict_expired(
    horizon: int,
    row_key: npt.NDArray[np.uint64],
    row_seen: npt.NDArray[np.int64],
    prev: npt.NDArray[np.int64],
    nxt: npt.NDArray[np.int64],
    freed: npt.NDArray[np.int64],
    table: Table,
    meta: npt.NDArray[np.int64],
) -> None:
    while nxt[0] != 0:
        r = nxt[0]
        if row_seen[r, 1] >= horizon:
            # Queued at or after the horizon, and so seen then too; every row behind it
            # was queued later still: nothing has expired.
            break
        if row_seen[r, 0] >= horizon:
            if row_seen[r, 1] < row_seen[r, 0]:
                # Seen since it was queued (hits only requeue lazily): second chance.
                _unlink(prev, nxt, r)
                _append(prev, nxt, r)
                row_seen[r, 1] = row_seen[r, 0]
                continue
            break
        _unlink(prev, nxt, r)
        remove(table, row_key[r])
        row_key[r] = 0
        freed[meta[_FREED_TOP]] = r
        meta[_FREED_TOP] += 1
        meta[_SIZE] -= 1
        meta[_EVICTED] += 1


@njit(cache=True)
def _encode(
    keys: npt.NDArray[np.uint64],
    ts: npt.NDArray[np.int64],
    capacity: int,
    admit_after: int,
    evict_after_ms: int,
    granularity: int,
    row_key: npt.NDArray[np.uint64],
    row_seen: npt.NDArray[np.int64],
    prev: npt.NDArray[np.int64],
    nxt: npt.NDArray[np.int64],
    freed: npt.NDArray[np.int64],
    table: Table,
    cand_key: npt.NDArray[np.uint64],
    cand_count: npt.NDArray[np.int64],
    cand_seen: npt.NDArray[np.int64],
    meta: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
           npt.NDArray[np.int64]]:
    # The caller sized the row arrays for every admission this batch could make.
    n = len(keys)
    rows = np.zeros(n, dtype=np.int64)
    recycled = np.empty(n, dtype=np.int64)
    recycled_at = np.empty(n, dtype=np.int64)
    n_recycled = 0
    admitted = np.empty(n, dtype=np.int64)
    n_admitted = 0
    n_buckets = len(cand_key) // 4
    last = capacity - 1
    for i in range(n):
        key = nonzero(keys[i])
        t = ts[i]
        advanced = t > meta[_WATERMARK]
        if advanced:
            meta[_WATERMARK] = t
        # One pass; every 'break' ends the encoding of event i.
        while True:
            slot = find(table, key)
            if slot >= 0:
                r = value_at(table, slot)
                if t > row_seen[r, 0]:
                    row_seen[r, 0] = t
                    # Requeue only when the queue position is stale by more than
                    # `granularity`: moving a row on every hit costs four cache misses.
                    if t - row_seen[r, 1] > granularity:
                        _unlink(prev, nxt, r)
                        _append(prev, nxt, r)
                        row_seen[r, 1] = t
                rows[i] = r
                break
            if admit_after > 1:
                # High bits pick the bucket: the table above uses the low ones.
                base = np.int64((key >> np.uint64(40)) % np.uint64(n_buckets)) * 4
                way = -1
                victim = -1  # an empty way if any, else the least recently seen
                for w in range(base, base + 4):
                    if cand_key[w] == key:
                        way = w
                        break
                    if cand_key[w] == np.uint64(0):
                        if victim < 0 or cand_key[victim] != np.uint64(0):
                            victim = w
                    elif victim < 0 or (
                        cand_key[victim] != np.uint64(0) and cand_seen[w] < cand_seen[victim]
                    ):
                        victim = w
                if way < 0:
                    way = victim
                    cand_key[way] = key
                    cand_count[way] = 0
                cand_count[way] += 1
                if t > cand_seen[way]:
                    cand_seen[way] = t
                if cand_count[way] < admit_after:
                    break  # row 0 until admitted
            # Admit: a freed row, else a fresh one, else one aged out at this event's time
            # (this event may have moved the watermark: the sweep below has not run yet).
            if meta[_FREED_TOP] == 0 and meta[_HIGH] == last:
                _evict_expired(meta[_WATERMARK] - evict_after_ms, row_key, row_seen, prev,
                               nxt, freed, table, meta)
            if meta[_FREED_TOP] == 0 and meta[_HIGH] == last:
                meta[_FULL] += 1
                break  # vocabulary full: stays on row 0, and keeps its count for later
            if admit_after > 1:
                cand_key[way] = 0
                cand_count[way] = 0
                cand_seen[way] = 0
            if meta[_FREED_TOP] > 0:
                meta[_FREED_TOP] -= 1
                r = freed[meta[_FREED_TOP]]
                recycled[n_recycled] = r  # it had an owner: the learner must reset it
                recycled_at[n_recycled] = i
                n_recycled += 1
                meta[_RECYCLED] += 1
            else:
                meta[_HIGH] += 1
                r = meta[_HIGH]
            row_key[r] = key
            row_seen[r, 0] = t
            row_seen[r, 1] = t
            insert(table, key, r)
            _append(prev, nxt, r)
            meta[_SIZE] += 1
            meta[_ADMITTED] += 1
            rows[i] = r
            admitted[n_admitted] = i
            n_admitted += 1
            break
        # Rows that aged out are taken back only when a new id needs one and the table
        # is full (above): a row that could stay keeps what its id learned. Evicting as
        # soon as an id went quiet for evict_after_ms cost MovieLens 1M (users and films
        # that come back after months) progressive RMSE 0.9205 against 0.9084.
    return rows, recycled[:n_recycled], recycled_at[:n_recycled], admitted[:n_admitted]


@njit(cache=True)
def _queue(nxt: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.int64]:
    """Owned rows, least recently queued first."""
    out = np.empty(size, dtype=np.int64)
    r = nxt[0]
    for k in range(size):
        out[k] = r
        r = nxt[r]
    return out


@njit(cache=True)
def _rebuild(row_key: npt.NDArray[np.uint64], table: Table) -> None:
    for r in range(1, len(row_key)):
        if row_key[r] != np.uint64(0):
            insert(table, row_key[r], r)


@njit(cache=True)
def _gather_bytes(
    arena: npt.NDArray[np.uint8],
    start: npt.NDArray[np.int64],
    length: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The byte strings ``arena[start[k]:start[k] + length[k]]`` end to end, and offsets."""
    offsets = np.zeros(len(start) + 1, dtype=np.int64)
    for k in range(len(start)):
        offsets[k + 1] = offsets[k] + length[k]
    out = np.empty(offsets[-1], dtype=np.uint8)
    for k in range(len(start)):
        out[offsets[k]:offsets[k + 1]] = arena[start[k]:start[k] + length[k]]
    return out, offsets


class Vocabulary:
    """A bounded id → row map with frequency admission, age eviction and row recycling.

    Row arrays and the lookup table start small and double as rows are handed out, up to
    ``capacity``; :meth:`get_state` exports only owned rows, freed rows and counted
    candidates, so a checkpoint is proportional to the ids present, not to the capacity.

    Parameters
    ----------
    capacity
        Rows including row 0 ("unknown"): at most ``capacity - 1`` ids at a time.
    admit_after
        Sightings before an id gets its own row (1: at once).
    evict_after_ms
        An id unseen for this much event time may lose its row.
    candidate_slots
        Ids being counted towards admission (default: ``capacity``, rounded up to 4).
    """

    def __init__(
        self,
        capacity: int,
        admit_after: int = 1,
        evict_after_ms: int = 30 * 86_400_000,
        candidate_slots: int | None = None,
    ) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 (row 0 is reserved), got {capacity}")
        if admit_after < 1:
            raise ValueError(f"admit_after must be at least 1, got {admit_after}")
        if evict_after_ms < 1:
            raise ValueError(f"evict_after_ms must be at least 1, got {evict_after_ms}")
        self.capacity = capacity
        self.admit_after = admit_after
        self.evict_after_ms = evict_after_ms
        slots = capacity if candidate_slots is None else candidate_slots
        n_cand = max(_WAYS, -(-slots // _WAYS) * _WAYS) if admit_after > 1 else _WAYS
        # The candidate buckets are addressed modulo their number, so their size is fixed;
        # np.zeros lets the OS commit their pages only as ids land in them.
        self._cand_key = np.zeros(n_cand, dtype=np.uint64)
        self._cand_count = np.zeros(n_cand, dtype=np.int64)
        self._cand_seen = np.zeros(n_cand, dtype=np.int64)
        self._meta = np.array([0, _INT64_MIN, 0, 0, 0, 0, 0, 0], dtype=np.int64)
        self._allocate(min(capacity, _INITIAL_ROWS))
        # Original ids by row, for serving: UTF-8 in an append-only arena, compacted when
        # half of it belongs to ids that lost their row. Written only on admission (rare).
        self._arena = np.zeros(0, dtype=np.uint8)
        self._arena_used = 0
        #: The changes of owner of the last :meth:`encode`, in stream order (rows may
        #: repeat), and the position of the event that took each row.
        self.last_recycled = np.zeros(0, dtype=np.int64)
        self.last_recycled_at = np.zeros(0, dtype=np.int64)

    def _allocate(self, rows: int) -> None:
        self._row_key = np.zeros(rows, dtype=np.uint64)
        # [last seen, last queued]: event times; the queue is ordered by the second.
        self._row_seen = np.zeros((rows, 2), dtype=np.int64)
        self._prev = np.zeros(rows, dtype=np.int64)
        self._next = np.zeros(rows, dtype=np.int64)
        self._freed = np.zeros(rows, dtype=np.int64)  # a stack: rows given back, to reuse
        self._id_start = np.zeros(rows, dtype=np.int64)
        self._id_len = np.zeros(rows, dtype=np.int64)
        self._table = new_table(min(rows, _INITIAL_ROWS))

    def _grow(self, rows: int) -> None:
        """Make room for rows ``[0, rows)`` (by doubling, at most ``capacity``)."""
        have = len(self._row_key)
        if rows <= have:
            return
        size = min(self.capacity, max(rows, 2 * have))
        for name in ("_row_key", "_row_seen", "_prev", "_next", "_freed", "_id_start",
                     "_id_len"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[:have] = old
            setattr(self, name, new)

    def preallocate(self) -> None:
        """Grow to ``capacity`` rows now and fault every page in (see ``preallocate``)."""
        self._grow(self.capacity)
        self._table = reserve(self._table, self.capacity)
        for name in ("_row_key", "_row_seen", "_prev", "_next", "_freed", "_id_start",
                     "_id_len", "_table", "_cand_key", "_cand_count", "_cand_seen"):
            prefault(getattr(self, name))

    def __len__(self) -> int:
        """Ids that own a row now."""
        return int(self._meta[_SIZE])

    @property
    def nbytes(self) -> int:
        """Bytes allocated now (grows with the rows handed out, up to the capacity)."""
        return sum(a.nbytes for a in (
            self._row_key, self._row_seen, self._prev, self._next, self._freed,
            self._id_start, self._id_len, self._table, self._cand_key, self._cand_count,
            self._cand_seen, self._arena, self._meta))

    def counters(self) -> dict[str, int]:
        """Totals since creation: admitted, evicted, recycled, full (admissions refused)."""
        return {name: int(self._meta[k]) for name, k in _COUNTERS.items()}

    def encode(
        self,
        keys: npt.NDArray[np.uint64],
        ts_ms: npt.NDArray[np.int64],
        ids: Sequence[str] | PackedStrings | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Rows of ``keys`` seen at ``ts_ms``, and the rows that changed owner (unique).

        ``ids`` (the original strings of ``keys``) are remembered for the rows they are
        admitted to, so that :meth:`row_ids` can map rows back to ids for serving.

        Every change of owner is also kept in stream order in :attr:`last_recycled` and
        :attr:`last_recycled_at` (the position in ``keys`` of the id that took the row),
        so that a learner can reinitialise each row exactly where it changed hands.
        """
        self._grow(min(self.capacity, int(self._meta[_HIGH]) + 1 + len(keys)))
        self._table = reserve(self._table, min(self.capacity, len(self) + len(keys)))
        rows, recycled, recycled_at, admitted = _encode(
            np.ascontiguousarray(keys, dtype=np.uint64),
            np.ascontiguousarray(ts_ms, dtype=np.int64),
            self.capacity, self.admit_after, self.evict_after_ms,
            max(1, self.evict_after_ms // 64),
            self._row_key, self._row_seen, self._prev, self._next,
            self._freed, self._table,
            self._cand_key, self._cand_count, self._cand_seen, self._meta,
        )
        if len(admitted):
            self._remember_ids(rows[admitted], admitted, ids)
        self.last_recycled, self.last_recycled_at = recycled, recycled_at
        if len(recycled) > 1:
            recycled = np.unique(recycled)
        return rows, recycled

    def _remember_ids(
        self, rows: npt.NDArray[np.int64], positions: npt.NDArray[np.int64],
        ids: Sequence[str] | PackedStrings | None,
    ) -> None:
        # Until written below, these rows still point at their previous owner's bytes,
        # which a compaction may already have dropped: forget them first.
        self._id_len[rows] = 0
        if ids is None:
            return
        if isinstance(ids, PackedStrings):
            chosen = ids.take(positions)
            # ASCII (the usual id) is its own UTF-8: no Python string per admitted id.
            utf8, offsets = ((chosen.codepoints.astype(np.uint8), chosen.offsets)
                             if chosen.is_ascii() else pack_utf8(chosen.to_list()))
        else:
            utf8, offsets = pack_utf8([ids[p] for p in positions.tolist()])
        if self._arena_used + len(utf8) > len(self._arena):
            self._compact_ids(len(utf8))
        start = self._arena_used
        self._arena[start:start + len(utf8)] = utf8
        # A row admitted twice in one batch keeps its last id: numpy assigns in order.
        self._id_start[rows] = start + offsets[:-1]
        self._id_len[rows] = np.diff(offsets)
        self._arena_used += len(utf8)

    def _compact_ids(self, incoming: int) -> None:
        """Drop the bytes of ids that lost their row; grow by doubling if still short."""
        owned = self._queue_rows()
        live, offsets = _gather_bytes(self._arena, self._id_start[owned], self._id_len[owned])
        size = max(len(self._arena), 4096)
        while len(live) + incoming > size // 2:
            size *= 2
        self._arena = np.zeros(size, dtype=np.uint8)
        self._arena[: len(live)] = live
        self._id_start[owned] = offsets[:-1]
        self._arena_used = len(live)

    def _queue_rows(self) -> npt.NDArray[np.int64]:
        return _queue(self._next, len(self))  # type: ignore[no-any-return]

    def packed_row_ids(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """:meth:`row_ids` as UTF-8 bytes plus ``capacity + 1`` offsets, without a Python
        string per row."""
        start = np.zeros(self.capacity, dtype=np.int64)
        length = np.zeros(self.capacity, dtype=np.int64)
        owned = self._queue_rows()
        start[owned], length[owned] = self._id_start[owned], self._id_len[owned]
        return _gather_bytes(self._arena, start, length)  # type: ignore[no-any-return]

    def row_ids(self) -> list[str]:
        """The original id owning each row now (``""`` for row 0, free rows and rows whose
        id was not given to :meth:`encode`)."""
        return unpack_utf8(*self.packed_row_ids())

    def evict_expired(self) -> int:
        """Give back the rows of ids unseen for ``evict_after_ms``; returns how many.

        :meth:`encode` already does this after every event that moves the watermark, so
        this finds nothing to do unless rows were restored from an older format. It is
        kept for callers that want to be sure; the runtime does not call it.
        """
        before = int(self._meta[_EVICTED])
        if self._meta[_WATERMARK] != _INT64_MIN:
            _evict_expired(int(self._meta[_WATERMARK]) - self.evict_after_ms, self._row_key,
                           self._row_seen, self._prev, self._next, self._freed,
                           self._table, self._meta)
        return int(self._meta[_EVICTED]) - before

    def owner(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
        """The key owning each row now (0 for a free row or row 0)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros(len(rows), dtype=np.uint64)
        inside = rows < len(self._row_key)  # rows never handed out have no owner
        out[inside] = self._row_key[rows[inside]]
        return out

    # -- state ----------------------------------------------------------------------------

    _ROW_ARRAYS = ("_row_key", "_row_seen", "_prev", "_next", "_id_start", "_id_len")

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """The rows handed out so far, freed rows, counted candidates and the owners' ids.

        Rows ``[0, high]`` are copied as contiguous slices (memcpy speed, about 56 bytes a
        row plus the ids' UTF-8), never the unused capacity above them; candidates being
        counted are gathered (24 bytes each). The lookup table is rebuilt on load.
        """
        rows = int(self._meta[_HIGH]) + 1
        arrays = {name.lstrip("_"): getattr(self, name)[:rows].copy()
                  for name in self._ROW_ARRAYS}
        # The ids in row order, end to end: the arena's own layout (where each id landed,
        # when it was compacted) follows the batches that admitted them, and a state must
        # be a function of the events alone. Rows without an owner keep no id.
        length = np.where(arrays["row_key"] != 0, arrays["id_len"], 0)
        length[0] = 0
        utf8, offsets = _gather_bytes(self._arena, arrays["id_start"], length)
        arrays["id_start"] = np.where(length > 0, offsets[:-1], 0)
        arrays["id_len"] = length
        cand = np.flatnonzero(self._cand_key)
        arrays |= {
            "freed": self._freed[: int(self._meta[_FREED_TOP])].copy(),
            "cand_slot": cand, "cand_key": self._cand_key[cand],
            "cand_count": self._cand_count[cand], "cand_seen": self._cand_seen[cand],
            "ids_utf8": utf8,
        }
        meta = {"capacity": self.capacity, "candidate_slots": len(self._cand_key),
                "size": len(self), "watermark": int(self._meta[_WATERMARK]),
                "high": rows - 1, "counters": self.counters()}
        return arrays, meta

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        if meta.get("capacity") != self.capacity or meta.get("candidate_slots") != len(
            self._cand_key
        ):
            raise ValueError(
                f"vocabulary state is for capacity {meta.get('capacity')} with "
                f"{meta.get('candidate_slots')} candidate slots, this one has {self.capacity} "
                f"and {len(self._cand_key)}: restore with the same capacity settings"
            )
        rows = int(meta["high"]) + 1
        freed = np.asarray(arrays["freed"], dtype=np.int64)
        row_key = np.asarray(arrays["row_key"], dtype=np.uint64)
        if rows > self.capacity or len(row_key) != rows or (
            int(np.count_nonzero(row_key[1:])) + len(freed) != rows - 1
        ):
            raise ValueError("vocabulary state is inconsistent: every row handed out must be "
                             "owned or freed; start without the checkpoint")
        self._allocate(min(self.capacity, max(rows, _INITIAL_ROWS)))
        for name in self._ROW_ARRAYS:
            getattr(self, name)[:rows] = arrays[name.lstrip("_")]
        self._freed[: len(freed)] = freed
        self._table = reserve(self._table, int(meta["size"]))
        _rebuild(self._row_key[:rows], self._table)
        for target in (self._cand_key, self._cand_count, self._cand_seen):
            target[:] = 0
        cand = np.asarray(arrays["cand_slot"], dtype=np.int64)
        self._cand_key[cand] = arrays["cand_key"]
        self._cand_count[cand] = arrays["cand_count"]
        self._cand_seen[cand] = arrays["cand_seen"]
        self._meta[:] = 0
        self._meta[_SIZE], self._meta[_FREED_TOP] = int(meta["size"]), len(freed)
        self._meta[_WATERMARK], self._meta[_HIGH] = int(meta["watermark"]), rows - 1
        for name, slot in _COUNTERS.items():
            self._meta[slot] = int(meta["counters"][name])
        utf8 = np.asarray(arrays["ids_utf8"], dtype=np.uint8)
        self._arena = np.zeros(max(4096, 2 * len(utf8)), dtype=np.uint8)
        self._arena[: len(utf8)] = utf8
        self._arena_used = len(utf8)


def pack_utf8(strings: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Strings as UTF-8 bytes plus offsets (string ``i`` is ``utf8[off[i]:off[i+1]]``)."""
    encoded = [s.encode("utf-8", "replace") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def unpack_utf8(utf8: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> list[str]:
    raw = np.asarray(utf8, dtype=np.uint8).tobytes()
    return [raw[a:b].decode("utf-8", "replace") for a, b in pairwise(offsets.tolist())]


class HashingEncoder:
    """Stateless id → row map: ``1 + key mod (2**bits - 1)`` (row 0 stays "unknown").

    Parameters
    ----------
    bits
        Rows used are ``[1, 2**bits)``: the model table needs ``2**bits`` rows.

    Example
    -------
    >>> import numpy as np
    >>> rows, _ = HashingEncoder(bits=4).encode(np.array([0, 15, 16], dtype=np.uint64))
    >>> rows.tolist()
    [1, 1, 2]
    """

    def __init__(self, bits: int) -> None:
        if not 1 <= bits <= 62:
            raise ValueError(f"bits must be in [1, 62], got {bits}")
        self.bits = bits
        self._modulus = np.uint64(max((1 << bits) - 1, 1))

    def encode(
        self,
        keys: npt.NDArray[np.uint64],
        ts_ms: npt.NDArray[np.int64] | None = None,
        ids: Sequence[str] | PackedStrings | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Rows of ``keys`` (``ts_ms`` and ``ids`` are accepted for symmetry, unused)."""
        rows = (np.asarray(keys, dtype=np.uint64) % self._modulus).astype(np.int64) + 1
        return rows, np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return (1 << self.bits) - 1

    @property
    def nbytes(self) -> int:
        return 0
