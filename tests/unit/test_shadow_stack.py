"""The shadow stack: members learn every example, the stacker combines them progressively."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.examples import ExampleBatch
from service.learners.biased_mf import BiasedMF
from service.learners.config import LearnerConfig
from service.learners.fm import FM
from service.learners.optim import Optimizer
from service.learners.registry import learner_from_state, make_learner
from service.learners.stacking import ShadowStack


def _members(n: int = 30) -> list[BiasedMF]:
    return [
        BiasedMF(n, n, n_factors=4, seed=1),
        BiasedMF(n, n, n_factors=3, init_std=0.1, seed=2,
                 optimizer=Optimizer(kind="sgd", learning_rate=0.05)),
        BiasedMF(n, n, n_factors=1, init_std=0.0, seed=3,
                 optimizer=Optimizer(kind="adagrad", learning_rate=0.05)),
    ]


def _ratings(n: int, seed: int = 0, rows: int = 30) -> ExampleBatch:
    """Ratings with a known structure: user taste times item appeal, plus noise."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, rows, n)
    items = rng.integers(1, rows, n)
    taste = np.random.default_rng(99).normal(0, 1, rows)
    appeal = np.random.default_rng(98).normal(0, 1, rows)
    y = np.clip(3 + taste[users] * appeal[items] + rng.normal(0, 0.3, n), 1, 5)
    return ExampleBatch.from_arrays(users, items, y, ts_ms=np.arange(n) * 1000)


def _equal_states(a: ShadowStack, b: ShadowStack) -> None:
    sa, sb = a.get_state(), b.get_state()
    assert sa.counters == sb.counters
    assert sa.config == sb.config
    assert sorted(sa.arrays) == sorted(sb.arrays)
    for name in sa.arrays:
        np.testing.assert_array_equal(sa.arrays[name], sb.arrays[name], err_msg=name)


def test_the_stack_starts_as_the_members_mean() -> None:
    batch = _ratings(1)
    alone = [m.learn(batch)[0][0] for m in _members()]
    stacked, _ = ShadowStack(_members()).learn(batch)
    assert stacked[0] == pytest.approx(np.mean(alone), abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(at=st.integers(0, 199), label=st.floats(1, 5))
def test_an_example_is_scored_before_its_label_is_learned(at: int, label: float) -> None:
    batch = _ratings(200)
    changed = replace(batch, y=batch.y.copy())
    changed.y[at] = label
    a, _ = ShadowStack(_members()).learn(batch)
    b, _ = ShadowStack(_members()).learn(changed)
    np.testing.assert_array_equal(a[: at + 1], b[: at + 1])


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 399), max_size=6))
def test_the_same_examples_give_the_same_stack_however_they_are_batched(
        cuts: list[int]) -> None:
    batch = _ratings(400)
    whole = ShadowStack(_members())
    expected, _ = whole.learn(batch)
    parts = ShadowStack(_members())
    bounds = [0, *sorted(set(cuts)), 400]
    got = np.concatenate([parts.learn(batch.slice(lo, hi))[0]
                          for lo, hi in itertools.pairwise(bounds)])
    np.testing.assert_array_equal(got, expected)
    _equal_states(parts, whole)


def test_a_restored_stack_continues_exactly() -> None:
    batch = _ratings(600)
    straight = ShadowStack(_members())
    expected, _ = straight.learn(batch)
    first = ShadowStack(_members())
    head, _ = first.learn(batch.slice(0, 250))
    restored = learner_from_state(first.get_state())
    assert isinstance(restored, ShadowStack)
    tail, _ = restored.learn(batch.slice(250, 600))
    np.testing.assert_array_equal(np.concatenate([head, tail]), expected)
    _equal_states(restored, straight)


def test_the_stack_beats_its_members_mean_and_leans_on_the_better_member() -> None:
    batch = _ratings(20_000, rows=60)
    good = BiasedMF(60, 60, n_factors=4, seed=1)
    # A member that learns nothing useful: biases only, with a rate that makes it noisy.
    bad = BiasedMF(60, 60, n_factors=1, init_std=0.0, seed=2,
                   optimizer=Optimizer(kind="sgd", learning_rate=0.9))
    stack = ShadowStack([good, bad])
    scores, _ = stack.learn(batch)
    second = slice(10_000, None)

    def rmse(p: np.ndarray) -> float:
        return float(np.sqrt(np.mean((p[second] - batch.y[second]) ** 2)))

    replay = [BiasedMF(60, 60, n_factors=4, seed=1),
              BiasedMF(60, 60, n_factors=1, init_std=0.0, seed=2,
                       optimizer=Optimizer(kind="sgd", learning_rate=0.9))]
    alone = [m.learn(batch)[0].astype(np.float64) for m in replay]
    assert rmse(scores) < rmse(np.mean(alone, axis=0))
    assert rmse(scores) < 1.02 * min(rmse(p) for p in alone)
    # Deviations from the mean: trusting the good member is a positive weight on it.
    assert (stack.weights[0, 0] - stack.weights[0, 1]) > 0


