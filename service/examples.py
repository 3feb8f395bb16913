"""The batch of training examples passed from preprocessing to the learners.

Columnar and numpy-backed so that learners can run compiled kernels over it without
creating a Python object per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


def _empty_int() -> IntArray:
    return np.zeros(0, dtype=np.int64)


def _empty_float() -> FloatArray:
    return np.zeros(0, dtype=np.float32)


def gather_csr(indptr: IntArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """The CSR ``indptr`` of the selected ``rows`` (in that order, repeats allowed) and the
    positions of their entries in the original entry arrays.

    >>> indptr, at = gather_csr(np.array([0, 2, 2, 5]), np.array([2, 0]))
    >>> indptr.tolist(), at.tolist()
    ([0, 3, 5], [2, 3, 4, 0, 1])
    """
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    # Position j of the output comes from starts[row] + (j - out[row]).
    positions = np.arange(int(out[-1]), dtype=np.int64) + np.repeat(starts - out[:-1], lengths)
    return out, positions


@dataclass(slots=True)
class ExampleBatch:
    """``n`` training examples in stream order.

    Parameters
    ----------
    user, item
        Dense row indices into the model's user and item tables (from a bounded vocabulary
        or the hashing trick). Row 0 is reserved for "unknown / not yet admitted".
    y
        Target: a rating for regression, 0/1 for binary tasks, 1 for implicit positives.
    weight
        Per-example weight (for example purchases count more than clicks).
    feat_indptr, feat_idx, feat_val
        Hashed side features (context, user/item feature maps, crosses) in CSR layout:
        example ``i`` has features ``feat_idx[feat_indptr[i]:feat_indptr[i+1]]``. Feature
        indices are in ``[0, 2**feature_bits)``.
    ts_ms
        Event time in milliseconds since the epoch.
    holdout
        True for examples held out from training for the snapshot gate.
    recycled_users, recycled_items
        Rows that the vocabulary evicted and reassigned in this batch, in stream order (a
        row recycled twice appears twice): the learner must reinitialise them, so a new id
        does not inherit an old id's factors.
    recycled_users_at, recycled_items_at
        For each recycled row, the position of the first example that may belong to its
        new owner: the reset happens right before that example is learned, so examples of
        the previous owner earlier in the batch still go to the previous owner. Empty
        means 0 for every row (reset before the batch).
    """

    user: IntArray
    item: IntArray
    y: FloatArray
    weight: FloatArray
    ts_ms: IntArray
    feat_indptr: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    feat_idx: IntArray = field(default_factory=_empty_int)
    feat_val: FloatArray = field(default_factory=_empty_float)
    holdout: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    recycled_users: IntArray = field(default_factory=_empty_int)
    recycled_items: IntArray = field(default_factory=_empty_int)
    recycled_users_at: IntArray = field(default_factory=_empty_int)
    recycled_items_at: IntArray = field(default_factory=_empty_int)

    def __post_init__(self) -> None:
        n = len(self.user)
        if not (len(self.item) == len(self.y) == len(self.weight) == len(self.ts_ms) == n):
            raise ValueError("ExampleBatch columns must all have the same length")
        if len(self.holdout) == 0 and n:
            self.holdout = np.zeros(n, dtype=np.bool_)
        if len(self.feat_indptr) == 1 and n:
            self.feat_indptr = np.zeros(n + 1, dtype=np.int64)
        if len(self.feat_indptr) != n + 1:
            raise ValueError("feat_indptr must have n + 1 entries")

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def from_arrays(
        cls,
        user: npt.ArrayLike,
        item: npt.ArrayLike,
        y: npt.ArrayLike,
        weight: npt.ArrayLike | None = None,
        ts_ms: npt.ArrayLike | None = None,
    ) -> ExampleBatch:
        """Build a batch without side features, casting to the canonical dtypes."""
        u = np.ascontiguousarray(user, dtype=np.int64)
        n = len(u)
        return cls(
            user=u,
            item=np.ascontiguousarray(item, dtype=np.int64),
            y=np.ascontiguousarray(y, dtype=np.float32),
            weight=(
                np.ones(n, dtype=np.float32)
                if weight is None
                else np.ascontiguousarray(weight, dtype=np.float32)
            ),
            ts_ms=(
                np.zeros(n, dtype=np.int64)
                if ts_ms is None
                else np.ascontiguousarray(ts_ms, dtype=np.int64)
            ),
        )

    def recycles(self) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """``(users, users_at, items, items_at)``: recycled rows and where each is reset
        (positions default to 0, before the batch, when they were not given)."""
        users, items = self.recycled_users, self.recycled_items
        users_at, items_at = self.recycled_users_at, self.recycled_items_at
        if len(users_at) != len(users):
            users_at = np.zeros(len(users), dtype=np.int64)
        if len(items_at) != len(items):
            items_at = np.zeros(len(items), dtype=np.int64)
        return users, users_at, items, items_at

    def slice(self, start: int, stop: int) -> ExampleBatch:
        """Examples ``start:stop`` as views (no copy), side features included.

        Each recycled row goes with the slice that holds its reset position (the last
        slice also takes resets placed after every example): it is reset once.

        Example
        -------
        >>> b = ExampleBatch.from_arrays([1, 2, 3], [4, 5, 6], [1.0, 2.0, 3.0])
        >>> b.slice(1, 3).user.tolist()
        [2, 3]
        """
        n = len(self)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"slice [{start}, {stop}) is outside the batch of {n}")
        lo, hi = int(self.feat_indptr[start]), int(self.feat_indptr[stop])
        users, users_at, items, items_at = self.recycles()
        last = stop == n
        in_users = (users_at >= start) & ((users_at < stop) | last)
        in_items = (items_at >= start) & ((items_at < stop) | last)
        return ExampleBatch(
            user=self.user[start:stop],
            item=self.item[start:stop],
            y=self.y[start:stop],
            weight=self.weight[start:stop],
            ts_ms=self.ts_ms[start:stop],
            feat_indptr=self.feat_indptr[start:stop + 1] - lo,
            feat_idx=self.feat_idx[lo:hi],
            feat_val=self.feat_val[lo:hi],
            holdout=self.holdout[start:stop],
            recycled_users=users[in_users],
            recycled_items=items[in_items],
            recycled_users_at=users_at[in_users] - start,
            recycled_items_at=items_at[in_items] - start,
        )

    def select(self, mask: BoolArray) -> ExampleBatch:
        """The examples where ``mask`` is true, side features included.

        Vectorised: the side features are gathered with one ``np.repeat`` over the kept
        rows' CSR spans, not one ``np.arange`` per example (this runs once per batch on
        the hot path, with thousands of examples).

        Example
        -------
        >>> b = ExampleBatch(user=np.array([1, 2, 3]), item=np.array([4, 5, 6]),
        ...                  y=np.ones(3, np.float32), weight=np.ones(3, np.float32),
        ...                  ts_ms=np.zeros(3, np.int64), feat_indptr=np.array([0, 2, 2, 3]),
        ...                  feat_idx=np.array([7, 8, 9]),
        ...                  feat_val=np.array([1, 2, 3], np.float32))
        >>> s = b.select(np.array([True, False, True]))
        >>> s.user.tolist(), s.feat_indptr.tolist(), s.feat_idx.tolist()
        ([1, 3], [0, 2, 3], [7, 8, 9])
        """
        mask = np.asarray(mask, dtype=np.bool_)
        if mask.shape != (len(self),):
            raise ValueError(
                f"select needs one boolean per example ({len(self)},), got {mask.shape}"
            )
        taken = self.take(np.flatnonzero(mask))
        users, users_at, items, items_at = self.recycles()
        # A reset before example p comes before the first kept example at or after p.
        kept_before = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(mask, out=kept_before[1:])
        taken.recycled_users, taken.recycled_users_at = users, kept_before[users_at]
        taken.recycled_items, taken.recycled_items_at = items, kept_before[items_at]
        return taken

    def take(self, rows: IntArray) -> ExampleBatch:
        """The examples at ``rows`` (in that order, repeats allowed), side features included.

        Recycled rows are not carried over: they belong to the batch as it arrived.
        """
        rows = np.asarray(rows, dtype=np.int64)
        indptr, gather = gather_csr(self.feat_indptr, rows)
        if len(gather):
            fidx, fval = self.feat_idx[gather], self.feat_val[gather]
        else:
            fidx, fval = _empty_int(), _empty_float()
        return ExampleBatch(
            user=self.user[rows],
            item=self.item[rows],
            y=self.y[rows],
            weight=self.weight[rows],
            ts_ms=self.ts_ms[rows],
            feat_indptr=indptr,
            feat_idx=fidx,
            feat_val=fval,
            holdout=self.holdout[rows],
        )
