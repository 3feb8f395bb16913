"""Progressive RMSE and MAE, cumulative and over a rolling window.

Example
-------
>>> import numpy as np
>>> m = RegressionMetrics(window=2)
>>> m.update(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), np.ones(3)).tolist()
[0.0, 0.0, 4.0]
>>> r = m.result()
>>> round(r["rmse"], 4), r["rmse_window"], r["mae_window"]
(1.1547, 1.4142135623730951, 1.0)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.evaluation.window import Window, add_in_order

F64 = npt.NDArray[np.float64]
ArrayLike = npt.NDArray[np.floating] | F64


class RegressionMetrics:
    """Weighted RMSE and MAE of pre-update predictions.

    Parameters
    ----------
    window
        Number of most recent examples in the windowed metrics.
    """

    def __init__(self, window: int = 10_000) -> None:
        self.window = Window(window, 3)  # columns: weight, w * err², w * |err|
        self.sums = np.zeros(3, dtype=np.float64)

    def update(self, y: ArrayLike, pred: ArrayLike, weight: ArrayLike) -> F64:
        """Add a batch; return each example's squared error (0 where not finite)."""
        y64 = np.asarray(y, dtype=np.float64)
        err = np.asarray(pred, dtype=np.float64) - y64
        w = np.asarray(weight, dtype=np.float64)
        ok = np.isfinite(err) & np.isfinite(w) & (w > 0)
        sq = np.where(ok, err * err, 0.0)
        w = np.where(ok, w, 0.0)
        rows = np.stack([w, w * sq, w * np.abs(np.where(ok, err, 0.0))], axis=1)
        add_in_order(self.sums, rows)
        self.window.extend(rows)
        return sq

    def result(self) -> dict[str, float]:
        win = self.window.values().sum(axis=0)
        nan = float("nan")
        return {
            "rmse": float(np.sqrt(self.sums[1] / self.sums[0])) if self.sums[0] else nan,
            "mae": float(self.sums[2] / self.sums[0]) if self.sums[0] else nan,
            "rmse_window": float(np.sqrt(win[1] / win[0])) if win[0] else nan,
            "mae_window": float(win[2] / win[0]) if win[0] else nan,
        }

    def get_state(self) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
        return {"sums": self.sums.copy(),
                **{f"window.{k}": v for k, v in self.window.get_state().items()}}

    def set_state(self, state: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]
                  ) -> None:
        self.sums = np.asarray(state["sums"], dtype=np.float64).copy()
        self.window.set_state({k.removeprefix("window."): v for k, v in state.items()
                               if k.startswith("window.")})
