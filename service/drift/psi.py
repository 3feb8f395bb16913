"""Population stability index (PSI) of a stream against a reference window that rolls forward.

The stream is cut into blocks of ``block_size`` values and each block is reduced to a
histogram. The reference is the sum of the ``reference_blocks`` oldest kept blocks and the
current window the sum of the ``current_blocks`` newest, so both roll forward one block at
a time and the detector only ever stores ``reference_blocks + current_blocks`` small
histograms (never raw values, except the first block used to place the bin edges).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.drift.base import check_params

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Kind = Literal["numeric", "categorical"]

# Fibonacci hashing: multiplying by 2**64 / golden ratio spreads consecutive ids (dense row
# indices) over the buckets; the top bits of the product are the bucket.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hash_buckets(ids: npt.ArrayLike, n_buckets: int) -> IntArray:
    """Map integer ids to ``[0, n_buckets)`` (a power of two) with Fibonacci hashing.

    >>> hash_buckets([0, 1, 2, 3], 8).tolist()
    [0, 4, 1, 6]
    """
    if n_buckets < 2 or n_buckets & (n_buckets - 1):
        raise ValueError(f"n_buckets must be a power of two >= 2, got {n_buckets}.")
    bits = np.uint64(64 - (n_buckets.bit_length() - 1))
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    return ((x * _GOLDEN) >> bits).astype(np.int64)


def population_stability_index(
    reference: npt.ArrayLike, current: npt.ArrayLike, smoothing: float = 0.5
) -> float:
    """PSI between two histograms of counts over the same bins.

    ``PSI = sum_i (c_i - r_i) * ln(c_i / r_i)`` over the bin shares ``r`` (reference) and
    ``c`` (current): a symmetric Kullback-Leibler divergence. ``smoothing`` pseudo-counts
    are added to every bin so that empty bins do not make it infinite. Rules of thumb:
    below 0.1 no shift, 0.1 to 0.25 moderate, above 0.25 a significant shift.

    >>> population_stability_index([50, 50], [50, 50])
    0.0
    >>> round(population_stability_index([90, 10], [10, 90], smoothing=0.0), 3)  # 1.6 ln 9
    3.516
    """
    r = np.asarray(reference, dtype=np.float64) + smoothing
    c = np.asarray(current, dtype=np.float64) + smoothing
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(
            f"reference and current must be 1-d histograms of the same bins, got shapes "
            f"{r.shape} and {c.shape}."
        )
    p = r / r.sum()
    q = c / c.sum()
    return float(np.sum((q - p) * np.log(q / p)))


class RollingPSI:
    """PSI drift detector over a rolling reference window.

    Numeric values are binned at ``n_bins`` quantiles of the first block seen (and again
    after each detection, since the old bins may no longer fit); categorical values are
    already bin numbers in ``[0, n_bins)`` (for example :func:`hash_buckets` of item ids).
    After every completed block the PSI between the reference and current windows is the
    statistic; when it exceeds ``threshold`` a drift is reported at the value that
    completed the block and the history is dropped, so the new distribution becomes the
    next reference instead of firing again on every block.

    Parameters
    ----------
    kind
        ``"numeric"`` (quantile bins) or ``"categorical"`` (values are bin numbers).
    n_bins
        Number of bins.
    block_size
        Values per block: the granularity at which the windows roll and PSI is computed.
    reference_blocks, current_blocks
        Blocks in the reference and in the current window.
    threshold
        PSI above which a drift is reported (0.25 is the usual "significant shift").

    Example
    -------
    >>> import numpy as np
    >>> from service.drift.psi import RollingPSI
    >>> rng = np.random.default_rng(0)
    >>> psi = RollingPSI(block_size=1000, reference_blocks=4, current_blocks=1)
    >>> len(psi.update(rng.normal(0.0, 1.0, 8000)))
    0
    >>> psi.statistic < 0.05
    True
    >>> hits = psi.update(rng.normal(1.0, 1.0, 2000))
    >>> hits.tolist(), psi.statistic > 0.25
    ([999], True)

    References
    ----------
    .. [1] B. Yurdakul. "Statistical properties of population stability index." PhD thesis,
       Western Michigan University, 2018.
    """

    def __init__(
        self,
        kind: Kind = "numeric",
        n_bins: int = 10,
        block_size: int = 5000,
        reference_blocks: int = 8,
        current_blocks: int = 2,
        threshold: float = 0.25,
    ) -> None:
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}.")
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}.")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}.")
        if kind == "numeric" and block_size < n_bins:
            raise ValueError(
                f"block_size ({block_size}) must be >= n_bins ({n_bins}): the bin edges are "
                "quantiles of the first block."
            )
        if reference_blocks < 1 or current_blocks < 1:
            raise ValueError("reference_blocks and current_blocks must both be >= 1.")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}; 0.25 is usual.")
        self.kind: Kind = kind
        self.n_bins = int(n_bins)
        self.block_size = int(block_size)
        self.reference_blocks = int(reference_blocks)
        self.current_blocks = int(current_blocks)
        self.threshold = float(threshold)
        n_ring = self.reference_blocks + self.current_blocks
        self._blocks = np.zeros((n_ring, self.n_bins), dtype=np.int64)
        self._filling = np.zeros(self.n_bins, dtype=np.int64)
        # Raw values of the first block after a (re)start, to place the numeric bin edges.
        self._pending = np.zeros(self.block_size if kind == "numeric" else 0, dtype=np.float64)
        self._edges = np.zeros(0, dtype=np.float64)
        # [values in the filling block, completed blocks kept, edges placed (0/1)]
        self._counts = np.zeros(3, dtype=np.int64)
        self._stat = np.zeros(1, dtype=np.float64)
        self.n_detections = 0
        # The PSI at each detection of the last update.
        self.last_statistics = np.zeros(0, dtype=np.float64)

    @property
    def statistic(self) -> float:
        """PSI of the last completed block (0 until both windows are full)."""
        return float(self._stat[0])

    @property
    def ready(self) -> bool:
        """True once both windows are full and PSI is being computed."""
        return bool(self._counts[1] >= len(self._blocks))

    def _bin(self, values: FloatArray) -> IntArray:
        if self.kind == "categorical":
            bins = values.astype(np.int64)
            if len(bins) and (bins.min() < 0 or bins.max() >= self.n_bins):
                raise ValueError(
                    f"categorical values must be bin numbers in [0, {self.n_bins}); hash ids "
                    "with service.drift.psi.hash_buckets first."
                )
            return bins
        # Outliers beyond the edges fall into the first or last bin, which is what makes a
        # shifted distribution show up as a large PSI.
        return np.searchsorted(self._edges, values, side="right").astype(np.int64)

    def _complete_block(self) -> bool:
        blocks = self._blocks
        blocks[:-1] = blocks[1:]
        blocks[-1] = self._filling
        self._filling[:] = 0
        self._counts[0] = 0
        self._counts[1] = min(self._counts[1] + 1, len(blocks))
        if self._counts[1] < len(blocks):
            return False
        psi = population_stability_index(
            blocks[: self.reference_blocks].sum(axis=0),
            blocks[self.reference_blocks :].sum(axis=0),
        )
        self._stat[0] = psi
        if psi <= self.threshold:
            return False
        # Start over: the new distribution becomes the reference, with bins fitted to it.
        blocks[:] = 0
        self._counts[1] = 0
        if self.kind == "numeric":
            self._counts[2] = 0
        return True

    def _place_edges(self) -> None:
        qs = np.linspace(0.0, 1.0, self.n_bins + 1)[1:-1]
        edges = np.quantile(self._pending, qs)
        # Ties (discrete values) give repeated edges; nudging keeps n_bins bins, some empty.
        self._edges = np.maximum.accumulate(edges)
        self._counts[2] = 1

    def update(self, values: npt.ArrayLike) -> IntArray:
        """Feed ``values`` in order; return the positions (into ``values``) of detections."""
        x = np.ascontiguousarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"RollingPSI.update takes a 1-d array, got shape {x.shape}.")
        if not np.all(np.isfinite(x)):
            raise ValueError("RollingPSI.update got NaN or infinite values; drop them first.")
        hits: list[int] = []
        stats: list[float] = []
        pos, n = 0, len(x)
        # One iteration per block boundary crossed, not per value.
        while pos < n:
            fill = int(self._counts[0])
            take = min(self.block_size - fill, n - pos)
            chunk = x[pos : pos + take]
            if self.kind == "numeric" and not self._counts[2]:
                self._pending[fill : fill + take] = chunk
            else:
                self._filling += np.bincount(self._bin(chunk), minlength=self.n_bins)
            self._counts[0] = fill + take
            pos += take
            if self._counts[0] == self.block_size:
                if self.kind == "numeric" and not self._counts[2]:
                    self._place_edges()
                    self._filling += np.bincount(
                        self._bin(self._pending), minlength=self.n_bins
                    )
                if self._complete_block():
                    hits.append(pos - 1)
                    stats.append(self.statistic)
        self.n_detections += len(hits)
        self.last_statistics = np.asarray(stats, dtype=np.float64)
        return np.asarray(hits, dtype=np.int64)

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON-able parameters that :meth:`set_state` restores exactly."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "blocks": self._blocks.copy(),
            "filling": self._filling.copy(),
            "pending": self._pending.copy(),
            "edges": self._edges.copy(),
            "counts": self._counts.copy(),
            "stat": self._stat.copy(),
        }
        meta = {
            "type": "psi",
            "kind": self.kind,
            "n_bins": self.n_bins,
            "block_size": self.block_size,
            "reference_blocks": self.reference_blocks,
            "current_blocks": self.current_blocks,
            "threshold": self.threshold,
            "n_detections": self.n_detections,
        }
        return arrays, meta

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (parameters must match)."""
        check_params(meta, self.get_state()[1], "RollingPSI")
        if arrays["blocks"].shape != self._blocks.shape:
            raise ValueError(
                f"RollingPSI state has {arrays['blocks'].shape} blocks, expected "
                f"{self._blocks.shape}."
            )
        self._blocks = np.array(arrays["blocks"], dtype=np.int64)
        self._filling = np.array(arrays["filling"], dtype=np.int64)
        self._pending = np.array(arrays["pending"], dtype=np.float64)
        self._edges = np.array(arrays["edges"], dtype=np.float64)
        self._counts = np.array(arrays["counts"], dtype=np.int64)
        self._stat = np.array(arrays["stat"], dtype=np.float64)
        self.n_detections = int(meta["n_detections"])
