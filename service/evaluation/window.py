"""A fixed-size window over the most recent values of a few float columns.

Windowed progressive metrics ("RMSE over the last 10,000 events") need the last ``W``
per-example values. A ring buffer written with whole-array slices keeps this O(batch)
per update with no per-event Python, and its arrays are the checkpointable state.

Example
-------
>>> import numpy as np
>>> w = Window(size=3, columns=1)
>>> w.extend(np.array([[1.0], [2.0]]))
>>> w.extend(np.array([[3.0], [4.0]]))
>>> sorted(w.values()[:, 0].tolist())
[2.0, 3.0, 4.0]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def add_in_order(sums: F64, rows: npt.ArrayLike) -> None:
    """Add ``rows`` (one value, or one row of ``len(sums)`` values, per example) to
    ``sums`` in place, one example after the other.

    ``rows.sum(axis=0)`` adds pairwise within the batch, so the rounding of a running
    total would depend on where the batches were cut; adding in stream order gives the
    same bits however the examples are split into calls.

    >>> import numpy as np
    >>> a, b = np.zeros(1), np.zeros(1)
    >>> x = np.random.default_rng(0).random((1000, 1))
    >>> add_in_order(a, x); add_in_order(b, x[:333]); add_in_order(b, x[333:])
    >>> bool(a[0] == b[0])
    True
    """
    values = np.asarray(rows, dtype=np.float64).reshape(-1, len(sums))
    if len(values):
        # add.accumulate is a sequential scan (no pairwise summation).
        sums[:] = np.add.accumulate(np.concatenate([sums[None, :], values]), axis=0)[-1]


class Window:
    """The last ``size`` rows appended, of ``columns`` float64 columns (order not kept)."""

    def __init__(self, size: int, columns: int) -> None:
        if size < 1 or columns < 1:
            raise ValueError(f"window size and columns must be >= 1, got {size}, {columns}")
        self.size = size
        self.data = np.zeros((size, columns), dtype=np.float64)
        self.count = 0

    def extend(self, rows: F64) -> None:
        n = len(rows)
        if n == 0:
            return
        if n >= self.size:
            rows = rows[n - self.size :]
            start = (self.count + n - self.size) % self.size
            # Place the tail so the ring stays consistent with the running count.
            idx = (start + np.arange(self.size)) % self.size
            self.data[idx] = rows
        else:
            start = self.count % self.size
            end = start + n
            if end <= self.size:
                self.data[start:end] = rows
            else:
                split = self.size - start
                self.data[start:] = rows[:split]
                self.data[: n - split] = rows[split:]
        self.count += n

    def values(self) -> F64:
        """The rows currently in the window."""
        return self.data[: min(self.count, self.size)]

    def get_state(self) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
        return {"data": self.data.copy(), "count": np.array([self.count], dtype=np.int64)}

    def set_state(self, state: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]
                  ) -> None:
        """Restore :meth:`get_state`'s output. A window saved with another size (the
        setting changed between a checkpoint and a restart) keeps its newest rows, as many
        as fit: the windowed metric goes on instead of the service refusing to start.

        >>> old = Window(size=4, columns=1)
        >>> old.extend(np.arange(6.0)[:, None])  # holds 2, 3, 4, 5
        >>> new = Window(size=3, columns=1)
        >>> new.set_state(old.get_state())
        >>> sorted(new.values()[:, 0].tolist())
        [3.0, 4.0, 5.0]
        """
        data = np.asarray(state["data"], dtype=np.float64)
        count = int(state["count"][0])
        if data.ndim != 2 or data.shape[1] != self.data.shape[1]:
            raise ValueError(
                f"window state has shape {data.shape}, expected {self.data.shape[1]} columns"
            )
        if data.shape == self.data.shape:
            self.data = data.copy()
            self.count = count
            return
        # Oldest first: the ring's next write position holds its oldest row.
        held = min(count, len(data))
        ordered = np.roll(data, -(count % len(data)), axis=0) if count >= len(data) else data
        self.data = np.zeros_like(self.data)
        self.count = 0
        self.extend(ordered[:held][-len(self.data):])
