"""Page-Hinkley: River's semantics, detection of a loss increase, silence when stationary."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift as river_drift

from service.drift.page_hinkley import PageHinkley


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-2.0, 2.0),
    min_instances=st.sampled_from([1, 30]),
    delta=st.sampled_from([0.005, 0.1]),
    threshold=st.sampled_from([5.0, 50.0]),
    alpha=st.sampled_from([1.0, 0.9999, 0.99]),
    mode=st.sampled_from(["up", "down", "both"]),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_same_detections_as_river(
    seed: int,
    shift: float,
    min_instances: int,
    delta: float,
    threshold: float,
    alpha: float,
    mode: str,
    cuts: list[int],
) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0, 1, 1000), rng.normal(shift, 1, 1000)])
    params = dict(
        min_instances=min_instances, delta=delta, threshold=threshold, alpha=alpha, mode=mode
    )
    ref = river_drift.PageHinkley(**params)
    expected = []
    for i, v in enumerate(values):
        ref.update(float(v))
        if ref.drift_detected:
            expected.append(i)
    ours = PageHinkley(**params)  # type: ignore[arg-type]
    got: list[int] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(values)]:
        got.extend((ours.update(values[start:cut]) + start).tolist())
        start = cut
    assert got == expected


@pytest.mark.parametrize("seed", range(5))
def test_standardized_detects_a_loss_increase_within_bounded_delay(seed: int) -> None:
    rng = np.random.default_rng(seed)
    change = 20_000
    losses = np.concatenate(
        [rng.exponential(0.5, change), rng.exponential(0.5, change) + 0.5]
    )
    ph = PageHinkley(delta=0.1, threshold=100.0, alpha=1.0, standardize=True)
    hits = ph.update(losses)
    assert not np.any(hits < change), f"false alarm before the change: {hits}"
    assert len(hits) and hits[0] - change < 400, hits
    assert ph.last_statistics[0] > 100.0


@pytest.mark.parametrize("seed", range(5))
def test_standardized_is_silent_on_a_stationary_stream_of_the_same_length(seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    ph = PageHinkley(delta=0.1, threshold=100.0, alpha=1.0, standardize=True)
    assert len(ph.update(rng.exponential(0.5, 40_000))) == 0


def test_standardized_is_scale_free() -> None:
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.exponential(1.0, 5000), rng.exponential(1.0, 5000) + 1.0])
    small = PageHinkley(standardize=True, delta=0.1, threshold=100.0, alpha=1.0).update(x)
    large = PageHinkley(standardize=True, delta=0.1, threshold=100.0, alpha=1.0).update(x * 1e3)
    assert small.tolist() == large.tolist()
    assert len(small) >= 1


def test_mode_up_ignores_a_loss_decrease() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.exponential(1.0, 5000) + 1.0, rng.exponential(1.0, 5000)])
    assert len(PageHinkley(mode="up", standardize=True, delta=0.1, threshold=100).update(x)) == 0
    assert len(PageHinkley(mode="down", standardize=True, delta=0.1, threshold=100).update(x))


def test_state_round_trips_exactly() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 3000), rng.normal(1, 1, 3000)])
    expected = PageHinkley(standardize=True).update(x).tolist()
    first = PageHinkley(standardize=True)
    got = first.update(x[:2000]).tolist()
    arrays, meta = first.get_state()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    second = PageHinkley(standardize=True)
    second.set_state(dict(np.load(buf)), json.loads(json.dumps(meta)))
    got += (second.update(x[2000:]) + 2000).tolist()
    assert got == expected


def test_set_state_refuses_other_parameters() -> None:
    arrays, meta = PageHinkley(threshold=10.0).get_state()
    with pytest.raises(ValueError, match="threshold"):
        PageHinkley(threshold=20.0).set_state(arrays, meta)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_instances": 0}, {"delta": -1.0}, {"threshold": 0.0}, {"alpha": 0.0}, {"mode": "x"}],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PageHinkley(**kwargs)  # type: ignore[arg-type]
