"""State proportional to the rows in use: high-water marks, compact export, fast restore.

The central property: checkpoint at any point (recycled rows included) → restore → keep
learning is bitwise identical to never having stopped, for every model, and the state
only carries the rows below the high-water marks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.examples import ExampleBatch
from service.learners import (
    BPR,
    FM,
    FTRL,
    BiasedMF,
    LearnerConfig,
    ModelState,
    WindowRetrain,
    learner_from_state,
    make_learner,
)
from service.learners.array_learner import STATE_FORMAT_VERSION, ArrayLearner
from service.learners.base import Learner
from service.learners.interactions import Interactions
from service.learners.rng import STREAM_USERS, fill_init

N_USERS, N_ITEMS, BITS = 40, 30, 6

MODELS = [
    LearnerConfig(model="biased_mf", shadows=0, n_factors=3),
    LearnerConfig(model="biased_mf", shadows=0, n_factors=3, optimizer="adagrad", ema_decay=0.7),
    LearnerConfig(model="biased_mf", shadows=0, n_factors=3, strategy="micro_batch",
                  micro_batch_size=5),
    LearnerConfig(model="fm", n_factors=3),
    LearnerConfig(model="fm", n_factors=3, task="binary", optimizer="sgd", ema_decay=0.5),
    LearnerConfig(model="fm", n_factors=3, strategy="micro_batch", micro_batch_size=4),
    LearnerConfig(model="ftrl"),
    LearnerConfig(model="ftrl", strategy="micro_batch", ema_decay=0.5),
    LearnerConfig(model="bpr", n_factors=3),
    LearnerConfig(model="bpr", n_factors=3, optimizer="adagrad", ema_decay=0.6),
    LearnerConfig(model="bpr", n_factors=3, strategy="micro_batch", micro_batch_size=6),
    LearnerConfig(model="sklearn"),
]
IDS = [f"{c.model}-{c.strategy}-{c.optimizer}-ema{c.ema_decay}" for c in MODELS]


def build(cfg: LearnerConfig, n_users: int = N_USERS, n_items: int = N_ITEMS) -> Learner:
    return make_learner(cfg, n_users=n_users, n_items=n_items, feature_bits=BITS)


def make_batch(rng: np.random.Generator, n: int, max_user: int, max_item: int) -> ExampleBatch:
    """``n`` events on user rows ``[0, max_user]`` and item rows ``[0, max_item]``."""
    b = ExampleBatch.from_arrays(rng.integers(0, max_user + 1, n),
                                 rng.integers(0, max_item + 1, n),
                                 rng.integers(0, 2, n).astype(np.float32) * 4 + 1,
                                 ts_ms=np.arange(n) * 2)
    b.feat_indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    b.feat_idx = rng.integers(0, 1 << BITS, 2 * n)
    b.feat_val = np.ones(2 * n, dtype=np.float32)
    return b


def live_arrays(learner: Learner) -> dict[str, npt.NDArray[Any]]:
    """Every full-capacity array a learner holds (not its exported state)."""
    if isinstance(learner, WindowRetrain):
        learner = learner.learner
    assert isinstance(learner, ArrayLearner)
    out = dict(learner.arrays)
    out |= {f"interactions.{k}": v for k, v in learner.interactions.arrays().items()}
    if learner.average is not None:
        out |= {f"ema.{k}": v for k, v in learner.average.arrays.items()}
    return out


def assert_bitwise_equal(a: Learner, b: Learner, counters: bool = True) -> None:
    la, lb = live_arrays(a), live_arrays(b)
    assert la.keys() == lb.keys()
    for name in la:
        assert la[name].dtype == lb[name].dtype, name
        # Bit patterns, so that -0.0 vs 0.0 or NaN payloads would count as differences.
        assert la[name].tobytes() == lb[name].tobytes(), name
    if counters:
        assert a.get_state().counters == b.get_state().counters


def apply(learner: Learner, step: tuple[str, Any]) -> None:
    kind, payload = step
    if kind == "learn":
        learner.learn(payload)
    else:
        learner.reset_rows(*payload)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[tuple[str, Any]], int]:
    """Steps (learn batches on a growing range of rows, recycled-row resets) and where to
    checkpoint."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    steps: list[tuple[str, Any]] = []
    max_user, max_item = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    for _ in range(draw(st.integers(2, 6))):
        if draw(st.booleans()):
            max_user = min(N_USERS - 1, max_user + draw(st.integers(0, 12)))
            max_item = min(N_ITEMS - 1, max_item + draw(st.integers(0, 9)))
            steps.append(("learn", make_batch(rng, draw(st.integers(1, 60)), max_user,
                                              max_item)))
        else:
            # Recycled rows may lie beyond the marks (a new id in a never-used row).
            users = np.array(draw(st.lists(st.integers(0, N_USERS - 1), max_size=3)))
            items = np.array(draw(st.lists(st.integers(0, N_ITEMS - 1), max_size=3)))
            steps.append(("reset", (users.astype(np.int64), items.astype(np.int64))))
    cut = draw(st.integers(0, len(steps)))
    return steps, cut


