"""A table of rows as the freshrec events a producer would publish, in time order.

:func:`replay` turns :class:`~service.readers.interactions.Interactions` into event JSON
in the contract of ``docs/events.md`` (``schema_version`` 1, a unique ``event_id``, epoch
milliseconds):

* a **rating** row is one ``rating`` event with its ``value``;
* a **click** row is an ``impression`` with its side features, and, when the row was
  clicked, a ``click`` of the same user and item ``click_delay_ms`` (1 s) later with the
  same features. The training labels then come from the pipeline's own attribution of
  clicks to impressions, which is what the service sees from a live producer;
* an **implicit** row is one event of its type (``click``, ``add_to_cart``, ``purchase``).

Messages are ordered by event time; rows with equal times keep their file order (a
stable sort). Row times are then made strictly increasing, a row that shares the
previous row's millisecond moving 1 ms later (:attr:`Replay.max_shift_ms` says how far
any moved), so that each example the pipeline emits can be traced back to its row by its
event time (:meth:`Replay.rows_of`) without any id in the events beyond the contract's.

:meth:`Replay.batches` cuts the messages into what one Kafka poll hands the pipeline on a
backlog: ``size`` messages at a time, whatever event time they span, with the ``now_ms``
to pass to ``Pipeline.process``, the batch's newest event time, as if the events were
live. Lateness is judged against the stream's own watermark, event by event
(:mod:`service.events.watermark`), so history replayed in time order is on time in a
batch of any span. (Batches were once also cut at ``preprocess.allowed_lateness_ms`` of
span, from when lateness was judged against the clock. On a sparse log, 22 years of
MovieLens latest-small, that cut polls of about 30 messages and the per-poll cost made
the pipeline's speed look 8x lower; its learning was the same.)

Example
-------
>>> import orjson
>>> from service.readers.interactions import Interactions
>>> t = Interactions.build("clicks", user=["u1", "u2"], item=["a", "a"],
...                        ts_ms=[5000, 5000], label=[1, 0],
...                        features={"context": {"device": ["ios", None]}})
>>> r = replay(t)
>>> [(orjson.loads(v)["event_type"], int(ts)) for v, ts in zip(r.values, r.ts_ms)]
[('impression', 5000), ('impression', 5001), ('click', 6000)]
>>> orjson.loads(r.values[1])["context"]  # a missing feature is left out
{}
>>> r.rows_of(np.array([6000, 5001]), np.array([1.0, 0.0])).tolist()
[0, 1]
>>> list(r.batches(size=2))
[(0, 2, 5001), (2, 3, 6000)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from service.readers.interactions import MAPS, Interactions

IntArray = npt.NDArray[np.int64]
CLICK_DELAY_MS = 1000
END_USER = "freshrec-replay-end"


@dataclass(slots=True)
class Replay:
    """The messages of a replay and how they relate to the rows.

    Parameters
    ----------
    table
        The rows, in time order.
    values
        Event JSON of each message, in publishing order.
    ts_ms
        Event time of each message.
    row
        The row each message comes from.
    is_click
        True for a click following a clicked impression.
    row_ts_ms
        Event time of each row (its impression, rating or engagement), strictly increasing.
    click_delay_ms
        How long after its impression a click is sent.
    max_shift_ms
        The most any row's time moved to make row times strictly increasing.
    """

    table: Interactions
    values: list[bytes]
    ts_ms: IntArray
    row: IntArray
    is_click: npt.NDArray[np.bool_]
    row_ts_ms: IntArray
    click_delay_ms: int
    max_shift_ms: int

    def __len__(self) -> int:
        return len(self.values)

    def batches(self, size: int) -> Iterator[tuple[int, int, int]]:
        """``(lo, hi, now_ms)`` of consecutive batches of ``size`` messages (the last may
        be shorter); ``now_ms`` is the batch's newest event time."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        n = len(self.ts_ms)
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            yield lo, hi, int(self.ts_ms[hi - 1])

    def end_marker(self, after_ms: int) -> tuple[bytes, int]:
        """One impression ``after_ms`` past the last event, of a user and item no row has.

        Impressions wait for the attribution window to close before they become
        negatives, and only newer events close it: live traffic always comes, a replay
        ends. Sending this marker (with ``after_ms`` longer than the window) resolves the
        last pending impressions as later traffic would; the marker itself stays pending
        and never becomes an example.
        """
        ts = int(self.ts_ms[-1]) + after_ms if len(self.ts_ms) else after_ms
        return _event("end", "impression", END_USER, END_USER, ts), ts

    def rows_of(self, ts_ms: npt.ArrayLike, y: npt.ArrayLike) -> IntArray:
        """The row of each example, from its event time and label; -1 where none fits.

        An example at a row's time is that row's; for clicks, a positive is the clicked
        row whose impression time it has (the pipeline learns a positive as its impression
        was shown), or else the row whose click (``click_delay_ms`` after the impression)
        it carries. The impression comes first: when rows are ``click_delay_ms`` apart
        (Criteo, Avazu), a row's impression time is also the previous row's click time,
        and two clicked rows in a row were both traced to the first (the other contenders
        then learned its features twice, which flattered them). Failing both, a positive
        at an unclicked row's time is that row's: a user shown the same item twice inside
        the attribution window and clicking the second time gives one example, the first
        impression as shown with the click's label (the labeler merges repeated
        impressions), and the other contenders must learn that same example (they lost
        it before, and freshrec was scored on positives they never saw).

        >>> from service.readers import Interactions
        >>> t = Interactions.build("clicks", user=["a", "b", "c"], item=["x"] * 3,
        ...                        ts_ms=[0, 1000, 2000], label=[1, 1, 0])
        >>> replay(t).rows_of([0, 1000, 2000], [1, 1, 0]).tolist()
        [0, 1, 2]
        """
        ts = np.asarray(ts_ms, dtype=np.int64)
        positive = np.asarray(y) > 0
        rows = self._lookup(ts)
        if self.table.label is not None:
            clicked = self.table.label > 0
            own = (rows >= 0) & clicked[np.maximum(rows, 0)]
            via_click = self._lookup(ts - self.click_delay_ms)
            ok = (via_click >= 0) & clicked[np.maximum(via_click, 0)]
            rows = np.where(positive & ~own & ok, via_click, rows)
            # Otherwise a positive is an unclicked row's only by that row's own time.
        return rows

    def _lookup(self, ts: IntArray) -> IntArray:
        at = np.searchsorted(self.row_ts_ms, ts)
        inside = at < len(self.row_ts_ms)
        hit = inside & (self.row_ts_ms[np.minimum(at, len(self.row_ts_ms) - 1)] == ts)
        return np.where(hit, at, -1).astype(np.int64)


