"""Exponential moving average of parameters, for the copy that gets published.

An online model's parameters jitter with every update; serving an average of recent
parameter values (Polyak-Ruppert style) gives steadier scores at the same freshness. The
average is refreshed once per ``learn`` call over whole arrays (vectorised numpy), so its
cost is one pass over the parameters per batch, not per event; it is off by default.

Example
-------
>>> import numpy as np
>>> avg = ParameterAverage(decay=0.5)
>>> p = {"w": np.array([0.0, 2.0], dtype=np.float32)}
>>> avg.update(p)
>>> p["w"][:] = 4.0
>>> avg.update(p)
>>> avg.arrays["w"].tolist()
[2.0, 3.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


class ParameterAverage:
    """EMA ``avg = decay * avg + (1 - decay) * params``, started at the first update.

    Parameters
    ----------
    decay
        Weight of the past per ``learn`` call, in ``[0, 1)``.
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.arrays: dict[str, npt.NDArray[Any]] = {}

    def update(self, params: dict[str, npt.NDArray[Any]],
               rows: dict[str, list[tuple[int, int]]] | None = None) -> None:
        """One averaging step; ``rows[name]`` limits it to those ``[start, stop)`` ranges.

        Rows left out keep their average exactly (the learner leaves out the rows nobody
        used yet, so their average stays bitwise equal to their initial value and a state
        need not save them).
        """
        if not self.arrays:
            self.arrays = {name: p.copy() for name, p in params.items()}
            return
        d = self.decay
        for name, p in params.items():
            avg = self.arrays[name]
            ranges = rows.get(name) if rows is not None else None
            if ranges is None:
                avg *= d
                avg += (1.0 - d) * p
                continue
            for start, stop in ranges:
                part = avg[start:stop]
                part *= d
                part += (1.0 - d) * p[start:stop]

    def reset_rows(self, name: str, rows: npt.NDArray[np.int64], values: npt.NDArray[Any]) -> None:
        """Recycled rows restart from their new values instead of averaging old ones in."""
        if self.arrays and len(rows):
            self.arrays[name][rows] = values
