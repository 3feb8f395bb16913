"""ADWIN: River's semantics exactly, detection of abrupt shifts, silence on stationary data."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift as river_drift

from service.drift.adwin import ADWIN


def _river_positions(values: np.ndarray, **params: float) -> tuple[list[int], river_drift.ADWIN]:
    ref = river_drift.ADWIN(**params)
    hits = []
    for i, v in enumerate(values):
        ref.update(float(v))
        if ref.drift_detected:
            hits.append(i)
    return hits, ref


def _chunked(detector: ADWIN, values: np.ndarray, cuts: list[int]) -> list[int]:
    hits: list[int] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(values)]:
        hits.extend((detector.update(values[start:cut]) + start).tolist())
        start = cut
    return hits


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(0.0, 3.0),
    delta=st.sampled_from([0.002, 0.05, 0.3]),
    clock=st.sampled_from([1, 5, 32]),
    max_buckets=st.sampled_from([2, 5]),
    min_window_length=st.sampled_from([1, 5, 10]),
    grace_period=st.sampled_from([0, 10, 100]),
    cuts=st.lists(st.integers(0, 3000), max_size=6),
)
def test_same_detections_and_window_as_river(
    seed: int,
    shift: float,
    delta: float,
    clock: int,
    max_buckets: int,
    min_window_length: int,
    grace_period: int,
    cuts: list[int],
) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0, 1, 1500), rng.normal(shift, 1, 1500)])
    params = dict(
        delta=delta,
        clock=clock,
        max_buckets=max_buckets,
        min_window_length=min_window_length,
        grace_period=grace_period,
    )
    expected, ref = _river_positions(values, **params)
    ours = ADWIN(**params, direction="both")  # River reports changes both ways
    assert _chunked(ours, values, cuts) == expected
    assert ours.width == ref.width
    assert ours.total == ref.total
    assert ours.variance == ref.variance
    assert ours.estimation == ref.estimation


@pytest.mark.parametrize("seed", range(5))
def test_detects_an_abrupt_mean_shift_within_bounded_delay(seed: int) -> None:
    rng = np.random.default_rng(seed)
    change = 5000
    values = np.concatenate([rng.normal(0.5, 0.3, change), rng.normal(1.0, 0.3, change)])
    hits = ADWIN().update(values)
    assert len(hits) >= 1
    first_after = hits[hits >= change]
    assert len(first_after) and first_after[0] - change < 300, hits
    assert not np.any(hits < change), f"false alarm before the change: {hits}"


@pytest.mark.parametrize("seed", range(5))
def test_no_detection_on_a_stationary_stream_of_the_same_length(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    assert len(ADWIN().update(rng.normal(0.5, 0.3, 10_000))) == 0


def test_statistic_is_the_window_mean_and_recent_after_a_change() -> None:
    rng = np.random.default_rng(1)
    adwin = ADWIN()
    adwin.update(np.concatenate([rng.normal(0.0, 0.1, 3000), rng.normal(2.0, 0.1, 3000)]))
    assert adwin.n_detections >= 1
    # After the cut the window holds only the new concept.
    assert adwin.statistic == pytest.approx(2.0, abs=0.05)


def test_state_round_trips_exactly_through_npz_and_json() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(0, 1, 4000), rng.normal(1, 1, 4000)])
    uninterrupted = ADWIN(delta=0.01)
    expected = uninterrupted.update(values).tolist()

    first = ADWIN(delta=0.01)
    hits = first.update(values[:3000]).tolist()
    arrays, meta = first.get_state()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    restored_arrays = dict(np.load(buf))
    second = ADWIN(delta=0.01)
    second.set_state(restored_arrays, json.loads(json.dumps(meta)))
    hits += (second.update(values[3000:]) + 3000).tolist()
    assert hits == expected
    assert second.n_detections == uninterrupted.n_detections
    assert second.variance == uninterrupted.variance


def test_set_state_refuses_other_parameters() -> None:
    arrays, meta = ADWIN(delta=0.01).get_state()
    with pytest.raises(ValueError, match="delta"):
        ADWIN(delta=0.002).set_state(arrays, meta)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"clock": 0}, "clock"),
        ({"max_buckets": 1}, "max_buckets"),
        ({"min_window_length": 0}, "min_window_length"),
        ({"grace_period": -1}, "grace_period"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ADWIN(**kwargs)  # type: ignore[arg-type]


def test_non_finite_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ADWIN().update(np.array([1.0, np.nan]))


def test_a_falling_mean_is_not_reported_by_default_but_is_cut() -> None:
    # A loss that falls as the model learns is not drift; ADWIN still forgets the old
    # values (its window shrinks) so that a later rise is measured against the new level.
    rng = np.random.default_rng(3)
    falling = np.concatenate([rng.normal(2.0, 0.3, 3000), rng.normal(0.5, 0.3, 3000)])
    up_only = ADWIN()
    assert len(up_only.update(falling)) == 0
    assert up_only.width < 6000
    assert len(ADWIN(direction="both").update(falling)) >= 1
    rising = falling[::-1].copy()
    assert len(ADWIN().update(rising)) >= 1
