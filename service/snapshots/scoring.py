"""Holdout metrics of the promotion gate: one number per learner, same data for both.

* regression: RMSE (lower is better);
* binary: log loss, predictions clipped to ``[1e-7, 1 - 1e-7]`` (lower is better);
* ranking: sampled AUC (higher is better). Each held-out positive ``(user, item)`` is
  scored against ``n_negatives`` items drawn uniformly from the items seen in the window,
  with a fixed seed; the AUC of a positive is the fraction of its negatives it outscores
  (ties count one half, a negative equal to the positive is ignored).

Sampled metrics rank models consistently with full-catalogue ones when the candidate and
champion are compared on the *same* sample, which is all the gate needs; their absolute
values are not comparable to full-catalogue figures.

Example
-------
>>> import numpy as np
>>> rmse(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
1.4142135623730951
>>> round(log_loss(np.array([1.0, 0.0]), np.array([0.9, 0.2])), 4)
0.1643

References
----------
Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020 (why sampled
metrics are only for comparing models on the same sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.examples import ExampleBatch
from service.learners.base import Learner, Task
from service.snapshots.holdout import take_rows

FloatArray = npt.NDArray[np.floating[Any]]

METRIC_OF_TASK: dict[str, tuple[str, bool]] = {
    # task -> (metric name, higher is better)
    "regression": ("rmse", False),
    "binary": ("log_loss", False),
    "ranking": ("sampled_auc", True),
}
_EPS = 1e-7


def rmse(y: FloatArray, p: FloatArray) -> float:
    d = np.asarray(p, np.float64) - np.asarray(y, np.float64)
    return float(np.sqrt(np.mean(d * d)))


def log_loss(y: FloatArray, p: FloatArray) -> float:
    q = np.clip(np.asarray(p, np.float64), _EPS, 1.0 - _EPS)
    t = np.asarray(y, np.float64) > 0.5
    return float(-np.mean(np.where(t, np.log(q), np.log1p(-q))))


def sampled_auc(pos: FloatArray, neg: FloatArray, valid: npt.NDArray[np.bool_]) -> float:
    """Mean over positives of P(score(positive) > score(negative)), ties one half.

    ``pos`` has shape (n,), ``neg`` and ``valid`` (n, k). Positives without a valid
    negative are left out.
    """
    pos2 = np.asarray(pos, np.float64)[:, None]
    neg2 = np.asarray(neg, np.float64)
    wins = (pos2 > neg2) + 0.5 * (pos2 == neg2)
    n_valid = valid.sum(axis=1)
    keep = n_valid > 0
    if not keep.any():
        return float("nan")
    per_pos = (wins * valid).sum(axis=1)[keep] / n_valid[keep]
    return float(per_pos.mean())


@dataclass(slots=True)
class RankingProbe:
    """Held-out positives, each followed by its sampled negatives, as one batch to score."""

    batch: ExampleBatch
    n_pos: int
    n_neg: int
    valid: npt.NDArray[np.bool_]

    @classmethod
    def build(cls, window: ExampleBatch, n_negatives: int, seed: int) -> RankingProbe:
        pos_rows = np.flatnonzero(window.y > 0)
        pool = np.unique(window.item)
        pool = pool[pool != 0]  # row 0 is "unknown item": never a meaningful candidate
        n_pos = len(pos_rows)
        if n_pos == 0 or len(pool) < 2:
            empty = take_rows(window, np.zeros(0, np.int64))
            return cls(empty, 0, n_negatives, np.zeros((0, n_negatives), np.bool_))
        rng = np.random.default_rng(seed)
        neg = pool[rng.integers(0, len(pool), size=(n_pos, n_negatives))]
        pos_items = window.item[pos_rows]
        items = np.concatenate([pos_items[:, None], neg], axis=1)  # (n_pos, 1 + k)
        rows = np.repeat(pos_rows, 1 + n_negatives)
        batch = take_rows(window, rows, item=items.reshape(-1))
        return cls(batch, n_pos, n_negatives, neg != pos_items[:, None])

    def score(self, learner: Learner) -> float:
        if self.n_pos == 0:
            return float("nan")
        s = np.asarray(learner.predict(self.batch), np.float64).reshape(self.n_pos, -1)
        if not np.isfinite(s).all():
            return float("nan")
        return sampled_auc(s[:, 0], s[:, 1:], self.valid)


def score_learner(
    learner: Learner, task: Task, window: ExampleBatch, probe: RankingProbe | None = None
) -> float:
    """The task's metric of ``learner`` on ``window`` (NaN if its predictions are not finite)."""
    if task == "ranking":
        if probe is None:
            raise ValueError("the ranking metric needs a RankingProbe built from the window")
        return probe.score(learner)
    p = np.asarray(learner.predict(window), np.float64)
    if p.shape != window.y.shape:
        raise ValueError(
            f"{type(learner).__name__}.predict returned shape {p.shape} for "
            f"{len(window)} examples"
        )
    if not np.isfinite(p).all():
        return float("nan")
    if task == "regression":
        return rmse(window.y, p)
    if task == "binary":
        return log_loss(window.y, p)
    raise ValueError(f"unknown task {task!r}: expected regression, binary or ranking")
