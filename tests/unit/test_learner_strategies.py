"""Update strategies: micro-batch boundaries, averaged steps and window retraining."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.examples import ExampleBatch
from service.learners import BPR, FM, FTRL, BiasedMF, MicroBatch, PerEvent, WindowRetrain
from service.learners.optim import Optimizer


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
    for strategy in (MicroBatch(4), MicroBatch(4, one_per_user=False)):
        model = BiasedMF(5, 5, n_factors=2, strategy=strategy)
        # Four users (one_per_user cuts only at a repeated user), one item they share.
        b = ExampleBatch.from_arrays([1, 2, 3, 4], [1, 1, 1, 1], [5, 5, 5, 5])
        # The running target mean is per event even within a mini-batch (no cold start);
        # a first batch of the same target fixes it at 5, so only the parameters differ.
        model.learn(ExampleBatch.from_arrays([1, 2, 3, 4], [1, 1, 1, 1], [1, 9, 5, 5]))
        model.learn(ExampleBatch.from_arrays([1, 2, 3, 4], [2, 2, 2, 2], [5, 5, 5, 5]))
        before = model.predict(b)
        preds, stats = model.learn(b)
        assert stats.n_updates == 4
        # One set of parameters scored all four, the shared item's included: the ones
        # from before the mini-batch.
        np.testing.assert_array_equal(preds, before)


def test_one_per_user_scores_each_example_after_its_users_previous_one() -> None:
    # A session: one user rates one item four times. Cut at every repeated user, the
    # micro-batch learns exactly as per event (one example per mini-batch); without
    # the cut the four scores come from the same frozen parameters.
    session = ExampleBatch.from_arrays([1, 1, 1, 1], [1, 1, 1, 1], [5, 5, 5, 5])
    warm = ExampleBatch.from_arrays([1, 1, 1, 1], [1, 1, 1, 1], [1, 9, 5, 5])
    got = {}
    for name, strategy in (("per_event", PerEvent()), ("cut", MicroBatch(4)),
                           ("frozen", MicroBatch(4, one_per_user=False))):
        model = BiasedMF(5, 5, n_factors=2, strategy=strategy,
                         optimizer=Optimizer(kind="sgd", learning_rate=0.05))
        model.learn(warm)
        got[name] = model.learn(session)[0]
    np.testing.assert_allclose(got["cut"], got["per_event"], rtol=1e-6)
    assert len(set(got["frozen"].tolist())) == 1
    assert len(set(got["cut"].tolist())) == 4
    assert MicroBatch(4).bounds(np.zeros(4, np.int64), session.user).tolist() == [
        0, 1, 2, 3, 4]


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
    pb, sb = make(MicroBatch(1, one_per_user=False)).learn(b)
    assert sa.n_updates == sb.n_updates > 0
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda s: FTRL(10, 12, feature_bits=6, strategy=s),
    lambda s: BPR(10, 12, n_factors=3, strategy=s),
], ids=["ftrl", "bpr"])
def test_ftrl_and_bpr_micro_batches_score_with_frozen_parameters(make: Any) -> None:
    model = make(MicroBatch(3, one_per_user=False))
    model.learn(_implicit(200, 2))
    same = ExampleBatch.from_arrays([1] * 6, [2] * 6, [1.0] * 6)
    preds, stats = model.learn(same)
    assert stats.n_updates == 6
    assert len(set(preds[:3].tolist())) == 1 and len(set(preds[3:].tolist())) == 1
    assert preds[3] != preds[0]  # one averaged step between the two mini-batches


# -- micro-batch kernels against plain numpy references of their rules -------------------


def _ftrl_reference(model: FTRL, b: ExampleBatch, size: int) -> tuple[np.ndarray, np.ndarray]:
    """FTRL micro-batches in numpy: weights frozen per mini-batch, each coordinate's
    per-event updates summed (its sigmas telescope to one)."""
    from service.learners.hashing import BIAS_FIELD, ITEM_FIELD, USER_FIELD, hash_index

    z = model.arrays["z"].copy()
    n = model.arrays["n"].copy()
    mask = model.mask
    for lo in range(0, len(b), size):
        hi = min(len(b), lo + size)
        w = -(z - np.sign(z) * model.l1) / ((model.beta + np.sqrt(n)) / model.alpha
                                            + model.l2)
        w[np.abs(z) <= model.l1] = 0.0
        gsum = np.zeros_like(z)
        g2sum = np.zeros_like(z)
        for e in range(lo, hi):
            rows = [hash_index(BIAS_FIELD, 0, mask), hash_index(USER_FIELD, b.user[e], mask),
                    hash_index(ITEM_FIELD, b.item[e], mask)]
            rows += b.feat_idx[b.feat_indptr[e]:b.feat_indptr[e + 1]].tolist()
            p = 1.0 / (1.0 + np.exp(-sum(w[r] for r in rows)))
            for r in rows:
                gsum[r] += p - b.y[e]
                g2sum[r] += (p - b.y[e]) ** 2
        sigma = (np.sqrt(n + g2sum) - np.sqrt(n)) / model.alpha
        z += gsum - sigma * w
        n += g2sum
    return z, n


def test_ftrl_micro_batch_sums_each_coordinates_updates_with_frozen_weights() -> None:
    b = _implicit(300, 3)
    model = FTRL(10, 12, feature_bits=8, l1=0.1, strategy=MicroBatch(32, one_per_user=False))
    model.learn(_implicit(100, 4))  # start from non-zero z and n
    z, n = _ftrl_reference(model, b, 32)
    model.learn(b)
    np.testing.assert_allclose(model.arrays["z"], z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.arrays["n"], n, rtol=1e-9, atol=1e-12)


def _bpr_reference(model: BPR, b: ExampleBatch, size: int) -> dict[str, np.ndarray]:
    """BPR SGD micro-batches in numpy: each touched row steps once along its mean
    gradient with row_rate(eta, count), the parameters frozen for the mini-batch."""
    from service.learners.rng import uniform_int
    from service.learners.strategies import row_rate

    a = {k: v.astype(np.float64) for k, v in model.arrays.items()}
    sampler = model.arrays["sampler"].copy()
    eta, l2, l2b = model.optimizer.learning_rate, model.optimizer.l2, model.l2_bias
    n_neg = max(model.used_items, int(b.item.max()) + 1, 3)  # learn() raises the mark first
    bi, P, Q = a["item_bias"], a["user_factors"], a["item_factors"]
    for lo in range(0, len(b), size):
        gb = np.zeros_like(bi)
        gP, gQ = np.zeros_like(P), np.zeros_like(Q)
        cu, ci = np.zeros(len(P)), np.zeros(len(Q))
        for e in range(lo, min(len(b), lo + size)):
            u, i = int(b.user[e]), int(b.item[e])
            if b.y[e] <= 0:
                continue
            j = uniform_int(sampler, 1, n_neg - 1)
            j += j >= i
            x = (bi[i] + P[u] @ Q[i]) - (bi[j] + P[u] @ Q[j])
            g = -1.0 / (1.0 + np.exp(x))
            gb[i] += g
            gb[j] -= g
            gQ[i] += g * P[u]
            gQ[j] -= g * P[u]
            gP[u] += g * (Q[i] - Q[j])
            ci[i] += 1
            ci[j] += 1
            cu[u] += 1
        for rows, c, grad, table in ((np.flatnonzero(cu), cu, gP, P),
                                     (np.flatnonzero(ci), ci, gQ, Q)):
            rate = np.array([row_rate(eta, int(k)) for k in c[rows]])[:, None]
            table[rows] -= rate * (grad[rows] / c[rows, None] + l2 * table[rows])
        rows = np.flatnonzero(ci)
        rate = np.array([row_rate(eta, int(k)) for k in ci[rows]])
        bi[rows] -= rate * (gb[rows] / ci[rows] + l2b * bi[rows])
    return a


def test_bpr_micro_batch_steps_each_row_once_along_its_mean_gradient() -> None:
    # 40 users and 30 items in mini-batches of 16: most rows are touched once (stepped
    # in place), some several times (slots), as in a real stream.
    rng = np.random.default_rng(5)
    b = ExampleBatch.from_arrays(rng.integers(1, 40, 400), rng.integers(1, 30, 400),
                                 rng.integers(0, 2, 400))
    model = BPR(40, 30, n_factors=4, l2_bias=0.01, strategy=MicroBatch(16, one_per_user=False))
    model.learn(_implicit(50, 6))
    ref = _bpr_reference(model, b, 16)
    model.learn(b)
    for name in ("item_bias", "user_factors", "item_factors"):
        np.testing.assert_allclose(model.arrays[name], ref[name], rtol=1e-4, atol=1e-6)


def test_fm_binary_micro_batch_moves_no_coordinate_more_than_one_step() -> None:
    # 64 examples sharing every feature, all clicked: the summed AdaGrad step from a
    # cold start would move each shared coordinate by eta * sqrt(64) = 8 eta.
    n = 64
    b = ExampleBatch.from_arrays(np.full(n, 3), np.full(n, 4), np.ones(n))
    b.feat_indptr = np.arange(0, 5 * n + 1, 5, dtype=np.int64)
    b.feat_idx = np.tile(np.arange(5), n)
    b.feat_val = np.ones(5 * n, dtype=np.float32)
    model = FM(10, 12, feature_bits=4, task="binary", n_factors=3, init_std=0.1,
               strategy=MicroBatch(n, one_per_user=False))
    eta = model.optimizer.learning_rate
    W, V = model.arrays["weights"].copy(), model.arrays["factors"].copy()
    model.learn(b)
    dW = np.abs(model.arrays["weights"] - W)
    dV = np.abs(model.arrays["factors"] - V)
    assert dW.max() <= eta * (1 + 1e-5) and dV.max() <= eta * (1 + 1e-5)
    assert dW.max() >= eta * 0.99  # the shared linear weights did take a full step


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
@pytest.mark.parametrize("make", [
    lambda s, o: BiasedMF(40, 30, n_factors=4, strategy=s, optimizer=o),
    lambda s, o: BPR(40, 30, n_factors=4, strategy=s, optimizer=o),
    lambda s, o: FM(40, 30, feature_bits=6, n_factors=4, strategy=s, optimizer=o),
], ids=["biased_mf", "bpr", "fm"])
def test_micro_batch_leaves_its_slots_empty_and_their_buffers_zero(make: Any,
                                                                   optimizer: str) -> None:
    # claim_row does not clear a new slot's buffers: every kernel must leave them zero,
    # rejected rows (absurd weights, then an overflowing score) included.
    from service.learners.optim import Optimizer

    rng = np.random.default_rng(7)
    n = 600
    weight = np.ones(n, dtype=np.float32)
    weight[::50] = 3e38
    b = ExampleBatch.from_arrays(rng.integers(1, 40, n), rng.integers(1, 30, n),
                                 rng.integers(1, 6, n), weight=weight)
    model = make(MicroBatch(32, one_per_user=False), Optimizer(kind=optimizer, learning_rate=0.05))
    # An item row whose gradient sums overflow: its row steps are rejected (with SGD;
    # AdaGrad's overflowing sum of squares makes its steps zero instead, for BPR).
    factors = model.arrays["item_factors" if "item_factors" in model.arrays else "factors"]
    factors[41 if "factors" in model.arrays else 1] = 3e37
    _, stats = model.learn(b)
    assert stats.n_skipped_nonfinite > 0 or optimizer == "adagrad"
    scratch = model._scratch if hasattr(model, "_scratch") else None
    if scratch is not None:
        maps = (scratch.users._slot, scratch.items._slot)
        buffers = scratch._buffers[:4]
    else:
        maps = (model._slots._slot,)
        buffers = model._buffers[:2]
    assert all((m == -1).all() for m in maps)
    assert all((buf == 0).all() for buf in buffers)
