"""Progressive log loss and ROC AUC for click-style (0/1) targets.

* Log loss: exact, cumulative and windowed (probabilities clipped to ``[1e-7, 1 - 1e-7]``).
* Windowed AUC: exact, from the ranks of the scores in the window (ties count one half),
  computed when :meth:`BinaryMetrics.result` is called: O(W log W).
* Cumulative AUC: approximate, from histograms of the scores of positives and negatives
  over ``bins`` equal-width bins of ``[0, 1]``; pairs within one bin count one half, so
  the error is at most the fraction of positive-negative pairs sharing a bin (small for
  1024 bins unless all scores sit in a narrow band). It never needs the whole stream.

Example
-------
>>> import numpy as np
>>> m = BinaryMetrics(window=100)
>>> losses = m.update(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.6, 0.4]), np.ones(4))
>>> r = m.result()
>>> r["auc_window"], r["auc"], round(r["log_loss"], 4)
(1.0, 1.0, 0.3375)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from service.evaluation.window import Window, add_in_order

F64 = npt.NDArray[np.float64]
ArrayLike = npt.NDArray[np.floating] | npt.NDArray[np.integer] | F64
EPS = 1e-7


def auc_from_scores(y: F64, score: F64) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); NaN if one class."""
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_from_histograms(pos: F64, neg: F64) -> float:
    """AUC from per-bin counts of positives and negatives (bins in score order)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


class BinaryMetrics:
    """Weighted log loss and AUC of pre-update click probabilities.

    Parameters
    ----------
    window
        Number of most recent examples in the windowed metrics.
    bins
        Histogram bins of the cumulative AUC.
    """

    def __init__(self, window: int = 10_000, bins: int = 1024) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.window = Window(window, 4)  # columns: weight, w * loss, y, score
        self.sums = np.zeros(2, dtype=np.float64)
        self.hist = np.zeros((2, bins), dtype=np.float64)  # row 0 negatives, row 1 positives

    def update(self, y: ArrayLike, pred: ArrayLike, weight: ArrayLike) -> F64:
        """Add a batch; return each example's log loss (0 where not finite)."""
        y64 = np.asarray(y, dtype=np.float64)
        p = np.asarray(pred, dtype=np.float64)
        w = np.asarray(weight, dtype=np.float64)
        ok = np.isfinite(y64) & np.isfinite(p) & np.isfinite(w) & (w > 0)
        pc = np.clip(np.where(ok, p, 0.5), EPS, 1 - EPS)
        pos = y64 > 0.5
        loss = np.where(ok, -np.log(np.where(pos, pc, 1.0 - pc)), 0.0)
        w = np.where(ok, w, 0.0)
        add_in_order(self.sums, np.stack([w, w * loss], axis=1))
        bins = self.hist.shape[1]
        b = np.minimum((pc * bins).astype(np.int64), bins - 1)
        np.add.at(self.hist, (pos[ok].astype(np.int64), b[ok]), w[ok])
        self.window.extend(np.stack([w, w * loss, pos.astype(np.float64), pc], axis=1)[ok])
        return loss

    def result(self) -> dict[str, float]:
        win = self.window.values()
        nan = float("nan")
        ww = win[:, 0].sum()
        return {
            "log_loss": float(self.sums[1] / self.sums[0]) if self.sums[0] else nan,
            "log_loss_window": float(win[:, 1].sum() / ww) if ww else nan,
            "auc": auc_from_histograms(self.hist[1], self.hist[0]),
            "auc_window": auc_from_scores(win[:, 2], win[:, 3]),
        }

    def get_state(self) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
        return {"sums": self.sums.copy(), "hist": self.hist.copy(),
                **{f"window.{k}": v for k, v in self.window.get_state().items()}}

    def set_state(self, state: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]
                  ) -> None:
        hist = np.asarray(state["hist"], dtype=np.float64)
        if hist.shape != self.hist.shape:
            raise ValueError(f"histogram state has shape {hist.shape}, expected "
                             f"{self.hist.shape}; restore with the same number of bins")
        self.sums = np.asarray(state["sums"], dtype=np.float64).copy()
        self.hist = hist.copy()
        self.window.set_state({k.removeprefix("window."): v for k, v in state.items()
                               if k.startswith("window.")})
