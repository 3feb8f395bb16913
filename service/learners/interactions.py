"""What each user has interacted with, and how popular each item is, in bounded memory.

Recommendations must not repeat what a user has just consumed, and a user the model knows
nothing about should get the popular items. Both need per-user and per-item bookkeeping
that must not grow with the stream: each user keeps a ring of their last ``per_user`` item
rows (older ones fall out), and items keep a count.

Example
-------
>>> import numpy as np
>>> seen = Interactions(n_users=4, n_items=6, per_user=2)
>>> seen.record(np.array([1, 1, 1, 2]), np.array([3, 4, 5, 3]), np.ones(4, dtype=bool))
>>> sorted(seen.seen_items(1).tolist())  # the ring kept the last two
[4, 5]
>>> seen.popular(2).tolist()
[3, 4]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt
from numba import njit

from service.learners.layout import RowSpan

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@njit(cache=True)
def _record(
    users: IntArray,
    items: IntArray,
    mask: BoolArray,
    user_count: IntArray,
    item_count: IntArray,
    seen: npt.NDArray[np.int32],
    seen_pos: IntArray,
) -> None:
    per_user = seen.shape[1]
    for n in range(len(users)):
        if not mask[n]:
            continue
        u = users[n]
        i = items[n]
        user_count[u] += 1
        item_count[i] += 1
        if per_user > 0 and u != 0:
            seen[u, seen_pos[u] % per_user] = i
            seen_pos[u] += 1


class Interactions:
    """Per-user ring of recently seen item rows, plus user and item counts.

    Parameters
    ----------
    n_users, n_items
        Table sizes (rows, including the reserved row 0).
    per_user
        Most recent items remembered per user (0 disables exclusion of seen items).
        Memory is ``4 * n_users * per_user`` bytes.
    """

    ARRAY_NAMES = ("user_count", "item_count", "seen", "seen_pos")
    ROW_SPANS: ClassVar[dict[str, tuple[RowSpan, ...]]] = {
        "user_count": (RowSpan("users"),),
        "item_count": (RowSpan("items"),),
        # Indexed by user row; its values are item rows, which need no span.
        "seen": (RowSpan("users"),),
        "seen_pos": (RowSpan("users"),),
    }
    """Which id table indexes each array's rows (for compact state export)."""

    def __init__(self, n_users: int, n_items: int, per_user: int = 16) -> None:
        if per_user < 0:
            raise ValueError(f"per_user must be >= 0, got {per_user}")
        self.n_users = n_users
        self.n_items = n_items
        self.per_user = per_user
        self.user_count = np.zeros(n_users, dtype=np.int64)
        self.item_count = np.zeros(n_items, dtype=np.int64)
        self.seen = np.full((n_users, per_user), -1, dtype=np.int32)
        self.seen_pos = np.zeros(n_users, dtype=np.int64)

    def record(self, users: IntArray, items: IntArray, mask: BoolArray) -> None:
        """Count the interactions where ``mask`` is true and remember the items."""
        _record(users, items, mask, self.user_count, self.item_count, self.seen, self.seen_pos)

    def seen_items(self, user: int) -> npt.NDArray[np.int64]:
        """Item rows ``user`` interacted with recently (at most ``per_user``)."""
        if self.per_user == 0 or not 0 < user < self.n_users:
            return np.zeros(0, dtype=np.int64)
        row = self.seen[user]
        return row[row >= 0].astype(np.int64)

    def is_known(self, user: int) -> bool:
        """True when ``user`` is a real row with at least one interaction."""
        return 0 < user < self.n_users and bool(self.user_count[user] > 0)

    def popular(self, k: int, exclude: IntArray | None = None) -> IntArray:
        """The ``k`` most interacted-with item rows (row 0 and ``exclude`` left out)."""
        counts = self.item_count.astype(np.float64)
        counts[0] = -np.inf
        if exclude is not None and len(exclude):
            counts[exclude] = -np.inf
        return top_k(counts, k)

    def reset(self, users: IntArray, items: IntArray, used_users: int | None = None) -> None:
        """Forget recycled rows: their history belongs to the id that was evicted.

        ``used_users`` bounds the user rows that can hold any history (the learner's
        high-water mark), so that recycling an item scans only the rings in use.
        """
        if len(users):
            self.user_count[users] = 0
            self.seen[users] = -1
            self.seen_pos[users] = 0
        if len(items):
            self.item_count[items] = 0
            if self.per_user:
                # Vectorised over the rings in use; runs only in batches that recycle item
                # rows, which the vocabulary makes rare.
                rings = self.seen[: self.n_users if used_users is None else used_users]
                rings[np.isin(rings, items)] = -1

    def arrays(self) -> dict[str, npt.NDArray[np.int64] | npt.NDArray[np.int32]]:
        return {name: getattr(self, name) for name in self.ARRAY_NAMES}


def top_k(scores: npt.NDArray[np.float64] | npt.NDArray[np.float32], k: int) -> IntArray:
    """Indices of the ``k`` largest finite scores, best first (``-inf`` never returned)."""
    finite = int(np.isfinite(scores).sum())
    k = min(k, finite)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    order = np.argsort(-scores[part], kind="stable")
    return part[order].astype(np.int64)
