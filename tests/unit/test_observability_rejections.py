"""RejectionWatch: the rejected share of the recent window, and a warning that says what to fix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.events.reasons import RejectReason
from service.observability.rejections import FIXES, RejectionWatch, fix_for


@given(st.lists(st.tuples(st.integers(1, 3000), st.floats(0, 1)), min_size=1, max_size=40),
       st.integers(1, 10_000))
def test_share_is_taken_over_whole_recent_batches_covering_the_window(
    batches: list[tuple[int, float]], window: int,
) -> None:
    watch = RejectionWatch(window=window)
    flat: list[tuple[int, int]] = []
    for n, share in batches:
        k = int(n * share)
        watch.observe(n, [("not_json", "x")] * k)
        flat.append((n, k))
    # The newest batches that reach the window (never fewer than one batch).
    kept, events = [], 0
    for n, k in reversed(flat):
        if kept and events >= window:
            break
        kept.append((n, k))
        events += n
    assert watch.events == sum(n for n, _ in kept)
    assert watch.share == pytest.approx(sum(k for _, k in kept) / watch.events)


def test_a_stream_without_schema_version_gets_a_warning_naming_the_fix() -> None:
    watch = RejectionWatch(window=1000)
    for _ in range(5):
        watch.observe(500, [("missing_field", "'schema_version' is missing; add it")] * 400
                      + [("not_json", "unexpected end of data")] * 50)
    assert watch.share == pytest.approx(0.9)
    warning = watch.warning()
    assert warning is not None
    assert warning.startswith("90% of the last 1000 events were rejected: missing_field 800")
    assert 'add "schema_version": 1' in warning and "not_json 100" in warning
    watch.observe(10_000, [])
    assert watch.share == 0 and watch.warning() is None


def test_every_reason_has_a_fix() -> None:
    assert {str(r) for r in RejectReason} <= set(FIXES)
    assert fix_for("missing_field", "'user_id' is missing") == FIXES["missing_field"]
