"""Progressive recall@k and NDCG@k with sampled candidates, for implicit feedback.

Ranking every item for every event is too slow for a stream, so each positive event
(user ``u`` engaged with item ``i``) is ranked against ``n_candidates`` items drawn
uniformly at random, scored by the model *before* it learns from the event. With rank
``r`` (0 = first) of the positive among the ``n_candidates + 1`` items, recall@k is
``r < k`` and NDCG@k is ``1 / log2(r + 2)`` when ``r < k`` (one relevant item, so the
ideal DCG is 1). Sampled metrics are optimistic compared with full ranking but preserve
the order of models on the same candidates (Krichene and Rendle 2020 discuss the bias).

Within one ``learn`` batch, the candidates are scored before the batch is learned, a
batch-level approximation of per-event progressive validation.

References
----------
Krichene and Rendle (2020). On sampled metrics for item recommendation. KDD.

Example
-------
>>> import numpy as np
>>> m = RankingMetrics(k=2, window=10)
>>> m.update_ranks(np.array([0, 1, 5]))
>>> r = m.result()
>>> round(r["recall@k"], 4), round(r["ndcg@k"], 4)
(0.6667, 0.5436)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from service.evaluation.window import Window, add_in_order

F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ScoreFn = Callable[[IntArray, IntArray], npt.NDArray[np.floating]]


def sampled_ranks(
    score_pairs: ScoreFn,
    users: IntArray,
    items: IntArray,
    n_items: int,
    n_candidates: int,
    rng: np.random.Generator,
) -> IntArray:
    """Rank of each ``items[n]`` among ``n_candidates`` random items for ``users[n]``.

    ``score_pairs(users, items)`` scores pairs in one vectorised call. Candidates are
    uniform over rows ``1..n_items-1``; a candidate equal to the positive is ignored.
    Ties count against the positive (pessimistic), so a constant model ranks last.
    """
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cand = rng.integers(1, n_items, size=(n, n_candidates), dtype=np.int64)
    all_users = np.concatenate([users, np.repeat(users, n_candidates)])
    all_items = np.concatenate([items, cand.ravel()])
    scores = np.asarray(score_pairs(all_users, all_items), dtype=np.float64)
    pos = scores[:n]
    neg = scores[n:].reshape(n, n_candidates)
    beats = (neg >= pos[:, None]) & (cand != items[:, None])
    return beats.sum(axis=1).astype(np.int64)


class RankingMetrics:
    """Cumulative and windowed recall@k and NDCG@k from sampled ranks.

    Parameters
    ----------
    k
        Cut-off.
    window
        Number of most recent ranked events in the windowed metrics.
    """

    def __init__(self, k: int = 10, window: int = 10_000) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.window = Window(window, 3)  # columns: 1, hit, ndcg
        self.sums = np.zeros(3, dtype=np.float64)
        self.loss_sums = np.zeros(2, dtype=np.float64)

    def update_ranks(self, ranks: IntArray) -> None:
        """Add the ranks (0 = best) of positives among their sampled candidates."""
        r = np.asarray(ranks, dtype=np.float64)
        hit = (r < self.k).astype(np.float64)
        ndcg = hit / np.log2(r + 2.0)
        rows = np.stack([np.ones_like(r), hit, ndcg], axis=1)
        add_in_order(self.sums, rows)
        self.window.extend(rows)

    def update(self, y: npt.ArrayLike, pred: npt.ArrayLike, weight: npt.ArrayLike) -> F64:
        """Pointwise logistic loss ``softplus(-score)`` of positives (for drift detectors);
        negatives and non-finite scores count 0. Ranking quality comes from
        :meth:`update_ranks`."""
        y64 = np.asarray(y, dtype=np.float64)
        s = np.asarray(pred, dtype=np.float64)
        w = np.asarray(weight, dtype=np.float64)
        ok = np.isfinite(s) & np.isfinite(y64) & (y64 > 0) & np.isfinite(w) & (w > 0)
        loss = np.where(ok, np.logaddexp(0.0, -np.where(ok, s, 0.0)), 0.0)
        wo = np.where(ok, w, 0.0)
        add_in_order(self.loss_sums, np.stack([wo, wo * loss], axis=1))
        return loss

    def result(self) -> dict[str, float]:
        win = self.window.values().sum(axis=0)
        nan = float("nan")
        return {
            "recall@k": float(self.sums[1] / self.sums[0]) if self.sums[0] else nan,
            "ndcg@k": float(self.sums[2] / self.sums[0]) if self.sums[0] else nan,
            "recall@k_window": float(win[1] / win[0]) if win[0] else nan,
            "ndcg@k_window": float(win[2] / win[0]) if win[0] else nan,
            "pointwise_loss": (float(self.loss_sums[1] / self.loss_sums[0])
                               if self.loss_sums[0] else nan),
        }

    def get_state(self) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
        return {"sums": self.sums.copy(), "loss_sums": self.loss_sums.copy(),
                **{f"window.{k}": v for k, v in self.window.get_state().items()}}

    def set_state(self, state: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]
                  ) -> None:
        self.sums = np.asarray(state["sums"], dtype=np.float64).copy()
        self.loss_sums = np.asarray(state["loss_sums"], dtype=np.float64).copy()
        self.window.set_state({k.removeprefix("window."): v for k, v in state.items()
                               if k.startswith("window.")})
