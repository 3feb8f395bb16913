"""Learners recover planted structure from generated streams."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from service.demo.generator import StreamSpec, SyntheticStream
from service.evaluation import sampled_ranks
from service.examples import ExampleBatch
from service.learners import (
    BPR,
    FM,
    FTRL,
    BiasedMF,
    LearnerConfig,
    MicroBatch,
    SklearnSGD,
    make_learner,
)

N_USERS, N_ITEMS = 300, 120


def ratings(n: int, seed: int = 3) -> tuple[SyntheticStream, ExampleBatch]:
    stream = SyntheticStream(StreamSpec(n_users=N_USERS, n_items=N_ITEMS, seed=seed,
                                        noise=0.2, user_skew=0.3, item_skew=0.3))
    r = stream.ratings(n)
    return stream, ExampleBatch.from_arrays(r.user + 1, r.item + 1, r.rating)


def clicks(n: int, seed: int = 4) -> ExampleBatch:
    stream = SyntheticStream(StreamSpec(n_users=N_USERS, n_items=N_ITEMS, seed=seed))
    c = stream.clicks(n)
    return ExampleBatch.from_arrays(c.user + 1, c.item + 1, c.clicked)


def test_biased_mf_beats_global_mean_and_ranks_planted_favourites() -> None:
    stream, batch = ratings(120_000)
    model = BiasedMF(N_USERS + 1, N_ITEMS + 1, n_factors=16)
    preds, stats = model.learn(batch)
    assert stats.n_updates == len(batch)
    tail = slice(-20_000, None)
    rmse = np.sqrt(np.mean((preds[tail] - batch.y[tail]) ** 2))
    baseline = np.std(batch.y[tail])
    assert rmse < 0.6 * baseline
    # The model's top items for a user are among the user's planted favourites.
    hits = []
    for user in range(10):
        truth = stream.true_score(np.full(N_ITEMS, user), np.arange(N_ITEMS))
        best = set((np.argsort(-truth)[:20] + 1).tolist())
        rows, _ = model.recommend(user + 1, k=5, exclude_seen=False)
        hits.append(len(best & set(rows.tolist())) / 5)
    assert np.mean(hits) > 0.6


@pytest.mark.parametrize("strategy", ["per_event", "micro_batch"])
def test_fm_regression_learns(strategy: str) -> None:
    _, batch = ratings(60_000)
    model = make_learner(LearnerConfig(model="fm", n_factors=8, strategy=strategy),
                         N_USERS + 1, N_ITEMS + 1, 8)
    preds, _ = model.learn(batch)
    tail = slice(-10_000, None)
    assert np.sqrt(np.mean((preds[tail] - batch.y[tail]) ** 2)) < 0.75 * np.std(batch.y[tail])


def test_ftrl_and_fm_binary_rank_clicks() -> None:
    # The planted model's own AUC on this stream is 0.77 (clicks are noisy draws).
    batch = clicks(60_000)
    tail = slice(-15_000, None)
    auc = {}
    for model in (FTRL(N_USERS + 1, N_ITEMS + 1, 12),
                  FM(N_USERS + 1, N_ITEMS + 1, 8, task="binary", n_factors=8)):
        preds, _ = model.learn(batch)
        assert ((preds >= 0) & (preds <= 1)).all()
        auc[model.model_type] = roc_auc_score(batch.y[tail], preds[tail])
    assert auc["ftrl"] > 0.62
    # Clicks follow user x item taste, which only the factorisation machine can model.
    assert auc["fm"] > auc["ftrl"]


def test_ftrl_side_features_and_l1_sparsity() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    feat = rng.integers(0, 64, n)
    y = (rng.random(n) < np.where(feat < 8, 0.9, 0.1)).astype(np.float32)
    batch = ExampleBatch.from_arrays(np.zeros(n, np.int64), np.zeros(n, np.int64), y)
    batch.feat_indptr = np.arange(n + 1, dtype=np.int64)
    batch.feat_idx = feat.astype(np.int64)
    batch.feat_val = np.ones(n, np.float32)
    model = FTRL(1, 2, feature_bits=10, l1=1.0)
    preds, _ = model.learn(batch)
    assert roc_auc_score(y[-5000:], preds[-5000:]) > 0.75  # the true model's AUC is 0.77
    w = model.weights(np.arange(1024))
    assert (w == 0).sum() > 900  # L1 leaves untouched and weak coordinates exactly zero


@pytest.mark.parametrize("strategy", [None, MicroBatch(64)], ids=["per_event", "micro_batch"])
def test_bpr_ranks_positives_above_random_items(strategy: MicroBatch | None) -> None:
    rng = np.random.default_rng(1)
    n = 60_000
    users = rng.integers(1, 200, n)
    # Two taste groups: even users use items 1..29, odd users 30..59.
    items = np.where(users % 2 == 0, rng.integers(1, 30, n), rng.integers(30, 60, n))
    model = BPR(200, 60, n_factors=8, strategy=strategy)
    _, stats = model.learn(ExampleBatch.from_arrays(users, items, np.ones(n)))
    assert stats.n_updates == n
    test_u = rng.integers(1, 200, 2000)
    test_i = np.where(test_u % 2 == 0, rng.integers(1, 30, 2000), rng.integers(30, 60, 2000))
    ranks = sampled_ranks(model.score_pairs, test_u, test_i, 60, 20, rng)
    # Random scores give 5/21 = 0.24; separating the two tastes perfectly (with no order
    # inside a taste, where the stream has none) gives about 5/11 = 0.45.
    assert (ranks < 5).mean() > 0.42


def test_sklearn_baseline_learns_item_effects() -> None:
    rng = np.random.default_rng(2)
    users, items = rng.integers(1, 20, 6000), rng.integers(1, 10, 6000)
    y = 2.0 + 2.0 * (items % 2)
    model = SklearnSGD(20, 10, feature_bits=10)
    for chunk in np.array_split(np.arange(6000), 12):
        model.learn(ExampleBatch.from_arrays(users[chunk], items[chunk], y[chunk]))
    p = model.predict(ExampleBatch.from_arrays([3, 3], [2, 3], [0, 0]))
    assert p[1] - p[0] > 1.0


def test_invalid_rows_are_rejected_with_a_clear_message() -> None:
    model = BiasedMF(10, 10, n_factors=2)
    with pytest.raises(ValueError, match="user rows must be in"):
        model.learn(ExampleBatch.from_arrays([10], [1], [3.0]))
    with pytest.raises(ValueError, match="n_factors"):
        BiasedMF(10, 10, n_factors=0)
    for cls in (BiasedMF, BPR):
        with pytest.raises(ValueError, match="l2_bias"):
            cls(10, 10, l2_bias=-1.0)
        with pytest.raises(ValueError, match="l2_bias"):
            cls(10, 10, l2_bias=float("nan"))
    with pytest.raises(ValueError, match="only does"):
        make_learner(LearnerConfig(model="ftrl", task="regression"), 10, 10, 8)