@pytest.mark.parametrize("cfg", MODELS, ids=IDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=streams())
def test_checkpoint_restore_continue_is_bitwise_identical(
    cfg: LearnerConfig, case: tuple[list[tuple[str, Any]], int]
) -> None:
    steps, cut = case
    uninterrupted, interrupted = build(cfg), build(cfg)
    for step in steps[:cut]:
        apply(uninterrupted, step)
        apply(interrupted, step)
    state = interrupted.get_state()
    assert state.format_version == STATE_FORMAT_VERSION
    restored = learner_from_state(state)
    probe = make_batch(np.random.default_rng(5), 50, N_USERS - 1, N_ITEMS - 1)
    assert np.array_equal(uninterrupted.predict(probe), restored.predict(probe))
    assert_bitwise_equal(uninterrupted, restored)
    for step in steps[cut:]:
        apply(uninterrupted, step)
        apply(restored, step)
    assert_bitwise_equal(uninterrupted, restored)
    # And the published copy restores to the same predictions as the live one publishes.
    published = learner_from_state(uninterrupted.published_state())
    again = learner_from_state(restored.published_state())
    assert np.array_equal(published.predict(probe), again.predict(probe))


def _inner(learner: Learner) -> ArrayLearner:
    if isinstance(learner, WindowRetrain):
        learner = learner.learner
    assert isinstance(learner, ArrayLearner)
    return learner


@pytest.mark.parametrize("cfg", MODELS, ids=IDS)
def test_rows_beyond_the_marks_are_the_fresh_initialisation(cfg: LearnerConfig) -> None:
    model = _inner(build(cfg, n_users=200, n_items=150))
    rng = np.random.default_rng(1)
    model.learn(make_batch(rng, 300, 17, 9))
    model.reset_rows(np.array([25]), np.array([4]))
    assert (model.used_users, model.used_items) == (26, 10)
    fresh = _inner(build(cfg, n_users=200, n_items=150))
    for name, spans in model.row_spans().items():
        full, clean = model.arrays[name], fresh.arrays[name]
        for span in spans:
            mark = model.used_users if span.axis == "users" else model.used_items
            size = model.n_users if span.axis == "users" else model.n_items
            rows = slice(span.offset + mark, span.offset + size)
            assert full[rows].tobytes() == clean[rows].tobytes(), name
            if model.average is not None and name in model.average.arrays:
                assert model.average.arrays[name][rows].tobytes() == clean[rows].tobytes()


@pytest.mark.parametrize("cfg", MODELS, ids=IDS)
def test_state_size_is_proportional_to_the_rows_in_use(cfg: LearnerConfig) -> None:
    small, big = (_inner(build(cfg, n_users=n, n_items=n)) for n in (300, 3000))
    rng = np.random.default_rng(2)
    batch = make_batch(rng, 400, 19, 11)
    small.learn(batch)
    big.learn(batch)
    s_small, s_big = small.get_state(), big.get_state()
    assert s_small.counters["used_users"] == s_big.counters["used_users"] == 20
    assert s_small.counters["used_items"] == s_big.counters["used_items"] == (11 + 1)
    # Ten times the capacity, the same state: nothing in it scales with capacity.
    for name, array in s_small.arrays.items():
        assert array.shape == s_big.arrays[name].shape, name
    for name, spans in small.row_spans().items():
        expected = sum(20 if s.axis == "users" else 12 for s in spans)
        expected += len(small.arrays[name]) - sum(
            small.n_users if s.axis == "users" else small.n_items for s in spans)
        assert len(s_small.arrays[name]) == expected, name
    assert len(s_small.arrays["interactions.seen"]) == 20
    assert len(s_small.arrays["interactions.item_count"]) == 12


