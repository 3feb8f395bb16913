"""ADWIN: adaptive windowing change detector, fed a batch of values at a time.

The window is kept as ADWIN2's exponential histogram: row ``i`` of a fixed
``(64, max_buckets + 1)`` table holds up to ``max_buckets + 1`` bucket summaries (total
and variance) of ``2**i`` values each. The whole state is a handful of numpy arrays, so a
checkpoint stores it without pickling and the compiled kernel walks it without creating a
Python object per value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from service.drift.base import check_params

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# 2**64 values would be needed to fill row 63: the table never overflows.
_MAX_ROWS = 64

# Layout of the scalar state arrays (indices), kept as arrays so the kernel can update them
# in place and checkpoints can store them as they are.
_F_TOTAL, _F_VARIANCE, _F_WIDTH, _F_TOTAL_WIDTH = 0, 1, 2, 3
_I_ROWS, _I_BUCKETS, _I_MAX_BUCKETS, _I_TICK, _I_DETECTIONS, _I_PENDING_RESET = 0, 1, 2, 3, 4, 5


@njit(cache=True)
def _reset(
    totals: FloatArray, variances: FloatArray, counts: IntArray, fs: FloatArray, st: IntArray
) -> None:
    totals[:] = 0.0
    variances[:] = 0.0
    counts[:] = 0
    fs[:] = 0.0
    st[:] = 0
    st[_I_ROWS] = 1


@njit(cache=True)
def _compress_row(totals: FloatArray, variances: FloatArray, counts: IntArray, row: int, n: int):
    # Drop the ``n`` oldest summaries of ``row`` by shifting the rest left.
    cur = counts[row]
    remaining = cur - n
    for i in range(remaining):
        totals[row, i] = totals[row, i + n]
        variances[row, i] = variances[row, i + n]
    for i in range(remaining, cur):
        totals[row, i] = 0.0
        variances[row, i] = 0.0
    counts[row] = remaining


@njit(cache=True)
def _delete_oldest(
    totals: FloatArray, variances: FloatArray, counts: IntArray, fs: FloatArray, st: IntArray
) -> None:
    last = st[_I_ROWS] - 1
    n = float(1 << last)
    u = totals[last, 0]
    v = variances[last, 0]
    mu = u / n
    fs[_F_WIDTH] -= n
    fs[_F_TOTAL] -= u
    width = fs[_F_WIDTH]
    mu_window = fs[_F_TOTAL] / width
    fs[_F_VARIANCE] -= v + n * width * (mu - mu_window) * (mu - mu_window) / (n + width)
    _compress_row(totals, variances, counts, last, 1)
    st[_I_BUCKETS] -= 1
    if counts[last] == 0:
        st[_I_ROWS] -= 1


@njit(cache=True)
def _insert(
    value: float,
    totals: FloatArray,
    variances: FloatArray,
    counts: IntArray,
    fs: FloatArray,
    st: IntArray,
    max_buckets: int,
) -> None:
    totals[0, counts[0]] = value
    variances[0, counts[0]] = 0.0
    counts[0] += 1
    st[_I_BUCKETS] += 1
    if st[_I_BUCKETS] > st[_I_MAX_BUCKETS]:
        st[_I_MAX_BUCKETS] = st[_I_BUCKETS]
    # Streaming variance update (Babcock et al. 2003); the operation order matches River's
    # so that both give bit-identical windows on the same input.
    fs[_F_WIDTH] += 1.0
    width = fs[_F_WIDTH]
    inc = 0.0
    if width > 1.0:
        d = value - fs[_F_TOTAL] / (width - 1.0)
        inc = (width - 1.0) * d * d / width
    fs[_F_VARIANCE] += inc
    fs[_F_TOTAL] += value
    # Merge the two oldest summaries of a full row into the next row, cascading up.
    row = 0
    while counts[row] == max_buckets + 1:
        n1 = float(1 << row)
        t0 = totals[row, 0]
        t1 = totals[row, 1]
        mu1 = t0 / n1
        mu2 = t1 / n1
        v12 = variances[row, 0] + variances[row, 1] + n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        if row + 1 >= st[_I_ROWS]:
            st[_I_ROWS] += 1
        nxt = row + 1
        totals[nxt, counts[nxt]] = t0 + t1
        variances[nxt, counts[nxt]] = v12
        counts[nxt] += 1
        st[_I_BUCKETS] += 1
        _compress_row(totals, variances, counts, row, 2)
        if counts[nxt] <= max_buckets:
            break
        row += 1


@njit(cache=True)
def _detect(
    totals: FloatArray,
    variances: FloatArray,
    counts: IntArray,
    fs: FloatArray,
    st: IntArray,
    delta: float,
    clock: int,
    min_window_length: float,
    grace_period: float,
    only_increases: bool,
    min_rise: float,
) -> bool:
    """Shrink the window at every significant cut; True if a cut is to be reported."""
    reported = False
    st[_I_TICK] += 1
    if st[_I_TICK] % clock == 0 and fs[_F_WIDTH] > grace_period:
        reduce_width = True
        while reduce_width:
            reduce_width = False
            exit_flag = False
            n0 = 0.0
            n1 = fs[_F_WIDTH]
            u0 = 0.0
            u1 = fs[_F_TOTAL]
            row = st[_I_ROWS] - 1
            while row >= 0 and not exit_flag:
                size = float(1 << row)
                cur = counts[row]
                for k in range(cur):
                    n0 += size
                    n1 -= size
                    t = totals[row, k]
                    u0 += t
                    u1 -= t
                    if row == 0 and k == cur - 1:
                        exit_flag = True
                        break
                    delta_mean = (u0 / n0) - (u1 / n1)
                    if n1 >= min_window_length and n0 >= min_window_length:
                        # Hoeffding-style cut threshold with the variance correction of
                        # Bifet & Gavaldà (2007), section 3.
                        width = fs[_F_WIDTH]
                        delta_prime = math.log(2.0 * math.log(width) / delta)
                        m_recip = 1.0 / (n0 - min_window_length + 1.0) + 1.0 / (
                            n1 - min_window_length + 1.0
                        )
                        epsilon = (
                            math.sqrt(2.0 * m_recip * (fs[_F_VARIANCE] / width) * delta_prime)
                            + 2.0 / 3.0 * delta_prime * m_recip
                        )
                        if abs(delta_mean) > epsilon:
                            reduce_width = True
                            # delta_mean is older minus newer: negative when it went up.
                            # A cut is reported only when the change is also large next
                            # to the older mean (min_rise): a real stream's loss drifts by
                            # a few percent as new users arrive, which is significant on
                            # 100k events and not worth anyone's attention.
                            large = abs(delta_mean) >= min_rise * abs(u0 / n0)
                            if large and (not only_increases or delta_mean < 0.0):
                                reported = True
                            if fs[_F_WIDTH] > 0.0:
                                _delete_oldest(totals, variances, counts, fs, st)
                                exit_flag = True
                                break
                row -= 1
    fs[_F_TOTAL_WIDTH] += fs[_F_WIDTH]
    if reported:
        st[_I_DETECTIONS] += 1
    return reported


@njit(cache=True)
def _adwin_update(
    values: FloatArray,
    totals: FloatArray,
    variances: FloatArray,
    counts: IntArray,
    fs: FloatArray,
    st: IntArray,
    delta: float,
    clock: int,
    max_buckets: int,
    min_window_length: float,
    grace_period: float,
    only_increases: bool,
    min_rise: float,
) -> tuple[IntArray, FloatArray]:
    out = np.empty(len(values), dtype=np.int64)
    stats = np.empty(len(values), dtype=np.float64)
    n_out = 0
    for i in range(len(values)):
        # River's ADWIN forgets the whole window on the update after a detection.
        if st[_I_PENDING_RESET] != 0:
            _reset(totals, variances, counts, fs, st)
        _insert(values[i], totals, variances, counts, fs, st, max_buckets)
        if _detect(
            totals, variances, counts, fs, st, delta, clock, min_window_length, grace_period,
            only_increases, min_rise,
        ):
            st[_I_PENDING_RESET] = 1
            out[n_out] = i
            stats[n_out] = fs[_F_TOTAL] / fs[_F_WIDTH] if fs[_F_WIDTH] > 0 else 0.0
            n_out += 1
    return out[:n_out], stats[:n_out]


class ADWIN:
    """Adaptive windowing drift detector (ADWIN2), updated with a whole batch at once.

    ADWIN keeps a window of recent values whose length adapts: whenever two sub-windows
    ``W0`` (older) and ``W1`` (newer) have means that differ by more than a bound derived
    from ``delta``, the oldest values are dropped and a drift is reported. The window is
    compressed into an exponential histogram, so memory and time per check are
    ``O(log W)``.

    With ``direction="both"`` the semantics are River's ``drift.ADWIN`` (including that
    the window is forgotten on the update following a detection): on the same values both
    report drifts at the same positions. The default, ``direction="up"``, still cuts the
    window at every significant change but reports only increases: watching a loss, a
    model that is still learning has a *falling* loss, and calling that drift raised
    false alarms (and, with the 'adapt' reaction, needless learning-rate boosts). The
    per-value loop runs in a compiled numba kernel.

    Parameters
    ----------
    delta
        Significance value in (0, 1): smaller means fewer false alarms and slower detection.
    clock
        Check for a change every ``clock`` values (1 checks after every value).
    max_buckets
        Summaries of each size kept before two are merged (ADWIN2's ``M``).
    min_window_length
        Smallest sub-window, in values, on either side of a cut.
    grace_period
        No change is reported before the window holds more than this many values.
    direction
        ``"up"`` reports only rises of the mean (for losses); ``"both"`` reports any change.
    min_rise
        Smallest change worth reporting, relative to the older sub-window's mean (0.25: a
        quarter). Cuts below it still shrink the window, as ADWIN does, but are not
        reported; 0 reports every significant cut (River's behaviour).

    Example
    -------
    >>> import numpy as np
    >>> from service.drift.adwin import ADWIN
    >>> rng = np.random.default_rng(7)
    >>> stream = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(2.0, 1.0, 2000)])
    >>> adwin = ADWIN()
    >>> detections = adwin.update(stream)
    >>> bool(2000 <= detections[0] < 2200)
    True
    >>> adwin.n_detections >= 1
    True

    References
    ----------
    .. [1] Albert Bifet and Ricard Gavaldà. "Learning from time-changing data with adaptive
       windowing." Proceedings of the 2007 SIAM International Conference on Data Mining,
       443-448.
    .. [2] B. Babcock, M. Datar, R. Motwani, L. O'Callaghan. "Maintaining variance and
       k-medians over data stream windows." PODS 2003.
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        direction: str = "up",
        min_rise: float = 0.0,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}; 0.002 is the usual value.")
        if clock < 1:
            raise ValueError(f"clock must be >= 1 (check every `clock` values), got {clock}.")
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be >= 2, got {max_buckets}; 5 is usual.")
        if min_window_length < 1:
            raise ValueError(f"min_window_length must be >= 1, got {min_window_length}.")
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {grace_period}.")
        if direction not in ("up", "both"):
            raise ValueError(f"direction must be 'up' or 'both', got {direction!r}.")
        if not (min_rise >= 0.0 and math.isfinite(min_rise)):
            raise ValueError(f"min_rise must be a non-negative number, got {min_rise}.")
        self.direction = direction
        self.min_rise = float(min_rise)
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self._totals = np.zeros((_MAX_ROWS, self.max_buckets + 1), dtype=np.float64)
        self._variances = np.zeros_like(self._totals)
        self._counts = np.zeros(_MAX_ROWS, dtype=np.int64)
        self._fs = np.zeros(4, dtype=np.float64)
        self._st = np.zeros(6, dtype=np.int64)
        self._st[_I_ROWS] = 1
        self.n_detections = 0
        # The statistic (window mean after the cut) at each detection of the last update.
        self.last_statistics = np.zeros(0, dtype=np.float64)

    def update(self, values: npt.ArrayLike) -> IntArray:
        """Feed ``values`` in order; return the positions (into ``values``) of detections."""
        x = np.ascontiguousarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"ADWIN.update takes a 1-d array of values, got shape {x.shape}.")
        if not np.all(np.isfinite(x)):
            raise ValueError("ADWIN.update got NaN or infinite values; drop them first.")
        hits, stats = _adwin_update(
            x,
            self._totals,
            self._variances,
            self._counts,
            self._fs,
            self._st,
            self.delta,
            self.clock,
            self.max_buckets,
            float(self.min_window_length),
            float(self.grace_period),
            self.direction == "up",
            self.min_rise,
        )
        self.n_detections += len(hits)
        self.last_statistics = stats
        return hits

    @property
    def drift_detected(self) -> bool:
        """True when the last value fed caused a detection."""
        return bool(self._st[_I_PENDING_RESET])

    @property
    def width(self) -> int:
        """Number of values in the current window."""
        return int(self._fs[_F_WIDTH])

    @property
    def total(self) -> float:
        """Sum of the values in the window."""
        return float(self._fs[_F_TOTAL])

    @property
    def variance(self) -> float:
        """Sum of squared deviations from the mean within the window (as River's)."""
        return float(self._fs[_F_VARIANCE])

    @property
    def estimation(self) -> float:
        """Mean of the values in the window: the detector's exported statistic."""
        width = self._fs[_F_WIDTH]
        return float(self._fs[_F_TOTAL] / width) if width > 0 else 0.0

    statistic = estimation

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON-able parameters that :meth:`set_state` restores exactly."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "totals": self._totals.copy(),
            "variances": self._variances.copy(),
            "counts": self._counts.copy(),
            "fstate": self._fs.copy(),
            "istate": self._st.copy(),
        }
        meta = {
            "type": "adwin",
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
            "direction": self.direction,
            "n_detections": self.n_detections,
        }
        return arrays, meta

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (parameters must match)."""
        check_params(meta, self.get_state()[1], "ADWIN")
        expected = {"totals": self._totals.shape, "counts": self._counts.shape}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(
                    f"ADWIN state array {name!r} has shape {arrays[name].shape}, expected "
                    f"{shape}: the checkpoint was written with other ADWIN settings."
                )
        self._totals = np.array(arrays["totals"], dtype=np.float64)
        self._variances = np.array(arrays["variances"], dtype=np.float64)
        self._counts = np.array(arrays["counts"], dtype=np.int64)
        self._fs = np.array(arrays["fstate"], dtype=np.float64)
        self._st = np.array(arrays["istate"], dtype=np.int64)
        self.n_detections = int(meta["n_detections"])