def test_a_member_that_scores_nan_hands_over_to_the_main_model() -> None:
    stack = ShadowStack(_members())
    stack.learn(_ratings(50))
    before = stack.weights.copy()
    stack.members[2].arrays["item_bias"][:] = np.nan
    batch = _ratings(20, seed=5)
    lead, _ = BiasedMF.from_state(stack.members[0].get_state()).learn(batch)
    scores, _ = stack.learn(batch)
    np.testing.assert_array_equal(scores, lead)
    np.testing.assert_array_equal(stack.weights, before)
    assert not stack.is_finite()


def test_recycled_rows_forget_their_counts() -> None:
    stack = ShadowStack(_members())
    stack.learn(_ratings(500))
    assert stack.user_seen[5] > 0 and stack.item_seen[7] > 0
    stack.reset_rows(np.array([5]), np.array([7]))
    assert stack.user_seen[5] == 0 and stack.item_seen[7] == 0
    fresh = _members()[0]
    np.testing.assert_array_equal(stack.members[0].arrays["user_factors"][5],
                                  fresh.arrays["user_factors"][5])


def test_recommendations_rank_items_by_the_stacks_own_scores() -> None:
    stack = ShadowStack(_members())
    stack.learn(_ratings(3_000))
    rows, scores = stack.recommend(4, k=5, exclude_seen=False)
    used = stack.used_items
    items = np.arange(1, used)
    all_scores = stack.predict(ExampleBatch.from_arrays(np.full(len(items), 4), items,
                                                        np.zeros(len(items))))
    np.testing.assert_array_equal(rows, items[np.argsort(-all_scores, kind="stable")][:5])
    np.testing.assert_allclose(scores, np.sort(all_scores)[::-1][:5], rtol=1e-6)


def test_a_binary_stack_combines_probabilities_in_logit_space() -> None:
    rng = np.random.default_rng(3)
    users, items = rng.integers(1, 30, 2_000), rng.integers(1, 30, 2_000)
    y = ((users + items) % 3 == 0).astype(float)
    batch = ExampleBatch.from_arrays(users, items, y)
    stack = ShadowStack([FM(30, 30, 8, task="binary", n_factors=4, seed=1),
                         FM(30, 30, 8, task="binary", n_factors=2, seed=2,
                            optimizer=Optimizer(kind="sgd", learning_rate=0.05))])
    scores, _ = stack.learn(batch)
    assert ((scores > 0) & (scores < 1)).all()
    predicted = stack.predict(batch)
    assert ((predicted > 0) & (predicted < 1)).all()


def test_adapting_the_learning_rate_moves_every_member_and_comes_back_exactly() -> None:
    stack = ShadowStack(_members())
    base = stack.optimizer
    rates = [m.optimizer.learning_rate for m in stack.members]
    stack.optimizer = replace(base, learning_rate=base.learning_rate * 3)
    assert [m.optimizer.learning_rate for m in stack.members] == pytest.approx(
        [3 * r for r in rates])
    stack.optimizer = base
    assert [m.optimizer.learning_rate for m in stack.members] == rates


def test_members_must_agree() -> None:
    with pytest.raises(ValueError, match="at least one shadow"):
        ShadowStack(_members()[:1])
    with pytest.raises(ValueError, match="task"):
        ShadowStack([BiasedMF(30, 30), FM(30, 30, 8, task="binary")])
    with pytest.raises(ValueError, match="sizes"):
        ShadowStack([BiasedMF(30, 30), BiasedMF(31, 30)])


def test_settings_build_the_measured_shadows_or_refuse_clearly() -> None:
    default = make_learner(LearnerConfig(), n_users=20, n_items=20, feature_bits=8)
    assert isinstance(default, ShadowStack) and len(default.members) == 4
    # The main model is exactly the one the settings describe.
    assert default.members[0].get_config() == make_learner(
        LearnerConfig(shadows=0), 20, 20, 8).get_config()  # type: ignore[attr-defined]
    assert len(make_learner(LearnerConfig(shadows=1), 20, 20, 8).members) == 2  # type: ignore[attr-defined]
    assert isinstance(make_learner(LearnerConfig(shadows=0), 20, 20, 8), BiasedMF)
    assert not isinstance(make_learner(LearnerConfig(model="ftrl"), 20, 20, 8), ShadowStack)
    with pytest.raises(ValueError, match="FRESHREC_LEARNER__SHADOWS"):
        make_learner(LearnerConfig(model="ftrl", shadows=2), 20, 20, 8)
    with pytest.raises(ValueError, match="window_retrain"):
        make_learner(LearnerConfig(strategy="window_retrain", shadows=1), 20, 20, 8)


def test_each_members_own_loss_is_followed() -> None:
    batch = _ratings(3_000)
    stack = ShadowStack(_members())
    stack.learn(batch)
    replay = _members()
    for k, m in enumerate(replay):
        p = m.learn(batch)[0].astype(np.float64)
        decay = 1.0 - 1.0 / 10_000
        weights = decay ** np.arange(len(p))[::-1]
        expected = float(np.sum(weights * (p - batch.y) ** 2) / np.sum(weights))
        assert stack.member_losses()[k] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(ShadowStack(_members()).member_losses()).all()
