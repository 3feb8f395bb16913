"""Update strategies: micro-batch boundaries, averaged steps and window retraining."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.examples import ExampleBatch
from service.learners import BPR, FM, FTRL, BiasedMF, MicroBatch, WindowRetrain


# No deadline: the first example loads (or compiles) the numba kernel.
@settings(deadline=None)
@given(gaps=st.lists(st.integers(0, 50), min_size=0, max_size=200),
       size=st.integers(1, 20), interval=st.integers(0, 100))
def test_micro_batch_bounds_cover_the_batch_within_limits(gaps: list[int], size: int,
                                                          interval: int) -> None:
    ts = np.cumsum(np.array(gaps, dtype=np.int64))
    bounds = MicroBatch(size, interval).bounds(ts)
    n = len(ts)
    assert bounds[0] == 0 and bounds[-1] == n
    seg = np.diff(bounds)
    assert (seg >= 1).all() and (seg <= size).all()
    for a, b in itertools.pairwise(bounds):
        if interval:
            assert ts[b - 1] - ts[a] < interval


def test_micro_batch_of_one_equals_per_event_sgd_without_regularisation() -> None:
    rng = np.random.default_rng(0)
    b = ExampleBatch.from_arrays(rng.integers(1, 10, 300), rng.integers(1, 10, 300),
                                 rng.integers(1, 6, 300))
    per_event = BiasedMF(10, 10, n_factors=3)
    micro = BiasedMF(10, 10, n_factors=3, strategy=MicroBatch(1))
    pa, _ = per_event.learn(b)
    pb, _ = micro.learn(b)
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-4)


def test_micro_batch_predicts_the_whole_mini_batch_before_learning() -> None:
    model = BiasedMF(5, 5, n_factors=2, strategy=MicroBatch(4))
    b = ExampleBatch.from_arrays([1, 1, 1, 1], [1, 1, 1, 1], [5, 5, 5, 5])
    # The running target mean is per event even within a mini-batch (no cold start);
    # a first batch of the same target fixes it at 5, so only the parameters can differ.
    model.learn(ExampleBatch.from_arrays([1, 1, 1, 1], [1, 1, 1, 1], [1, 9, 5, 5]))
    preds, stats = model.learn(b)
    assert stats.n_updates == 4
    assert len(set(preds.tolist())) == 1  # one set of parameters scored all four


def test_window_retrain_predicts_with_a_frozen_model_between_retrains() -> None:
    model = WindowRetrain(BiasedMF(5, 5, n_factors=2), window=10, every=10, epochs=1)
    b = ExampleBatch.from_arrays(np.ones(25, np.int64), np.ones(25, np.int64),
                                 np.full(25, 5.0))
    preds, stats = model.learn(b)
    assert model.n_retrains == 2
    assert len(set(preds[:10].tolist())) == 1   # untrained, frozen
    assert len(set(preds[10:20].tolist())) == 1  # frozen after the first retrain
    assert preds[10] != preds[0]
    assert stats.n_updates == 20


def _implicit(n: int, seed: int) -> ExampleBatch:
    rng = np.random.default_rng(seed)
    b = ExampleBatch.from_arrays(rng.integers(1, 10, n), rng.integers(1, 12, n),
                                 rng.integers(0, 2, n))
    b.feat_indptr = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
    # Three fields with value ranges of their own: no example repeats a feature (a
    # mini-batch of one averages a repeated coordinate where per event steps twice).
    b.feat_idx = (rng.integers(0, 20, (n, 3)) + np.array([0, 20, 40])).ravel()
    b.feat_val = np.ones(3 * n, dtype=np.float32)
    return b


@pytest.mark.parametrize("make", [
    lambda s: FTRL(10, 12, feature_bits=12, strategy=s),
    lambda s: BPR(10, 12, n_factors=3, strategy=s),
    lambda s: FM(10, 12, feature_bits=6, n_factors=3, task="binary", strategy=s),
], ids=["ftrl", "bpr", "fm-binary"])
def test_micro_batch_of_one_equals_per_event(make: Any) -> None:
    b = _implicit(400, 1)
    pa, sa = make(None).learn(b)
    pb, sb = make(MicroBatch(1)).learn(b)
    assert sa.n_updates == sb.n_updates > 0
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda s: FTRL(10, 12, feature_bits=6, strategy=s),
    lambda s: BPR(10, 12, n_factors=3, strategy=s),
], ids=["ftrl", "bpr"])
def test_ftrl_and_bpr_micro_batches_score_with_frozen_parameters(make: Any) -> None:
    model = make(MicroBatch(3))
    model.learn(_implicit(200, 2))
    same = ExampleBatch.from_arrays([1] * 6, [2] * 6, [1.0] * 6)
    preds, stats = model.learn(same)
    assert stats.n_updates == 6
    assert len(set(preds[:3].tolist())) == 1 and len(set(preds[3:].tolist())) == 1
    assert preds[3] != preds[0]  # one averaged step between the two mini-batches
