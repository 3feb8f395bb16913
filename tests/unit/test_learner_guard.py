"""The non-finite guard: no input ever makes a parameter NaN or infinite."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.examples import ExampleBatch
from service.learners import LearnerConfig, make_learner

CONFIGS = [
    LearnerConfig(model="biased_mf", n_factors=4),
    LearnerConfig(model="biased_mf", n_factors=4, strategy="micro_batch", micro_batch_size=4),
    LearnerConfig(model="biased_mf", n_factors=4, optimizer="adagrad"),
    LearnerConfig(model="fm", n_factors=4),
    LearnerConfig(model="fm", n_factors=4, strategy="micro_batch", micro_batch_size=4),
    LearnerConfig(model="fm", n_factors=4, task="binary"),
    LearnerConfig(model="ftrl"),
    LearnerConfig(model="ftrl", strategy="micro_batch", micro_batch_size=4),
    LearnerConfig(model="bpr", n_factors=4),
    LearnerConfig(model="bpr", n_factors=4, strategy="micro_batch", micro_batch_size=4),
    LearnerConfig(model="bpr", n_factors=4, strategy="micro_batch", optimizer="adagrad"),
    LearnerConfig(model="sklearn"),
]

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 3.0e38, -3.0e38, 1.0, 0.0]),
)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.model}-{c.strategy}-{c.task}")
def test_nan_and_inf_targets_are_skipped_and_counted(cfg: LearnerConfig) -> None:
    model = make_learner(cfg, 10, 10, 6)
    y = np.array([4.0, np.nan, 1.0, np.inf, -np.inf, 1.0], dtype=np.float32)
    batch = ExampleBatch.from_arrays([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], y)
    _, stats = model.learn(batch)
    assert stats.n_skipped_nonfinite == 3
    assert model.is_finite()


@settings(max_examples=25, deadline=None)
@given(ys=st.lists(values, min_size=1, max_size=30),
       ws=st.lists(st.sampled_from([1.0, 0.0, 1e30, np.inf, np.nan]), min_size=30,
                   max_size=30),
       idx=st.sampled_from(range(len(CONFIGS))))
def test_no_input_makes_parameters_non_finite(ys: list[float], ws: list[float],
                                              idx: int) -> None:
    model = make_learner(CONFIGS[idx], 10, 10, 6)
    n = len(ys)
    batch = ExampleBatch.from_arrays(np.arange(n) % 9 + 1, np.arange(n) % 7 + 1,
                                     np.array(ys, dtype=np.float32),
                                     weight=np.array(ws[:n], dtype=np.float32))
    for _ in range(3):
        _, stats = model.learn(batch)
        assert stats.n_updates + stats.n_skipped_nonfinite <= n
    assert model.is_finite()
    assert np.isfinite(model.predict(batch)).all()
    assert np.isfinite(model.recommend(1, k=3)[1]).all()
