"""A bounded window of the most recent held-out examples, for the promotion gate.

The runtime marks a fraction of the stream ``holdout=True`` and never trains on it; the
window keeps the latest ``capacity`` of those rows so that every candidate and the
published champion are scored on the same recent data nobody learned from.

Rows are kept as a queue of columnar chunks (no per-event objects); trimming and
concatenation are vectorised, side features included.

Example
-------
>>> import numpy as np
>>> from service.examples import ExampleBatch
>>> w = HoldoutWindow(capacity=3)
>>> b = ExampleBatch.from_arrays([1, 2, 3, 4], [5, 6, 7, 8], [1.0, 2.0, 3.0, 4.0])
>>> b.holdout[:] = [True, False, True, True]
>>> w.add(b), len(w), w.batch().user.tolist()
(3, 3, [1, 3, 4])
>>> w.add(b), w.batch().user.tolist()
(3, [1, 3, 4])
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from service.examples import ExampleBatch

IntArray = npt.NDArray[np.int64]


def take_rows(batch: ExampleBatch, rows: IntArray, item: IntArray | None = None) -> ExampleBatch:
    """The examples at ``rows`` (repeats allowed), optionally with their items replaced.

    Side features are gathered by :meth:`ExampleBatch.take` (one vectorised CSR gather), so
    sampling many negatives per positive stays cheap.
    """
    taken = batch.take(np.asarray(rows, dtype=np.int64))
    if item is not None:
        taken.item = np.ascontiguousarray(item, dtype=np.int64)
    return taken


def concat(batches: list[ExampleBatch]) -> ExampleBatch:
    """One batch holding ``batches`` in order (CSR offsets shifted)."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return ExampleBatch.from_arrays([], [], [])
    indptrs = [np.zeros(1, np.int64)]
    offset = 0
    for b in batches:
        indptrs.append(b.feat_indptr[1:] + offset)
        offset += int(b.feat_indptr[-1])
    return ExampleBatch(
        user=np.concatenate([b.user for b in batches]),
        item=np.concatenate([b.item for b in batches]),
        y=np.concatenate([b.y for b in batches]),
        weight=np.concatenate([b.weight for b in batches]),
        ts_ms=np.concatenate([b.ts_ms for b in batches]),
        feat_indptr=np.concatenate(indptrs),
        feat_idx=np.concatenate([b.feat_idx for b in batches]),
        feat_val=np.concatenate([b.feat_val for b in batches]),
        holdout=np.concatenate([b.holdout for b in batches]),
    )


def _recycled_after(col: IntArray, pos: IntArray, recycled: IntArray, at: IntArray
                    ) -> npt.NDArray[np.bool_]:
    """Whether the row ``col[j]`` of the example at position ``pos[j]`` changes owner at a
    later position (a reset at ``at`` comes before the example at ``at``)."""
    if not len(recycled) or not len(col):
        return np.zeros(len(col), dtype=np.bool_)
    rows, inverse = np.unique(recycled, return_inverse=True)
    last = np.full(len(rows), -1, dtype=np.int64)
    np.maximum.at(last, inverse, at)
    k = np.minimum(np.searchsorted(rows, col), len(rows) - 1)
    return (rows[k] == col) & (last[k] > pos)  # type: ignore[no-any-return]


class HoldoutWindow:
    """The latest ``capacity`` held-out examples.

    Parameters
    ----------
    capacity
        Most examples kept; older ones fall out first.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._chunks: deque[ExampleBatch] = deque()
        self._n = 0
        self._cached: ExampleBatch | None = None

    def __len__(self) -> int:
        return self._n

    def add(self, batch: ExampleBatch) -> int:
        """Keep the rows of ``batch`` marked ``holdout``; return how many were added.

        Rows whose user or item the vocabulary recycled after them are dropped: they now
        mean a different id, and scoring them would be noise. That is every row already
        in the window whose row was recycled in this batch, and every row of this batch
        whose row was recycled later in the batch (``recycled_*_at`` tell where), so the
        window is the same however the stream was cut into batches.
        """
        users, users_at, items, items_at = batch.recycles()
        if len(users) or len(items):
            self._forget(users, items)
        if not len(batch):
            return 0
        rows = np.flatnonzero(batch.holdout)
        if len(users) or len(items):
            stale = (_recycled_after(batch.user[rows], rows, users, users_at)
                     | _recycled_after(batch.item[rows], rows, items, items_at))
            rows = rows[~stale]
        if len(rows) == 0:
            return 0
        if len(rows) > self.capacity:
            rows = rows[-self.capacity:]
        chunk = batch if len(rows) == len(batch) else take_rows(batch, rows)
        self._chunks.append(chunk)
        self._n += len(chunk)
        self._trim()
        self._cached = None
        return len(rows)

    def _trim(self) -> None:
        while self._n - len(self._chunks[0]) >= self.capacity:
            self._n -= len(self._chunks.popleft())
        excess = self._n - self.capacity
        if excess > 0:
            first = self._chunks[0]
            self._chunks[0] = take_rows(first, np.arange(excess, len(first), dtype=np.int64))
            self._n -= excess

    def _forget(self, users: IntArray, items: IntArray) -> None:
        kept: deque[ExampleBatch] = deque()
        n = 0
        for chunk in self._chunks:
            stale = np.isin(chunk.user, users) | np.isin(chunk.item, items)
            if stale.any():
                chunk = take_rows(chunk, np.flatnonzero(~stale))
            if len(chunk):
                kept.append(chunk)
                n += len(chunk)
        self._chunks, self._n, self._cached = kept, n, None

    def batch(self) -> ExampleBatch:
        """The window as one batch, oldest first (cached until the next change)."""
        if self._cached is None:
            self._cached = concat(list(self._chunks))
            # Keep one chunk: the next concat after an add is then cheap.
            self._chunks = deque([self._cached]) if len(self._cached) else deque()
        return self._cached

    def clear(self) -> None:
        self._chunks.clear()
        self._n = 0
        self._cached = None
