"""What one contender did on a sequence, and its progressive figures.

Every contender is scored by the same code, freshrec's own
:class:`~service.evaluation.ProgressiveEvaluator`, from its pre-update predictions:

* ratings: RMSE (and MAE);
* clicks: log loss (and the exact ROC AUC over every example);
* implicit: recall@10 of sampled ranks (and NDCG@10): each positive ranked among 100
  random items before the model learns it.

The windowed curve is the metric over the last ``window`` examples (ranked positives for
implicit data), taken at up to ``points`` positions along the sequence.

Example
-------
>>> import numpy as np
>>> run = ContenderRun("m", "river", "regression", y=np.array([4.0, 3.0, 5.0]),
...                    pred=np.array([3.0, 3.0, 5.0]), cpu_seconds=0.5)
>>> s = score(run, window=2)
>>> s.metric, round(s.value, 4), round(s.secondary_value, 4), s.curve_x.tolist()
('RMSE', 0.5774, 0.3333, [2, 3])
>>> [round(v, 4) for v in s.curve_y.tolist()], run.examples_per_second
([0.7071, 0.0], 6.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.evaluation import ProgressiveEvaluator
from service.evaluation.binary import auc_from_scores

F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RANK_K = 10

METRICS = {"regression": ("RMSE", "MAE"), "binary": ("log loss", "AUC"),
           "ranking": (f"recall@{RANK_K}", f"NDCG@{RANK_K}")}


@dataclass(slots=True)
class ContenderRun:
    """One contender's pass over a sequence.

    Parameters
    ----------
    name, library
        What it is (``freshrec-per-event``, ``freshrec``) and whose code it runs.
    task
        ``regression``, ``binary`` or ``ranking``.
    y, pred, weight
        Label, pre-update prediction and weight of each example it learned, in order.
    cpu_seconds
        CPU time of the work timed (see ``timed``).
    config
        How it was configured, in a few words.
    timed
        What ``cpu_seconds`` covers.
    messages
        Messages through the pipeline (freshrec only: impressions and clicks count apart).
    ranks, rank_at
        Sampled rank of each ranked positive and the example position it was ranked at
        (ranking only).
    drift
        Drift detections with their reactions (freshrec only).
    notes
        Anything the table should say about the run.
    evaluator
        The pipeline evaluator's own figures at the end (freshrec only).
    """

    name: str
    library: str
    task: str
    y: F64
    pred: F64
    cpu_seconds: float
    weight: F64 | None = None
    config: str = ""
    timed: str = "model calls on prepared inputs"
    messages: int = 0
    ranks: IntArray | None = None
    rank_at: IntArray | None = None
    drift: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    evaluator: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def examples_per_second(self) -> float:
        return len(self) / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


@dataclass(slots=True)
class Scores:
    """The figures of one run: cumulative metric, secondary metric, the last window's
    metric, and the windowed curve (``curve_x``: examples learned so far)."""

    metric: str
    value: float
    secondary: str
    secondary_value: float
    last_window: float
    curve_x: IntArray
    curve_y: F64


def rolling(values: F64, weights: F64, window: int, points: int = 400
            ) -> tuple[IntArray, F64]:
    """Weighted mean of ``values`` over the last ``window`` at up to ``points`` ends.

    >>> x, y = rolling(np.array([1.0, 3.0, 5.0, 7.0]), np.ones(4), window=2, points=10)
    >>> x.tolist(), y.tolist()
    ([2, 3, 4], [2.0, 4.0, 6.0])
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    first = min(window, n)
    ends = np.unique(np.linspace(first, n, min(points, n - first + 1)).round().astype(np.int64))
    c = np.concatenate([[0.0], np.cumsum(values * weights)])
    cw = np.concatenate([[0.0], np.cumsum(weights)])
    starts = np.maximum(ends - window, 0)
    total = cw[ends] - cw[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(total > 0, (c[ends] - c[starts]) / total, np.nan)
    return ends, mean


def score(run: ContenderRun, window: int, points: int = 400) -> Scores:
    """The run's figures (see the module docstring)."""
    metric, secondary = METRICS[run.task]
    n = len(run)
    w = np.ones(n) if run.weight is None else np.asarray(run.weight, np.float64)
    if run.task == "ranking":
        ranks = np.zeros(0, np.int64) if run.ranks is None else run.ranks
        at = np.zeros(0, np.int64) if run.rank_at is None else run.rank_at
        hits = (ranks < RANK_K).astype(np.float64)
        ndcg = hits / np.log2(ranks + 2.0)
        x, y = rolling(hits, np.ones(len(hits)), window, points)
        xs = at[np.maximum(x - 1, 0)] + 1 if len(x) else x
        nan = float("nan")
        return Scores(metric, float(hits.mean()) if len(hits) else nan, secondary,
                      float(ndcg.mean()) if len(ndcg) else nan,
                      float(hits[-window:].mean()) if len(hits) else nan, xs, y)
    ev = ProgressiveEvaluator(run.task, window=max(1, window))  # type: ignore[arg-type]
    losses = ev.update(run.y, run.pred, w)
    result = ev.result()
    x, y = rolling(losses, w, window, points)
    if run.task == "regression":
        return Scores(metric, result["rmse"], secondary, result["mae"],
                      result["rmse_window"], x, np.sqrt(y))
    return Scores(metric, result["log_loss"], secondary, auc_from_scores(run.y, run.pred),
                  result["log_loss_window"], x, y)
