"""PSI: ~0 for the same distribution, large for a shifted one; rolling windows; state."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.drift.psi import RollingPSI, hash_buckets, population_stability_index


def test_psi_of_identical_histograms_is_zero() -> None:
    assert population_stability_index([10, 20, 30], [10, 20, 30]) == 0.0
    # Proportions matter, not totals.
    assert population_stability_index([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0, abs=1e-3)


@settings(max_examples=50, deadline=None)
@given(
    ref=st.lists(st.integers(0, 10_000), min_size=2, max_size=30),
    data=st.data(),
)
def test_psi_is_symmetric_and_non_negative(ref: list[int], data: st.DataObject) -> None:
    cur = data.draw(st.lists(st.integers(0, 10_000), min_size=len(ref), max_size=len(ref)))
    a = population_stability_index(ref, cur)
    b = population_stability_index(cur, ref)
    assert a >= 0.0
    assert a == pytest.approx(b)


def test_psi_rejects_mismatched_histograms() -> None:
    with pytest.raises(ValueError, match="same bins"):
        population_stability_index([1, 2], [1, 2, 3])


@pytest.mark.parametrize("seed", range(3))
def test_same_distribution_gives_small_psi_and_no_detection(seed: int) -> None:
    rng = np.random.default_rng(seed)
    psi = RollingPSI(block_size=2000, reference_blocks=5, current_blocks=2)
    assert len(psi.update(rng.normal(3.0, 2.0, 60_000))) == 0
    assert psi.ready
    assert psi.statistic < 0.02


@pytest.mark.parametrize("seed", range(3))
def test_shifted_distribution_gives_large_psi_and_one_detection(seed: int) -> None:
    rng = np.random.default_rng(seed)
    psi = RollingPSI(block_size=2000, reference_blocks=5, current_blocks=2, threshold=0.25)
    psi.update(rng.normal(0.0, 1.0, 20_000))
    hits = psi.update(rng.normal(1.0, 1.0, 20_000))
    # The current window (2 blocks) is fully shifted after 4000 values: detected by then.
    assert len(hits) >= 1 and hits[0] < 4000, hits
    assert psi.last_statistics[0] > 0.25
    # After a detection the new distribution becomes the reference: it does not keep firing.
    assert len(hits) == 1


def test_categorical_popularity_shift_is_detected() -> None:
    rng = np.random.default_rng(0)
    psi = RollingPSI("categorical", n_bins=64, block_size=5000, reference_blocks=4,
                     current_blocks=1)
    head = rng.zipf(1.5, 40_000) % 10_000
    assert len(psi.update(hash_buckets(head, 64))) == 0
    # A new set of items becomes popular.
    shifted = (rng.zipf(1.5, 10_000) % 10_000) + 20_000
    assert len(psi.update(hash_buckets(shifted, 64))) == 1


def test_categorical_values_out_of_range_are_rejected() -> None:
    with pytest.raises(ValueError, match="hash_buckets"):
        RollingPSI("categorical", n_bins=4, block_size=10).update(np.array([0, 4]))


def test_hash_buckets_are_in_range_and_spread_dense_ids() -> None:
    b = hash_buckets(np.arange(100_000), 64)
    assert b.min() == 0 and b.max() == 63
    counts = np.bincount(b, minlength=64)
    assert counts.min() > 0.9 * counts.mean()
    with pytest.raises(ValueError, match="power of two"):
        hash_buckets([1], 48)


def test_discrete_values_with_tied_quantiles_work() -> None:
    rng = np.random.default_rng(1)
    psi = RollingPSI(block_size=1000, reference_blocks=3, current_blocks=1)
    assert len(psi.update(rng.integers(0, 2, 10_000).astype(float))) == 0
    assert len(psi.update(np.ones(3000))) == 1


def test_windows_roll_forward() -> None:
    rng = np.random.default_rng(2)
    psi = RollingPSI(block_size=1000, reference_blocks=2, current_blocks=1, threshold=5.0)
    # A slow drift never exceeds the (high) threshold but the reference keeps up with it:
    # PSI against the last 2 blocks stays small although the stream moved far.
    for step in range(30):
        psi.update(rng.normal(step * 0.05, 1.0, 1000))
    assert psi.statistic < 0.1


def test_state_round_trips_exactly() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 15_000), rng.normal(0.7, 1, 15_000)])
    kwargs = dict(block_size=1000, reference_blocks=4, current_blocks=2)
    expected = RollingPSI(**kwargs).update(x).tolist()  # type: ignore[arg-type]
    first = RollingPSI(**kwargs)  # type: ignore[arg-type]
    got = first.update(x[:12_345]).tolist()
    arrays, meta = first.get_state()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    second = RollingPSI(**kwargs)  # type: ignore[arg-type]
    second.set_state(dict(np.load(buf)), json.loads(json.dumps(meta)))
    got += (second.update(x[12_345:]) + 12_345).tolist()
    assert got == expected
    assert len(expected) >= 1


def test_set_state_refuses_other_parameters() -> None:
    arrays, meta = RollingPSI(n_bins=10).get_state()
    with pytest.raises(ValueError, match="n_bins"):
        RollingPSI(n_bins=20).set_state(arrays, meta)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "ordinal"},
        {"n_bins": 1},
        {"block_size": 0},
        {"block_size": 5, "n_bins": 10},
        {"reference_blocks": 0},
        {"threshold": 0.0},
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RollingPSI(**kwargs)  # type: ignore[arg-type]
