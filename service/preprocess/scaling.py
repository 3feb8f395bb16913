"""Online standardisation of numeric side features (Welford's running mean and variance).

Each numeric feature (``context.position``, ``item_features.price``…) is replaced by its
z-score under the statistics of the values seen *before* it, then the statistics learn
from it: the same predict-then-learn discipline as the models, so a feature never leaks
its own value into its scaling. Until a slot has seen two values its z-score is 0. Z-scores
are clipped to ``±clip`` so one wild value cannot blow up a linear model's update.

Statistics live in ``slots`` fixed slots addressed by the feature's hash: memory is fixed
and a handful of numeric keys almost never share a slot.

Example
-------
>>> import numpy as np
>>> s = RunningStandardizer(slots=16, clip=5.0)
>>> z = s.transform(np.zeros(4, dtype=np.int64), np.array([1.0, 3.0, 2.0, 100.0]))
>>> z.round(2).tolist()
[0.0, 0.0, 0.0, 5.0]

References
----------
Welford. Note on a method for calculating corrected sums of squares and products (1962).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit


@njit(cache=True)
def _standardise(
    slot: npt.NDArray[np.int64],
    x: npt.NDArray[np.float64],
    clip: float,
    count: npt.NDArray[np.int64],
    mean: npt.NDArray[np.float64],
    m2: npt.NDArray[np.float64],
    learn: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float32]:
    z = np.zeros(len(x), dtype=np.float32)
    for i in range(len(x)):
        s = slot[i]
        c = count[s]
        if c >= 2:
            var = m2[s] / (c - 1)
            if var > 0.0:
                v = (x[i] - mean[s]) / np.sqrt(var)
                z[i] = min(max(v, -clip), clip)
        if not learn[i]:
            continue
        c += 1
        delta = x[i] - mean[s]
        mean[s] += delta / c
        m2[s] += delta * (x[i] - mean[s])
        count[s] = c
    return z


class RunningStandardizer:
    """Per-slot running mean and variance; ``transform`` scores then updates, in order.

    Parameters
    ----------
    slots
        Number of independent statistics.
    clip
        Bound on the absolute z-score.
    """

    def __init__(self, slots: int = 4096, clip: float = 5.0) -> None:
        if slots < 1 or not clip > 0:
            raise ValueError("slots must be >= 1 and clip > 0")
        self.slots = slots
        self.clip = float(clip)
        self._count = np.zeros(slots, dtype=np.int64)
        self._mean = np.zeros(slots, dtype=np.float64)
        self._m2 = np.zeros(slots, dtype=np.float64)

    def transform(
        self, slot: npt.NDArray[np.int64], x: npt.NDArray[np.float64],
        learn: npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Z-scores of ``x`` (each against the statistics before it), then learn them
        (only where ``learn`` is true, if given)."""
        return _standardise(  # type: ignore[no-any-return]
            np.ascontiguousarray(slot, dtype=np.int64) % self.slots,
            np.ascontiguousarray(x, dtype=np.float64),
            self.clip, self._count, self._mean, self._m2,
            np.ones(len(x), np.bool_) if learn is None
            else np.ascontiguousarray(learn, dtype=np.bool_),
        )

    def mean_std(self, slot: int) -> tuple[float, float]:
        """Current mean and sample standard deviation of ``slot``."""
        c = int(self._count[slot])
        std = float(np.sqrt(self._m2[slot] / (c - 1))) if c >= 2 else 0.0
        return float(self._mean[slot]), std

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Only the slots in use (usually a handful)."""
        used = np.flatnonzero(self._count)
        arrays = {"slot": used, "count": self._count[used], "mean": self._mean[used],
                  "m2": self._m2[used]}
        return arrays, {"slots": self.slots}

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        if meta.get("slots") != self.slots:
            raise ValueError(f"scaler state has {meta.get('slots')} slots, expected {self.slots}")
        used = np.asarray(arrays["slot"], dtype=np.int64)
        self._count[:] = 0
        self._mean[:] = 0.0
        self._m2[:] = 0.0
        self._count[used] = arrays["count"]
        self._mean[used] = arrays["mean"]
        self._m2[used] = arrays["m2"]
