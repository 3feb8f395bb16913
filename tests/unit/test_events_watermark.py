"""Watermarks: the decision for an event depends on its partition's events before it only."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from service.events.watermark import Watermarks

events = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.booleans()),
                  min_size=1, max_size=200)


def _one_by_one(rows: list[tuple[int, int, bool]], lateness: int) -> list[bool]:
    """The definition, event by event."""
    marks: dict[int, int] = {}
    out = []
    for p, t, ok in rows:
        late = ok and p in marks and t < marks[p] - lateness
        out.append(late)
        if ok and not late:
            marks[p] = max(marks.get(p, t), t)
    return out


@given(events, st.lists(st.integers(1, 50), min_size=1, max_size=20), st.integers(0, 3000))
def test_any_batch_cut_gives_the_event_by_event_answer(
    rows: list[tuple[int, int, bool]], cuts: list[int], lateness: int,
) -> None:
    expected = _one_by_one(rows, lateness)
    marks = Watermarks()
    got: list[bool] = []
    lo, k = 0, 0
    while lo < len(rows):
        chunk = rows[lo:lo + cuts[k % len(cuts)]]
        k += 1
        parts = np.array([p for p, _, _ in chunk], dtype=np.int64)
        ts = np.array([t for _, t, _ in chunk], dtype=np.int64)
        ok = np.array([o for _, _, o in chunk], dtype=np.bool_)
        got += marks.judge(ts, ok, parts, lateness).tolist()
        lo += len(chunk)
    assert got == expected
    restored = Watermarks()
    restored.set_state(marks.get_state())
    assert restored.marks == marks.marks
