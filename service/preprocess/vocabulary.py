"""Ids to dense model rows: a bounded vocabulary with admission and eviction, or hashing.

A model keeps one row of parameters per user and per item, so the id → row map decides
the model's memory. :class:`Vocabulary` bounds it three ways:

* **admission by frequency**: an id gets its own row only at its ``admit_after``-th
  sighting; before that it maps to row 0, the shared "unknown" row. One-off ids (bots,
  crawlers, typos) never take a row. Sightings are counted in a 4-way set-associative
  table of fixed size, so counting is bounded too: under pressure a count may be lost,
  which delays an admission but never admits early.
* **eviction by age**: an id unseen for ``evict_after_ms`` of event time gives its row
  back. Rows wait in a queue ordered by when they were last queued; a hit requeues its
  row only when that is more than ``evict_after_ms / 64`` old, and the eviction scan gives
  a second chance to a row seen since it was queued, so the victim is found in amortised
  O(1) without touching the queue on most hits.
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
>>> rows.tolist(), recycled.tolist()  # 7 and 9 aged out: 5 takes a recycled row
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

from service.preprocess.table import Table, find, insert, new_table, nonzero, remove, value_at

_WAYS = 4
_INT64_MIN = np.iinfo(np.int64).min
# meta slots
_SIZE, _WATERMARK, _FREE_TOP, _ADMITTED, _EVICTED, _RECYCLED, _FULL = range(7)


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
    free: npt.NDArray[np.int64],
    table: Table,
    meta: npt.NDArray[np.int64],
) -> None:
    while nxt[0] != 0:
        r = nxt[0]
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
        free[meta[_FREE_TOP]] = r
        meta[_FREE_TOP] += 1
        meta[_SIZE] -= 1
        meta[_EVICTED] += 1


@njit(cache=True)
def _encode(
    keys: npt.NDArray[np.uint64],
    ts: npt.NDArray[np.int64],
    admit_after: int,
    evict_after_ms: int,
    granularity: int,
    row_key: npt.NDArray[np.uint64],
    row_seen: npt.NDArray[np.int64],
    row_owned: npt.NDArray[np.bool_],
    prev: npt.NDArray[np.int64],
    nxt: npt.NDArray[np.int64],
    free: npt.NDArray[np.int64],
    table: Table,
    cand_key: npt.NDArray[np.uint64],
    cand_count: npt.NDArray[np.int64],
    cand_seen: npt.NDArray[np.int64],
    meta: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    n = len(keys)
    rows = np.zeros(n, dtype=np.int64)
    recycled = np.empty(n, dtype=np.int64)
    n_recycled = 0
    admitted = np.empty(n, dtype=np.int64)
    n_admitted = 0
    n_buckets = len(cand_key) // 4
    for i in range(n):
        key = nonzero(keys[i])
        t = ts[i]
        if t > meta[_WATERMARK]:
            meta[_WATERMARK] = t
        slot = find(table, key)
        if slot >= 0:
            r = value_at(table, slot)
            if t > row_seen[r, 0]:
                row_seen[r, 0] = t
                # Requeue only when the queue position is stale by more than `granularity`:
                # moving a row on every hit costs four cache misses per event.
                if t - row_seen[r, 1] > granularity:
                    _unlink(prev, nxt, r)
                    _append(prev, nxt, r)
                    row_seen[r, 1] = t
            rows[i] = r
            continue
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
                continue  # row 0 until admitted
        # Admit: a free row, else the least recently seen one if it has aged out.
        if meta[_FREE_TOP] == 0:
            _evict_expired(meta[_WATERMARK] - evict_after_ms, row_key, row_seen, prev, nxt,
                           free, table, meta)
        if meta[_FREE_TOP] == 0:
            meta[_FULL] += 1
            continue  # vocabulary full: stays on row 0, and keeps its count for later
        if admit_after > 1:
            cand_key[way] = 0
            cand_count[way] = 0
            cand_seen[way] = 0
        meta[_FREE_TOP] -= 1
        r = free[meta[_FREE_TOP]]
        if row_owned[r]:
            recycled[n_recycled] = r
            n_recycled += 1
            meta[_RECYCLED] += 1
        row_owned[r] = True
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
    return rows, recycled[:n_recycled], admitted[:n_admitted]


@njit(cache=True)
def _rebuild(
    row_key: npt.NDArray[np.uint64],
    table: Table,
) -> None:
    for r in range(1, len(row_key)):
        if row_key[r] != np.uint64(0):
            insert(table, row_key[r], r)


class Vocabulary:
    """A bounded id → row map with frequency admission, age eviction and row recycling.

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
        # np.full rather than np.zeros: pages are touched now, not in the hot loop.
        self._row_key = np.full(capacity, 0, dtype=np.uint64)
        # [last seen, last queued]: event times; the queue is ordered by the second.
        self._row_seen = np.full((capacity, 2), 0, dtype=np.int64)
        self._row_owned = np.full(capacity, 0, dtype=np.bool_)
        self._prev = np.full(capacity, 0, dtype=np.int64)
        self._next = np.full(capacity, 0, dtype=np.int64)
        # Free rows as a stack, popped from the end: rows 1, 2, 3... are used in order.
        self._free = np.zeros(capacity, dtype=np.int64)
        self._free[: capacity - 1] = np.arange(capacity - 1, 0, -1)
        self._table = new_table(capacity)
        self._cand_key = np.full(n_cand, 0, dtype=np.uint64)
        self._cand_count = np.full(n_cand, 0, dtype=np.int64)
        self._cand_seen = np.full(n_cand, 0, dtype=np.int64)
        self._meta = np.array([0, _INT64_MIN, capacity - 1, 0, 0, 0, 0], dtype=np.int64)
        # Original ids by row, for serving; only written when a row is admitted (rare).
        self._row_ids: list[str] = [""] * capacity

    def __len__(self) -> int:
        """Ids that own a row now."""
        return int(self._meta[_SIZE])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays().values()) + self._table.nbytes

    def counters(self) -> dict[str, int]:
        """Totals since creation: admitted, evicted, recycled, full (admissions refused)."""
        m = self._meta
        return {"admitted": int(m[_ADMITTED]), "evicted": int(m[_EVICTED]),
                "recycled": int(m[_RECYCLED]), "full": int(m[_FULL])}

    def encode(
        self,
        keys: npt.NDArray[np.uint64],
        ts_ms: npt.NDArray[np.int64],
        ids: Sequence[str] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Rows of ``keys`` seen at ``ts_ms``, and the rows that changed owner (unique).

        ``ids`` (the original strings of ``keys``) are remembered for the rows they are
        admitted to, so that :meth:`row_ids` can map rows back to ids for serving.
        """
        rows, recycled, admitted = _encode(
            np.ascontiguousarray(keys, dtype=np.uint64),
            np.ascontiguousarray(ts_ms, dtype=np.int64),
            self.admit_after, self.evict_after_ms, max(1, self.evict_after_ms // 64),
            self._row_key, self._row_seen, self._row_owned, self._prev, self._next,
            self._free, self._table,
            self._cand_key, self._cand_count, self._cand_seen, self._meta,
        )
        if ids is not None:
            names = self._row_ids
            for position, row in zip(admitted.tolist(), rows[admitted].tolist(), strict=True):
                names[row] = ids[position]
        if len(recycled) > 1:
            recycled = np.unique(recycled)
        return rows, recycled

    def row_ids(self) -> list[str]:
        """The original id owning each row now (``""`` for row 0, free rows and rows whose
        id was not given to :meth:`encode`)."""
        free = self._row_key == 0
        return ["" if f else name for f, name in zip(free.tolist(), self._row_ids, strict=True)]

    def evict_expired(self) -> int:
        """Give back the rows of ids unseen for ``evict_after_ms``; returns how many."""
        before = int(self._meta[_EVICTED])
        if self._meta[_WATERMARK] != _INT64_MIN:
            _evict_expired(int(self._meta[_WATERMARK]) - self.evict_after_ms, self._row_key,
                           self._row_seen, self._prev, self._next, self._free,
                           self._table, self._meta)
        return int(self._meta[_EVICTED]) - before

    def owner(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
        """The key owning each row now (0 for a free row or row 0)."""
        return self._row_key[rows]

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "row_key": self._row_key, "row_seen": self._row_seen, "row_owned": self._row_owned,
            "prev": self._prev, "next": self._next, "free": self._free,
            "cand_key": self._cand_key, "cand_count": self._cand_count,
            "cand_seen": self._cand_seen, "meta": self._meta,
        }

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Copies of the row and candidate arrays (the lookup table is rebuilt on load)."""
        arrays = {k: v.copy() for k, v in self._arrays().items()}
        arrays["ids_utf8"], arrays["ids_offsets"] = pack_utf8(self._row_ids)
        return arrays, {"capacity": self.capacity, "candidate_slots": len(self._cand_key)}

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        if meta.get("capacity") != self.capacity or meta.get("candidate_slots") != len(
            self._cand_key
        ):
            raise ValueError(
                f"vocabulary state is for capacity {meta.get('capacity')} with "
                f"{meta.get('candidate_slots')} candidate slots, this one has {self.capacity} "
                f"and {len(self._cand_key)}: restore with the same capacity settings"
            )
        for name, target in self._arrays().items():
            source = np.asarray(arrays[name])
            if source.shape != target.shape:
                raise ValueError(f"vocabulary array {name!r} has shape {source.shape}, "
                                 f"expected {target.shape}")
            target[...] = source
        self._table[:] = 0
        _rebuild(self._row_key, self._table)
        if "ids_utf8" in arrays:
            self._row_ids = unpack_utf8(arrays["ids_utf8"], arrays["ids_offsets"])
            if len(self._row_ids) != self.capacity:
                raise ValueError("vocabulary ids do not match the capacity")


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
        ids: Sequence[str] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Rows of ``keys`` (``ts_ms`` and ``ids`` are accepted for symmetry, unused)."""
        rows = (np.asarray(keys, dtype=np.uint64) % self._modulus).astype(np.int64) + 1
        return rows, np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return (1 << self.bits) - 1

    @property
    def nbytes(self) -> int:
        return 0
