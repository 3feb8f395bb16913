"""Event-time lateness: an event is too old against the stream's own time, not the clock.

A replay of last month's events, in order, is history arriving on time: judged against
the wall clock every event would be "too old". Judged against the stream, an event is too
old only when it is far behind the events before it. The *watermark* of a partition is
the largest event time accepted on it so far; an event more than
``preprocess.allowed_lateness_ms`` behind the watermark of its partition is refused as
``timestamp_too_old``. (The future is still judged against the wall clock: an event from
tomorrow is a producer's clock or time-zone bug, whatever the stream says.)

Per partition, because the interleaving of partitions in a batch depends on fetch timing
while each partition's own order is fixed: so the decision for an event depends only on
the events of its partition before it, and never on how Kafka cut the stream into batches.
Inside a batch the watermark moves event by event (a running maximum), so a batch of any
size gives the same answer as the same events one at a time.

Example
-------
>>> import numpy as np
>>> marks = Watermarks()
>>> ts = np.array([1_000, 5_000, 3_500, 1_200, 9_000])
>>> marks.judge(ts, np.ones(5, np.bool_), None, lateness_ms=2_000).tolist()
[False, False, False, True, False]
>>> marks.marks, marks.judge(np.array([6_900]), np.ones(1, np.bool_), None, 2_000).tolist()
({0: 9000}, [True])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

_NONE = np.iinfo(np.int64).min  # no event seen yet


@dataclass(slots=True)
class Watermarks:
    """The largest accepted event time of each partition (milliseconds since the epoch)."""

    marks: dict[int, int] = field(default_factory=dict)
    behind: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    """For each event of the last :meth:`judge`: the watermark it was judged against."""

    def judge(
        self,
        ts_ms: npt.NDArray[np.int64],
        eligible: npt.NDArray[np.bool_],
        partitions: npt.NDArray[np.int64] | None,
        lateness_ms: int,
    ) -> npt.NDArray[np.bool_]:
        """Which events are too old; the watermarks advance over the eligible others.

        Parameters
        ----------
        ts_ms
            Event times of a batch, in stream order.
        eligible
            Events that passed every other check: only they can be too old, and only the
            accepted ones move a watermark.
        partitions
            Partition of each event; ``None`` when all come from one (partition 0).
        lateness_ms
            How far behind its partition's watermark an event may be.
        """
        n = len(ts_ms)
        too_old = np.zeros(n, dtype=np.bool_)
        behind = np.full(n, _NONE, dtype=np.int64)
        if n == 0:
            self.behind = behind
            return too_old
        groups: list[tuple[int, npt.NDArray[np.int64] | slice]]
        if partitions is None:
            groups = [(0, slice(None))]
        else:
            parts = np.asarray(partitions, dtype=np.int64)
            uniq = np.unique(parts)
            groups = ([(int(uniq[0]), slice(None))] if len(uniq) == 1 else
                      [(int(p), np.flatnonzero(parts == p)) for p in uniq])
        for partition, rows in groups:
            t = ts_ms[rows]
            ok = eligible[rows]
            start = self.marks.get(partition, _NONE)
            # The watermark before each event: the running maximum of the eligible events
            # before it (a too-old event never raises it: it is below it by definition).
            running = np.maximum.accumulate(np.where(ok, t, _NONE))
            prior = np.empty_like(running)
            prior[0] = start
            np.maximum(running[:-1], start, out=prior[1:])
            late = ok & (prior != _NONE) & (t < prior - lateness_ms)
            too_old[rows] = late
            behind[rows] = prior
            newest = max(start, int(running[-1]))
            if newest != _NONE:
                self.marks[partition] = newest
        self.behind = behind
        return too_old

    # -- state ------------------------------------------------------------------------

    def get_state(self) -> dict[str, int]:
        return {str(p): int(t) for p, t in sorted(self.marks.items())}

    def set_state(self, state: Mapping[str, int]) -> None:
        self.marks = {int(p): int(t) for p, t in state.items()}
