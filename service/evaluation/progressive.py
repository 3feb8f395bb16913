"""The progressive evaluator the runtime keeps: one metric family per learner task.

``update(y, predictions, weight)`` takes a batch's pre-update predictions (what
``Learner.learn`` returns) and gives back each example's loss, for drift detectors and
loss histograms; ``result()`` gives the current figures by name, ``report()`` the same
keyed ``(metric, window)`` for labelled gauges; ``get_state`` returns ``(arrays, meta)``
for checkpoints and ``set_state(arrays, meta)`` restores it.

Example
-------
>>> import numpy as np
>>> ev = ProgressiveEvaluator.for_task("regression", window=100)
>>> ev.update(np.array([4.0, 3.0]), np.array([3.5, 3.0]), np.ones(2)).tolist()
[0.25, 0.0]
>>> ev.result()["rmse"]
0.3535533905932738
>>> ev.report()[("rmse", "cumulative")] == ev.result()["rmse"]
True
>>> ev2 = ProgressiveEvaluator.for_task("regression", window=100)
>>> arrays, meta = ev.get_state()
>>> ev2.set_state(arrays, meta); ev2.result() == ev.result()
True
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.evaluation.binary import BinaryMetrics
from service.evaluation.ranking import RankingMetrics
from service.evaluation.regression import RegressionMetrics

Task = Literal["regression", "binary", "ranking"]
State = dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]


class ProgressiveEvaluator:
    """Progressive-validation metrics of one learner.

    Parameters
    ----------
    task
        ``"regression"`` (RMSE, MAE), ``"binary"`` (log loss, AUC) or ``"ranking"``
        (recall@k, NDCG@k from :meth:`update_ranks`, plus a pointwise loss).
    window
        Size of the rolling window of the windowed metrics.
    k
        Cut-off of the ranking metrics.
    """

    def __init__(self, task: Task, window: int = 10_000, k: int = 10) -> None:
        self.task = task
        self.window = window
        self.k = k
        self.metrics: RegressionMetrics | BinaryMetrics | RankingMetrics
        if task == "regression":
            self.metrics = RegressionMetrics(window)
        elif task == "binary":
            self.metrics = BinaryMetrics(window)
        elif task == "ranking":
            self.metrics = RankingMetrics(k, window)
        else:
            raise ValueError(f"task must be regression, binary or ranking, got {task!r}")
        self.n_examples = 0

    @classmethod
    def for_task(cls, task: Task, window: int = 10_000, k: int = 10) -> ProgressiveEvaluator:
        return cls(task, window, k)

    def update(self, y: npt.ArrayLike, predictions: npt.ArrayLike,
               weight: npt.ArrayLike | None = None) -> npt.NDArray[np.float64]:
        """Add one batch of pre-update predictions; return the per-example losses."""
        y_arr = np.asarray(y)
        if weight is None:
            weight = np.ones(len(y_arr), dtype=np.float64)
        if not (len(y_arr) == len(np.asarray(predictions)) == len(np.asarray(weight))):
            raise ValueError("y, predictions and weight must have the same length")
        self.n_examples += len(y_arr)
        return self.metrics.update(y_arr, np.asarray(predictions), np.asarray(weight))

    def update_ranks(self, ranks: npt.NDArray[np.int64]) -> None:
        """Add sampled ranks of positives (ranking task only)."""
        if not isinstance(self.metrics, RankingMetrics):
            raise TypeError(f"update_ranks is for the ranking task, not {self.task!r}")
        self.metrics.update_ranks(ranks)

    def result(self) -> dict[str, float]:
        return self.metrics.result()

    def report(self) -> dict[tuple[str, str], float]:
        """Finite figures keyed ``(metric, window)``, window ``"cumulative"`` or
        ``"window"`` (the last ``window`` examples): gauge labels for the runtime."""
        out: dict[tuple[str, str], float] = {}
        for name, value in self.result().items():
            if not np.isfinite(value):
                continue  # nothing measured yet (or no ranks fed): no gauge value
            if name.endswith("_window"):
                out[(name.removesuffix("_window"), "window")] = value
            else:
                out[(name, "cumulative")] = value
        return out

    def get_state(self) -> tuple[State, dict[str, Any]]:
        """``(arrays, meta)``: metric arrays (copies) and a small JSON-able dict."""
        meta = {"task": self.task, "window": self.window, "k": self.k,
                "n_examples": self.n_examples}
        return dict(self.metrics.get_state()), meta

    def set_state(self, arrays: State, meta: dict[str, Any] | None = None) -> None:
        """Restore :meth:`get_state`'s output."""
        if meta is not None:
            if meta.get("task", self.task) != self.task:
                raise ValueError(
                    f"evaluator state is for task {meta['task']!r}, not {self.task!r}"
                )
            self.n_examples = int(meta.get("n_examples", 0))
        self.metrics.set_state(arrays)