def strictly_increasing(ts_ms: IntArray) -> IntArray:
    """Sorted times moved up just enough to be strictly increasing.

    >>> strictly_increasing(np.array([5, 5, 5, 9, 9, 20])).tolist()
    [5, 6, 7, 9, 10, 20]
    """
    k = np.arange(len(ts_ms), dtype=np.int64)
    out: IntArray = np.maximum.accumulate(ts_ms - k) + k
    return out


def _event(event_id: str, event_type: str, user: str, item: str, ts: int,
           value: float | None = None, maps: dict[str, dict[str, Any]] | None = None) -> bytes:
    event: dict[str, Any] = {"schema_version": 1, "event_id": event_id,
                             "event_type": event_type, "user_id": user, "item_id": item,
                             "timestamp": ts}
    if value is not None:
        event["value"] = value
    if maps:
        event.update(maps)
    return orjson.dumps(event)


def _row_maps(table: Interactions) -> list[dict[str, dict[str, Any]]]:
    """Each row's feature maps, without its missing entries."""
    out: list[dict[str, dict[str, Any]]] = [{} for _ in range(len(table))]
    for m in MAPS:
        cols = table.features.get(m)
        if not cols:
            continue
        lists = [(key, col.tolist()) for key, col in cols.items()]
        for k, maps in enumerate(out):
            entries = {}
            for key, values in lists:
                v = values[k]
                if v is None or (isinstance(v, float) and not math.isfinite(v)):
                    continue
                entries[key] = v
            maps[m] = entries
    return out


def replay(table: Interactions, click_delay_ms: int = CLICK_DELAY_MS) -> Replay:
    """The events of ``table`` in publishing order (see the module docstring)."""
    if click_delay_ms < 1:
        raise ValueError(f"click_delay_ms must be at least 1, got {click_delay_ms}")
    table = table.time_ordered()
    n = len(table)
    row_ts = strictly_increasing(table.ts_ms)
    shift = int((row_ts - table.ts_ms).max()) if n else 0
    maps = _row_maps(table)
    users, items = table.user.tolist(), table.item.tolist()
    times = row_ts.tolist()
    if table.kind == "ratings":
        assert table.value is not None
        values = [_event(f"r{k}", "rating", users[k], items[k], times[k], v, maps[k])
                  for k, v in enumerate(table.value.tolist())]
        return Replay(table, values, row_ts, np.arange(n, dtype=np.int64),
                      np.zeros(n, np.bool_), row_ts, click_delay_ms, shift)
    if table.kind == "implicit":
        assert table.event_type is not None
        values = [_event(f"r{k}", t, users[k], items[k], times[k], None, maps[k])
                  for k, t in enumerate(table.event_type.tolist())]
        return Replay(table, values, row_ts, np.arange(n, dtype=np.int64),
                      np.zeros(n, np.bool_), row_ts, click_delay_ms, shift)
    assert table.label is not None
    clicked = np.flatnonzero(table.label > 0)
    impressions = [_event(f"i{k}", "impression", users[k], items[k], times[k], None, maps[k])
                   for k in range(n)]
    clicks = [_event(f"c{k}", "click", users[k], items[k], times[k] + click_delay_ms, None,
                     maps[k]) for k in clicked.tolist()]
    ts = np.concatenate([row_ts, row_ts[clicked] + click_delay_ms])
    rows = np.concatenate([np.arange(n, dtype=np.int64), clicked])
    is_click = np.concatenate([np.zeros(n, np.bool_), np.ones(len(clicked), np.bool_)])
    order = np.argsort(ts, kind="stable")  # a tie puts the impression before the click
    every = impressions + clicks
    return Replay(table, [every[k] for k in order.tolist()], ts[order], rows[order],
                  is_click[order], row_ts, click_delay_ms, shift)
