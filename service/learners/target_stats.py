"""Running weighted mean and range of the regression target, inside the kernels.

Regression learners predict the residual from the running mean of the target (so biases
and factors start centred) and clip predictions to the range of targets seen. The four
numbers live in a ``float64`` array among the learner's arrays:
``[sum of weights, weighted sum of targets, min, max]``.

Products are taken in float64 (``weight * y`` of two float32 values near their maximum
overflows float32), and an observation that would make a sum non-finite is ignored, so
one absurd event cannot turn the mean into NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from service.learners.optim import finite

F64 = npt.NDArray[np.float64]


def new_stats() -> F64:
    return np.array([0.0, 0.0, np.inf, -np.inf], dtype=np.float64)


@njit(cache=True, inline="always")
def mean(stats: F64) -> float:
    return stats[1] / stats[0] if stats[0] > 0.0 else 0.0


@njit(cache=True, inline="always")
def clip_prediction(value: float, stats: F64) -> float:
    if stats[2] <= stats[3]:
        return min(max(value, stats[2]), stats[3])
    return value


@njit(cache=True, inline="always")
def observe(stats: F64, y: float, w: float) -> None:
    w64 = np.float64(w)
    sw = stats[0] + w64
    swy = stats[1] + w64 * np.float64(y)
    if finite(sw) and finite(swy):
        stats[0] = sw
        stats[1] = swy
        stats[2] = min(stats[2], y)
        stats[3] = max(stats[3], y)
