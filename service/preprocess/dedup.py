"""Drop redelivered events: remember recent event ids, bounded by count and by time.

Kafka delivers at least once and producers retry, so the same event can arrive twice. The
deduplicator remembers the 64-bit hash of each accepted ``event_id`` in a ring buffer of
at most ``window_events`` entries (the oldest is forgotten first) indexed by an
open-addressing table, so a lookup is a few nanoseconds. Ring and table start small and
double as ids accumulate, up to the window (about 48 bytes per remembered id at most), so
memory and the checkpointed state follow the ids actually remembered. With
``window_ms`` an id is also forgotten once the newest event time seen is more than
``window_ms`` past its own.

Two different ids collide with probability about ``window_events / 2**64`` per event
(1e-13 at a million ids): negligible next to the duplicates it removes.

Example
-------
>>> import numpy as np
>>> d = Deduplicator(window_events=2, window_ms=0)
>>> keys = np.array([11, 12, 11, 13, 11], dtype=np.uint64)
>>> d.observe(keys, np.zeros(5, dtype=np.int64)).tolist()  # 11 is forgotten after 12, 13
[False, False, True, False, False]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from service.preprocess.table import (
    Table,
    find,
    insert,
    new_table,
    nonzero,
    remove,
    reserve,
)
from service.residency import prefault

_INT64_MIN = np.iinfo(np.int64).min
# meta: head, size, watermark
_HEAD, _SIZE, _WATERMARK = 0, 1, 2
_INITIAL = 1024  # ids the ring holds before it first grows


@njit(cache=True)
def _observe(
    keys: npt.NDArray[np.uint64],
    ts: npt.NDArray[np.int64],
    window_ms: int,
    cap: int,
    table: Table,
    ring_keys: npt.NDArray[np.uint64],
    ring_ts: npt.NDArray[np.int64],
    meta: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    # The caller sized the ring for this batch: it only wraps at ``cap`` once full grown.
    length = len(ring_keys)
    head, size, watermark = meta[0], meta[1], meta[2]
    dup = np.zeros(len(keys), dtype=np.bool_)
    for i in range(len(keys)):
        key = nonzero(keys[i])
        if ts[i] > watermark:
            watermark = ts[i]
            if window_ms > 0:
                while size > 0 and ring_ts[head] < watermark - window_ms:
                    remove(table, ring_keys[head])
                    head = (head + 1) % length
                    size -= 1
        if find(table, key) >= 0:
            dup[i] = True
            continue
        if size == cap:
            remove(table, ring_keys[head])
            head = (head + 1) % length
            size -= 1
        tail = (head + size) % length
        ring_keys[tail] = key
        ring_ts[tail] = ts[i]
        insert(table, key, tail)
        size += 1
    meta[0], meta[1], meta[2] = head, size, watermark
    return dup


@njit(cache=True)
def _rebuild(
    table: Table,
    ring_keys: npt.NDArray[np.uint64],
    size: int,
) -> None:
    for k in range(size):
        insert(table, ring_keys[k], k)


class Deduplicator:
    """Remembers recent event-id hashes and flags repeats.

    Parameters
    ----------
    window_events
        Most ids remembered; ``0`` disables dedup (nothing is ever a duplicate).
    window_ms
        Forget ids whose event time is more than this behind the newest event time seen;
        ``0`` bounds the window by count only.
    """

    def __init__(self, window_events: int, window_ms: int = 0) -> None:
        if window_events < 0 or window_ms < 0:
            raise ValueError("window_events and window_ms must be >= 0 (0 disables the bound)")
        self.window_events = window_events
        self.window_ms = window_ms
        self._cap = max(window_events, 1)
        self._allocate(min(self._cap, _INITIAL), 0)
        self._meta = np.array([0, 0, _INT64_MIN], dtype=np.int64)

    def _allocate(self, length: int, keys: int) -> None:
        self._ring_keys = np.zeros(length, dtype=np.uint64)
        self._ring_ts = np.zeros(length, dtype=np.int64)
        self._table = new_table(max(keys, min(length, _INITIAL)))

    def __len__(self) -> int:
        """Ids currently remembered."""
        return int(self._meta[_SIZE])

    @property
    def nbytes(self) -> int:
        """Bytes allocated now (at most about 48 per id of the window)."""
        return sum(a.nbytes for a in (self._ring_keys, self._ring_ts, self._table))

    def _ordered(self, ring: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A copy of the live part of ``ring``, oldest first (slices: memcpy speed)."""
        head, size = int(self._meta[_HEAD]), int(self._meta[_SIZE])
        if head + size <= len(ring):
            return ring[head:head + size].copy()
        return np.concatenate([ring[head:], ring[: head + size - len(ring)]])

    def _reserve(self, incoming: int) -> None:
        """Room for ``incoming`` more ids, by doubling, within the window."""
        size = int(self._meta[_SIZE])
        needed = min(self._cap, size + incoming)
        length = len(self._ring_keys)
        if needed > length:
            keys, ts = self._ordered(self._ring_keys), self._ordered(self._ring_ts)
            self._ring_keys = np.zeros(min(self._cap, max(needed, 2 * length)), np.uint64)
            self._ring_ts = np.zeros(len(self._ring_keys), np.int64)
            self._ring_keys[:size], self._ring_ts[:size] = keys, ts
            self._meta[_HEAD] = 0
        self._table = reserve(self._table, needed)

    def preallocate(self) -> None:
        """Grow to the whole window now and fault its pages in (see ``preallocate``)."""
        if self.window_events:
            self._reserve(self._cap)
        for array in (self._ring_keys, self._ring_ts, self._table):
            prefault(array)

    def observe(
        self, keys: npt.NDArray[np.uint64], ts_ms: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """Flag each key already remembered (in order, so repeats within a batch count too);
        remember the others."""
        if self.window_events == 0:
            return np.zeros(len(keys), dtype=np.bool_)
        self._reserve(len(keys))
        return _observe(  # type: ignore[no-any-return]
            np.ascontiguousarray(keys, dtype=np.uint64),
            np.ascontiguousarray(ts_ms, dtype=np.int64),
            self.window_ms,
            self._cap,
            self._table,
            self._ring_keys,
            self._ring_ts,
            self._meta,
        )

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """The remembered ids oldest first, and the watermark: 16 bytes per live id."""
        arrays = {"keys": self._ordered(self._ring_keys), "ts": self._ordered(self._ring_ts)}
        return arrays, {"watermark": int(self._meta[_WATERMARK])}

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        keys = np.asarray(arrays["keys"], dtype=np.uint64)
        ts = np.asarray(arrays["ts"], dtype=np.int64)
        if len(keys) != len(ts) or len(keys) > self._cap:
            raise ValueError(
                f"dedup state holds {len(keys)} ids but this deduplicator remembers at most "
                f"{self._cap}: restore with the same dedup_window_events"
            )
        n = len(keys)
        self._allocate(min(self._cap, max(n, _INITIAL)), n)
        self._ring_keys[:n] = keys
        self._ring_ts[:n] = ts
        _rebuild(self._table, self._ring_keys, n)
        self._meta[:] = (0, n, int(meta["watermark"]))
