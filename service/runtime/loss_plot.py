"""The plot of a backfill's loss per pass (``freshrec backfill --plot PATH.png``).

One line per pass: the loss averaged over a sliding window of examples, against the
position in the pass. Pass 1's line is progressive (each example scored before it was
learned); the lines of later passes are training loss on examples already learned, drawn
dashed and labelled so, since they fall by construction.

Example
-------
>>> import numpy as np
>>> x, y = windowed(np.array([1.0, 3.0, 5.0, 7.0]), window=2)
>>> x.tolist(), y.tolist()
([2, 3, 4], [2.0, 4.0, 6.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.runtime.passes import PassResult

MAX_POINTS = 2_000
"""Points drawn per line at most (a line of millions of points says no more)."""


def windowed(losses: npt.NDArray[np.floating], window: int
             ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The mean loss of each ``window`` consecutive examples, by the count of examples
    seen at its end (the whole pass's mean once when it is shorter than ``window``)."""
    values = np.asarray(losses, dtype=np.float64)
    if not len(values):
        return np.zeros(0, np.int64), np.zeros(0)
    window = max(1, min(window, len(values)))
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(window, len(values) + 1, dtype=np.int64)
    return ends, (sums[ends] - sums[ends - window]) / window


def plot_passes(passes: Sequence[PassResult], path: str | Path, window: int) -> Path:
    """Draw ``passes`` into the PNG ``path``; returns it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'freshrec[bench]'"
                           ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for result in passes:
        x, y = windowed(result.losses, window)
        step = max(1, len(x) // MAX_POINTS)
        label = (f"pass {result.number} ({result.kind}"
                 f"{', on seen data' if result.kind == 'training' else ''}): "
                 f"mean {result.mean_loss:.4f}")
        ax.plot(x[::step], y[::step], label=label,
                linestyle="-" if result.kind == "progressive" else "--")
    name = passes[0].loss_name if passes else "loss"
    ax.set_xlabel("examples into the pass")
    ax.set_ylabel(f"{name}, mean of the last {window:,} examples")
    ax.set_title("freshrec backfill: loss per pass")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