def test_state_from_rows_up_to_k_restores_into_full_capacity() -> None:
    model = BiasedMF(5000, 800, n_factors=4, optimizer=None)
    rng = np.random.default_rng(3)
    model.learn(make_batch(rng, 2000, 120, 60))
    state = model.get_state()
    assert state.arrays["user_factors"].shape == (121, 4)
    assert state.arrays["item_bias"].shape == (61,)
    restored = learner_from_state(state)
    assert isinstance(restored, BiasedMF)
    assert restored.arrays["user_factors"].shape == (5000, 4)
    fresh = BiasedMF(5000, 800, n_factors=4)
    assert restored.arrays["user_factors"][121:].tobytes() == \
        fresh.arrays["user_factors"][121:].tobytes()
    assert np.array_equal(restored.arrays["user_factors"][:121],
                          model.arrays["user_factors"][:121])
    # A user row never seen before the checkpoint learns identically in both.
    new = ExampleBatch.from_arrays([4000, 4000], [700, 3], [5.0, 1.0])
    assert np.array_equal(model.learn(new)[0], restored.learn(new)[0])
    assert_bitwise_equal(model, restored)


def test_user_and_item_spans_are_declared_not_inferred_from_shape() -> None:
    # n_users == n_items: only the declaration can tell the tables apart.
    for cls in (BiasedMF, BPR, FM):
        model = cls(50, 50, feature_bits=4, n_factors=2)
        model.learn(ExampleBatch.from_arrays([3, 5], [40, 2], [1.0, 1.0]))
        state = model.get_state()
        assert (state.counters["used_users"], state.counters["used_items"]) == (6, 41)
        if cls is FM:
            assert len(state.arrays["factors"]) == 6 + 41 + 16
        else:
            assert len(state.arrays["user_factors"]) == 6
            assert len(state.arrays["item_factors"]) == 41


@pytest.mark.parametrize("cfg", MODELS, ids=IDS)
def test_every_row_indexed_array_is_declared(cfg: LearnerConfig) -> None:
    """A new array of user or item rows that a model forgets to declare fails here."""
    n_users, n_items = 37, 23  # neither equals any other dimension of the models
    model = _inner(build(cfg, n_users=n_users, n_items=n_items))
    spans = model.row_spans()
    for name, array in model.arrays.items():
        declared = {(s.axis, s.offset) for s in spans.get(name, ())}
        if len(array) == n_users:
            assert declared == {("users", 0)}, name
        elif len(array) == n_items:
            assert declared == {("items", 0)}, name
        elif isinstance(model, FM) and len(array) == model.n_rows:
            assert declared == {("users", 0), ("items", n_users)}, name
        else:
            assert not declared, name
    for name, array in model.interactions.arrays().items():
        axis = Interactions.ROW_SPANS[name][0].axis
        assert len(array) == (n_users if axis == "users" else n_items), name


def _as_version_1(learner: ArrayLearner) -> ModelState:
    """What the version-1 get_state wrote: every array whole, no marks."""
    arrays = {k: v.copy() for k, v in learner.arrays.items()}
    arrays |= {f"interactions.{k}": v.copy() for k, v in learner.interactions.arrays().items()}
    if learner.average is not None:
        arrays |= {f"ema.{k}": v.copy() for k, v in learner.average.arrays.items()}
    return ModelState(model_type=learner.model_type, config=learner.get_config(),
                      arrays=arrays, format_version=1,
                      counters={"n_seen": learner.n_seen, "n_updates": learner.n_updates,
                                "n_skipped_nonfinite": learner.n_skipped_nonfinite})


@pytest.mark.parametrize("cfg", MODELS, ids=IDS)
def test_version_1_states_still_load(cfg: LearnerConfig) -> None:
    model = _inner(build(cfg))
    rng = np.random.default_rng(4)
    model.learn(make_batch(rng, 200, 20, 15))
    restored = learner_from_state(_as_version_1(model))
    assert_bitwise_equal(model, restored, counters=False)
    batch = make_batch(rng, 100, N_USERS - 1, N_ITEMS - 1)
    assert np.array_equal(model.learn(batch)[0], restored.learn(batch)[0])
    assert_bitwise_equal(model, restored, counters=False)
    # Every row came from the state, so it keeps saving every row.
    assert _inner(restored).used_users == N_USERS


