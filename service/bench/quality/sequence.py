"""The examples every contender of a quality run learns, in one order, with one label each.

freshrec's pipeline decides which rows become examples and when: holdout keeps a fixed
share out of learning, click labels are attributed from impressions and clicks, and an
unclicked impression becomes a negative only when its attribution window closes. The
run takes the sequence freshrec's pipeline learned (traced back to rows by event time,
:meth:`~service.readers.replay.Replay.rows_of`) and feeds exactly that sequence to River
and Vowpal Wabbit, so every contender is scored on the same examples in the same order
with the same labels. Without a freshrec contender the sequence is every row in time
order with the row's own label.

Example
-------
>>> import numpy as np
>>> s = ExampleSequence.of_rows(np.array([3.0, 4.0], np.float32), np.array([10, 20]))
>>> len(s), s.rows.tolist(), s.source
(2, [0, 1], 'rows')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(slots=True)
class ExampleSequence:
    """Examples in learning order.

    Parameters
    ----------
    rows
        The data set row of each example.
    y
        Its label (rating, 0/1 click, 1 for an engagement).
    weight
        Its weight (freshrec's event-type weights; 1 for rows).
    ts_ms
        Its event time.
    source
        ``"pipeline"`` when freshrec's pipeline made it, ``"rows"`` otherwise (with
        ``", by label time"`` once reordered by :meth:`by_label_time`).
    """

    rows: IntArray
    y: F32
    weight: F32
    ts_ms: IntArray
    source: str = "pipeline"

    def __post_init__(self) -> None:
        n = len(self.rows)
        if not (len(self.y) == len(self.weight) == len(self.ts_ms) == n):
            raise ValueError("rows, y, weight and ts_ms must have one entry per example")

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of_rows(cls, target: F32, ts_ms: IntArray) -> ExampleSequence:
        """Every row once, in time order, with its own label."""
        n = len(target)
        return cls(np.arange(n, dtype=np.int64), np.asarray(target, np.float32),
                   np.ones(n, np.float32), np.asarray(ts_ms, np.int64), source="rows")

    def label_runs(self) -> int:
        """Runs of equal labels (1 + label changes): far fewer than in :meth:`by_label_time`
        order means examples reach the learner in blocks of one label."""
        return int(1 + np.count_nonzero(np.diff(self.y) != 0)) if len(self) else 0

    def by_label_time(self, delay_negatives_ms: int = 0) -> ExampleSequence:
        """The same examples ordered by when each label became known (stable).

        A positive's label is known at its own time (the click's), a click negative's
        ``delay_negatives_ms`` after its impression (when the attribution window closes);
        pass 0 for ratings and engagements. This is the order a live stream reveals them
        in, whatever the batches.

        >>> s = ExampleSequence(np.arange(4), np.array([1, 1, 0, 0], np.float32),
        ...                     np.ones(4, np.float32), np.array([10, 30, 0, 25]))
        >>> t = s.by_label_time(delay_negatives_ms=12)
        >>> t.rows.tolist(), s.label_runs(), t.label_runs()
        ([0, 2, 1, 3], 2, 4)
        """
        known = self.ts_ms + np.where(self.y > 0, 0, delay_negatives_ms)
        order = np.argsort(known, kind="stable")
        return ExampleSequence(self.rows[order], self.y[order], self.weight[order],
                               self.ts_ms[order], source=f"{self.source}, by label time")

    def same_as(self, other: ExampleSequence) -> bool:
        """Whether ``other`` holds the same rows with the same labels in the same order."""
        return (len(self) == len(other) and bool(np.array_equal(self.rows, other.rows))
                and bool(np.array_equal(self.y, other.y)))
