"""Recommendations: seen items excluded, popular fallback, bounded memory."""

from __future__ import annotations

import numpy as np

from service.examples import ExampleBatch
from service.learners import BiasedMF, LearnerConfig, make_learner
from service.learners.interactions import Interactions, top_k


def trained(model_name: str = "biased_mf") -> object:
    rng = np.random.default_rng(0)
    n = 5000
    items = rng.choice(np.arange(1, 30), size=n, p=np.arange(29, 0, -1) / 435)
    model = make_learner(LearnerConfig(model=model_name, n_factors=4, seen_per_user=4),
                         20, 30, 8)
    model.learn(ExampleBatch.from_arrays(rng.integers(1, 20, n), items, np.ones(n) * 4))
    return model


def test_recommend_excludes_seen_and_explicit_items() -> None:
    for name in ("biased_mf", "fm", "bpr", "ftrl", "sklearn"):
        model = trained(name)
        seen = model.interactions.seen_items(3)  # type: ignore[attr-defined]
        assert 0 < len(seen) <= 4
        rows, scores = model.recommend(3, k=10, exclude=np.array([5]))  # type: ignore[attr-defined]
        assert len(rows) == 10
        assert not set(rows.tolist()) & (set(seen.tolist()) | {0, 5}), name
        assert (np.diff(scores) <= 0).all(), name
        rows_all, _ = model.recommend(3, k=29, exclude_seen=False)  # type: ignore[attr-defined]
        assert set(seen.tolist()) <= set(rows_all.tolist())


def test_unknown_users_get_popular_items() -> None:
    model = BiasedMF(20, 30, n_factors=4)
    items = np.array([7] * 50 + [3] * 30 + [9] * 10)
    model.learn(ExampleBatch.from_arrays(np.arange(len(items)) % 5 + 1, items,
                                         np.ones(len(items))))
    for user in (0, 15):  # the unknown row, and a row with no history
        rows, scores = model.recommend(user, k=3)
        assert rows.tolist() == [7, 3, 9]
        assert scores.tolist() == [50.0, 30.0, 10.0]


def test_interactions_ring_is_bounded() -> None:
    inter = Interactions(n_users=3, n_items=100, per_user=5)
    inter.record(np.ones(50, np.int64), np.arange(1, 51), np.ones(50, dtype=bool))
    assert sorted(inter.seen_items(1).tolist()) == [46, 47, 48, 49, 50]
    assert inter.seen.nbytes == 3 * 5 * 4


def test_top_k_orders_and_skips_minus_inf() -> None:
    scores = np.array([0.1, -np.inf, 3.0, 2.0, -np.inf])
    assert top_k(scores, 10).tolist() == [2, 3, 0]