def test_window_retrain_state_keeps_the_format_version() -> None:
    cfg = LearnerConfig(model="biased_mf", shadows=0, n_factors=3, strategy="window_retrain",
                        window_size=200, retrain_every=100)
    model = build(cfg, n_users=400, n_items=300)
    model.learn(make_batch(np.random.default_rng(6), 250, 30, 20))
    state = model.get_state()
    assert state.format_version == STATE_FORMAT_VERSION
    assert len(state.arrays["user_factors"]) == 31
    restored = learner_from_state(state)
    probe = make_batch(np.random.default_rng(7), 80, 399, 299)
    assert np.array_equal(model.predict(probe), restored.predict(probe))


def test_bpr_samples_negatives_among_the_items_in_use() -> None:
    model = BPR(100, 1000, n_factors=3)
    fresh = BPR(100, 1000, n_factors=3)
    rng = np.random.default_rng(8)
    model.learn(ExampleBatch.from_arrays(rng.integers(1, 50, 3000), rng.integers(1, 12, 3000),
                                         np.ones(3000)))
    assert model.used_items == 12
    assert model.arrays["item_factors"][12:].tobytes() == \
        fresh.arrays["item_factors"][12:].tobytes()
    assert model.arrays["item_bias"][12:].tobytes() == fresh.arrays["item_bias"][12:].tobytes()
    # Negatives did reach items the batch never had as positives (all of 1..11 are used).
    assert np.count_nonzero(model.arrays["item_bias"][1:12]) == 11


def test_from_state_rejects_bad_marks_and_shapes() -> None:
    model = BiasedMF(50, 40, n_factors=2)
    model.learn(ExampleBatch.from_arrays([1, 7], [2, 9], [3.0, 4.0]))
    state = model.get_state()
    bad = ModelState(state.model_type, state.config, dict(state.arrays), state.format_version,
                     {**state.counters, "used_users": 51})
    with pytest.raises(ValueError, match="outside"):
        learner_from_state(bad)
    bad.counters = {k: v for k, v in state.counters.items() if k != "used_items"}
    with pytest.raises(ValueError, match="used_items"):
        learner_from_state(bad)
    bad.counters = {**state.counters, "used_users": 3}  # arrays carry 8 user rows
    with pytest.raises(ValueError, match="high-water marks imply"):
        learner_from_state(bad)
    bad.counters, bad.format_version = dict(state.counters), 99
    with pytest.raises(ValueError, match="format version 99"):
        learner_from_state(bad)


def test_exported_arrays_are_contiguous_copies() -> None:
    model = FM(60, 50, feature_bits=BITS, n_factors=2, ema_decay=0.5)
    model.learn(make_batch(np.random.default_rng(9), 100, 10, 10))
    state = model.get_state()
    before = {k: v.copy() for k, v in state.arrays.items()}
    model.learn(make_batch(np.random.default_rng(10), 100, 10, 10))
    for name, array in state.arrays.items():
        assert array.flags.c_contiguous and array.flags.owndata, name
        assert array.tobytes() == before[name].tobytes(), name


def test_ftrl_keeps_its_hashed_arrays_whole() -> None:
    model = FTRL(1000, 500, feature_bits=8)
    model.learn(make_batch(np.random.default_rng(11), 100, 10, 10))
    state = model.get_state()
    assert state.arrays["z"].shape == (256,)
    assert len(state.arrays["interactions.user_count"]) == 11


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63), first=st.integers(0, 10_000), rows=st.integers(0, 40),
       k=st.integers(1, 9))
def test_initial_rows_are_independent_of_the_range_asked(seed: int, first: int, rows: int,
                                                         k: int) -> None:
    whole = np.empty((first + rows, k), dtype=np.float32)
    fill_init(whole, seed, STREAM_USERS, 0, 0.1)
    part = np.empty((rows, k), dtype=np.float32)
    fill_init(part, seed, STREAM_USERS, first, 0.1)
    assert part.tobytes() == whole[first:].tobytes()


def test_initial_values_have_the_requested_spread() -> None:
    values = np.empty((20_000, 8), dtype=np.float32)
    fill_init(values, 42, STREAM_USERS, 0, 0.1)
    assert abs(float(values.mean())) < 1e-3
    assert abs(float(values.std()) - 0.1) < 1e-3
    assert float(np.abs(values).max()) <= 0.1 * 3.47
    other = np.empty_like(values)
    fill_init(other, 43, STREAM_USERS, 0, 0.1)
    assert abs(float(np.corrcoef(values.ravel(), other.ravel())[0, 1])) < 0.01
