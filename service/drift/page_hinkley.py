"""Page-Hinkley test for a change in the mean, fed a batch of values at a time."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numba import njit

from service.drift.base import check_params

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Mode = Literal["up", "down", "both"]
_MODES: dict[str, int] = {"up": 0, "down": 1, "both": 2}

# Layout of the float state array.
_N, _MEAN, _SUM_INC, _SUM_DEC, _MIN_INC, _MAX_DEC, _STAT, _PENDING_RESET, _M2 = range(9)
_STATE_SIZE = 9


@njit(cache=True)
def _reset(fs: FloatArray) -> None:
    fs[:] = 0.0
    fs[_MIN_INC] = np.inf
    # River starts the running maximum at -1, not -inf; kept for identical results.
    fs[_MAX_DEC] = -1.0


@njit(cache=True)
def _page_hinkley_update(
    values: FloatArray,
    fs: FloatArray,
    min_instances: float,
    delta: float,
    threshold: float,
    alpha: float,
    mode: int,
    standardize: bool,
) -> tuple[IntArray, FloatArray]:
    out = np.empty(len(values), dtype=np.int64)
    stats = np.empty(len(values), dtype=np.float64)
    n_out = 0
    for i in range(len(values)):
        if fs[_PENDING_RESET] != 0.0:
            _reset(fs)
        x = values[i]
        fs[_N] += 1.0
        before = x - fs[_MEAN]
        fs[_MEAN] += (1.0 / fs[_N]) * before
        dev = x - fs[_MEAN]
        if standardize:
            # Welford's running variance: deviations in units of the stream's own standard
            # deviation make delta and threshold independent of the loss's scale.
            fs[_M2] += before * dev
            var = fs[_M2] / (fs[_N] - 1.0) if fs[_N] > 1.0 else 0.0
            dev = dev / np.sqrt(var) if var > 0.0 else 0.0
        # Cumulative deviations with a forgetting factor; `delta` is the magnitude of
        # change tolerated before the sums start to drift.
        fs[_SUM_INC] = alpha * fs[_SUM_INC] + dev - delta
        fs[_SUM_DEC] = alpha * fs[_SUM_DEC] + dev + delta
        if fs[_SUM_INC] < fs[_MIN_INC]:
            fs[_MIN_INC] = fs[_SUM_INC]
        if fs[_SUM_DEC] > fs[_MAX_DEC]:
            fs[_MAX_DEC] = fs[_SUM_DEC]
        if fs[_N] >= min_instances:
            up = fs[_SUM_INC] - fs[_MIN_INC]
            down = fs[_MAX_DEC] - fs[_SUM_DEC]
            if mode == 0:
                stat = up
            elif mode == 1:
                stat = down
            else:
                stat = max(up, down)
            fs[_STAT] = stat
            if stat > threshold:
                fs[_PENDING_RESET] = 1.0
                out[n_out] = i
                stats[n_out] = stat
                n_out += 1
    return out[:n_out], stats[:n_out]


class PageHinkley:
    """Page-Hinkley test: a CUSUM of deviations from the running mean.

    Suited to the progressive loss stream: with ``mode="up"`` it reports when the loss
    rises, which is the change that calls for a reaction, and ignores improvements. The
    exported statistic is the test value compared with ``threshold`` (the CUSUM's distance
    from its extremum). Semantics are River's ``drift.PageHinkley`` (the state is reset on
    the update after a detection); the per-value loop is a compiled numba kernel.

    Parameters
    ----------
    min_instances
        Values seen before any detection is possible.
    delta
        Tolerated change in the mean, in units of the values.
    threshold
        Detection threshold (lambda), in units of the values times events.
    alpha
        Forgetting factor applied to the cumulative sums (1 forgets nothing).
    mode
        ``"up"`` detects increases, ``"down"`` decreases, ``"both"`` either.
    standardize
        Divide each deviation by the running standard deviation of the stream (since the
        last reset), so that ``delta`` and ``threshold`` are in standard deviations and one
        setting fits losses of any scale. ``False`` is River's test exactly.

    Example
    -------
    >>> import numpy as np
    >>> from service.drift.page_hinkley import PageHinkley
    >>> rng = np.random.default_rng(3)
    >>> losses = np.concatenate([rng.exponential(0.5, 3000), rng.exponential(1.5, 3000)])
    >>> ph = PageHinkley(mode="up", threshold=50.0)
    >>> hits = ph.update(losses)
    >>> bool(3000 <= hits[0] < 3200)
    True

    References
    ----------
    .. [1] E. S. Page. "Continuous inspection schemes." Biometrika 41(1/2), 1954, 100-115.
    .. [2] R. Sebastião, J. M. Fernandes. "Supporting the Page-Hinkley test with empirical
       mode decomposition for change detection." ISMIS 2017, 492-498.
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Mode = "up",
        standardize: bool = False,
    ) -> None:
        if min_instances < 1:
            raise ValueError(f"min_instances must be >= 1, got {min_instances}.")
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}.")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}.")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}; 0.9999 is usual.")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}.")
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode: Mode = mode
        self.standardize = bool(standardize)
        self._fs = np.zeros(_STATE_SIZE, dtype=np.float64)
        _reset(self._fs)
        self.n_detections = 0
        # The test value at each detection of the last update.
        self.last_statistics = np.zeros(0, dtype=np.float64)

    def update(self, values: npt.ArrayLike) -> IntArray:
        """Feed ``values`` in order; return the positions (into ``values``) of detections."""
        x = np.ascontiguousarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"PageHinkley.update takes a 1-d array, got shape {x.shape}.")
        if not np.all(np.isfinite(x)):
            raise ValueError("PageHinkley.update got NaN or infinite values; drop them first.")
        hits, stats = _page_hinkley_update(
            x,
            self._fs,
            float(self.min_instances),
            self.delta,
            self.threshold,
            self.alpha,
            _MODES[self.mode],
            self.standardize,
        )
        self.n_detections += len(hits)
        self.last_statistics = stats
        return hits

    @property
    def drift_detected(self) -> bool:
        """True when the last value fed caused a detection."""
        return bool(self._fs[_PENDING_RESET])

    @property
    def statistic(self) -> float:
        """The last test value (compared with ``threshold``)."""
        return float(self._fs[_STAT])

    @property
    def mean(self) -> float:
        """Running mean since the last reset."""
        return float(self._fs[_MEAN])

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON-able parameters that :meth:`set_state` restores exactly."""
        meta = {
            "type": "page_hinkley",
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "mode": self.mode,
            "standardize": self.standardize,
            "n_detections": self.n_detections,
        }
        return {"fstate": self._fs.copy()}, meta

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (parameters must match)."""
        check_params(meta, self.get_state()[1], "PageHinkley")
        fs = np.array(arrays["fstate"], dtype=np.float64)
        if fs.shape != self._fs.shape:
            raise ValueError(f"PageHinkley state has shape {fs.shape}, expected {self._fs.shape}.")
        self._fs = fs
        self.n_detections = int(meta["n_detections"])
