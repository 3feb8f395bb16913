"""The non-finite guard: no input ever makes a parameter NaN or infinite."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.examples import ExampleBatch
from service.learners import LearnerConfig, make_learner

CONFIGS = [
    LearnerConfig(model="biased_mf", shadows=0, n_factors=4),
    LearnerConfig(model="biased_mf", shadows=0, n_factors=4, strategy="micro_batch",
                  micro_batch_size=4),
    LearnerConfig(model="biased_mf", shadows=0, n_factors=4, optimizer="adagrad"),
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


def test_adagrad_slot_step_never_takes_the_root_of_a_negative_sum() -> None:
    # The slot's sums are inconsistent on purpose: the expanded sum of squares
    # G2 + 2 lp G + c lp^2 is -19 (rounding made it -1.7e-16 on a real stream); its root
    # was a NaN that the row's finite check did not always stop. Clamped at 0, the row
    # takes a finite step and its accumulator stays non-negative.
    from service.learners.row_slots import RowSlots, apply_slots

    slots = RowSlots(4)
    slot, rows, count = slots.arrays(1)
    slot[2], rows[0], count[0] = 0, 2, 1
    b = np.zeros(4, np.float32)
    F = np.ones((4, 3), np.float32)
    ab = np.zeros(4, np.float32)
    aF = np.zeros((4, 3), np.float32)
    gb, gb2 = np.array([-10.0], np.float32), np.zeros(1, np.float32)
    G, G2 = np.full((1, 3), -10.0, np.float32), np.zeros((1, 3), np.float32)
    rejected = apply_slots(slot, rows, count, 1, gb, gb2, G, G2, b, F, ab, aF, 0.1, True,
                           True, 0.0, 1.0, 1.0, np.zeros(3, np.float32))
    assert rejected == 0
    assert np.isfinite(F).all() and np.isfinite(b).all()
    assert (aF >= 0).all() and (ab >= 0).all()
    assert (slot == -1).all()


def test_bounded_adagrad_slot_step_still_rejects_a_non_finite_gradient() -> None:
    # FM binary bounds each step (max_step); an infinite gradient sum must still be
    # rejected and leave the row and its accumulators as they were, not be bounded into
    # a finite step with an infinite accumulator.
    from service.learners.row_slots import RowSlots, apply_slots

    slots = RowSlots(4)
    slot, rows, count = slots.arrays(1)
    slot[1], rows[0], count[0] = 0, 1, 2
    b = np.zeros(4, np.float32)
    F = np.ones((4, 3), np.float32)
    ab = np.zeros(4, np.float32)
    aF = np.zeros((4, 3), np.float32)
    gb, gb2 = np.array([np.inf], np.float32), np.array([np.inf], np.float32)
    G, G2 = np.full((1, 3), np.inf, np.float32), np.full((1, 3), np.inf, np.float32)
    rejected = apply_slots(slot, rows, count, 1, gb, gb2, G, G2, b, F, ab, aF, 0.1, True,
                           True, 0.0, 0.0, 0.0, np.zeros(3, np.float32), 0.1)
    assert rejected == 1
    assert (F == 1).all() and (b == 0).all() and (aF == 0).all() and (ab == 0).all()


@pytest.mark.parametrize("strategy", ["per_event", "micro_batch"])
@pytest.mark.parametrize("task", ["regression", "binary"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_fm_skips_a_score_of_inf_minus_inf(strategy: str, task: str, optimizer: str) -> None:
    # Finite factors whose squares overflow float32 make the pairwise term inf - inf.
    # Under the kernels' fast-math flags LLVM deleted math.isfinite(raw) from the
    # micro-batch kernel: the NaN score was learned from and the global bias became NaN.
    cfg = LearnerConfig(model="fm", task=task, n_factors=3, strategy=strategy,
                        micro_batch_size=4, optimizer=optimizer)  # type: ignore[arg-type]
    model = make_learner(cfg, 10, 12, 4)
    n = 8
    batch = ExampleBatch.from_arrays(np.full(n, 3), np.full(n, 4), np.ones(n))
    batch.feat_indptr = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
    batch.feat_idx = np.tile(np.arange(3), n)
    batch.feat_val = np.ones(3 * n, dtype=np.float32)
    model.arrays["factors"][:] = 3e19  # type: ignore[attr-defined]
    _, stats = model.learn(batch)
    assert stats.n_skipped_nonfinite == n and stats.n_updates == 0
    assert np.isfinite(model.arrays["bias"]).all()  # type: ignore[attr-defined]


def test_finite_survives_fast_math() -> None:
    # The same shape as FM's score, reduced: math.isfinite is folded to True under
    # reassoc + nsz; optim.finite tests the bits and is not.
    import math

    from numba import njit

    from service.learners.optim import FASTMATH, finite

    @njit(fastmath=FASTMATH)
    def count_finite(V: np.ndarray, use_bits: bool) -> int:
        n_ok = 0
        for _ in range(4):
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            sq = 0.0
            for j in range(V.shape[0]):
                s0 += V[j, 0]
                s1 += V[j, 1]
                sq += V[j, 0] * V[j, 0] + V[j, 1] * V[j, 1]
            raw = 0.5 * (s0 * s0 + s1 * s1 - sq)
            if (finite(raw) if use_bits else math.isfinite(raw)):
                n_ok += 1
        return n_ok

    big = np.full((3, 2), 3e19, dtype=np.float32)
    assert count_finite(big, True) == 0
    assert count_finite(np.ones((3, 2), dtype=np.float32), True) == 4
