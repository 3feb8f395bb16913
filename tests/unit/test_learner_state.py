"""Determinism, state round trips and the published (averaged) copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import service
from service.examples import ExampleBatch
from service.learners import LearnerConfig, WindowRetrain, learner_from_state, make_learner
from service.learners.base import Learner

MODELS = [
    LearnerConfig(model="biased_mf", n_factors=4),
    LearnerConfig(model="biased_mf", n_factors=4, optimizer="adagrad", ema_decay=0.5),
    LearnerConfig(model="biased_mf", n_factors=4, strategy="micro_batch", micro_batch_size=7),
    LearnerConfig(model="fm", n_factors=4),
    LearnerConfig(model="fm", n_factors=4, task="binary", strategy="micro_batch"),
    LearnerConfig(model="ftrl"),
    LearnerConfig(model="ftrl", strategy="micro_batch"),
    LearnerConfig(model="bpr", n_factors=4),
    LearnerConfig(model="bpr", n_factors=4, strategy="micro_batch", micro_batch_size=9),
    LearnerConfig(model="sklearn"),
]


def batch(n: int, seed: int) -> ExampleBatch:
    rng = np.random.default_rng(seed)
    b = ExampleBatch.from_arrays(rng.integers(0, 30, n), rng.integers(0, 20, n),
                                 rng.integers(0, 2, n).astype(np.float32) * 4 + 1,
                                 ts_ms=np.arange(n) * 3)
    b.feat_indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    b.feat_idx = rng.integers(0, 256, 2 * n)
    b.feat_val = np.ones(2 * n, dtype=np.float32)
    return b


def build(cfg: LearnerConfig) -> Learner:
    return make_learner(cfg, n_users=30, n_items=20, feature_bits=8)


def assert_same_state(a: Learner, b: Learner) -> None:
    sa, sb = a.get_state(), b.get_state()
    assert sa.model_type == sb.model_type
    assert sa.config == sb.config
    assert sa.arrays.keys() == sb.arrays.keys()
    for name in sa.arrays:
        assert np.array_equal(sa.arrays[name], sb.arrays[name], equal_nan=True), name


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: f"{c.model}-{c.strategy}")
def test_same_seed_and_order_give_bitwise_equal_state(cfg: LearnerConfig) -> None:
    a, b = build(cfg), build(cfg)
    for seed in range(3):
        pa, _ = a.learn(batch(500, seed))
        pb, _ = b.learn(batch(500, seed))
        assert np.array_equal(pa, pb)
    assert_same_state(a, b)


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: f"{c.model}-{c.strategy}")
def test_state_round_trip_predicts_and_learns_identically(cfg: LearnerConfig) -> None:
    a = build(cfg)
    a.learn(batch(800, 1))
    state = a.get_state()
    json.dumps(state.config)  # the config is JSON-able
    for array in state.arrays.values():
        assert array.flags.c_contiguous
    b = learner_from_state(state)
    probe = batch(300, 9)
    assert np.array_equal(a.predict(probe), b.predict(probe))
    # The saved arrays are copies: learning more does not change the state taken before.
    before = {k: v.copy() for k, v in state.arrays.items()}
    pa, _ = a.learn(probe)
    pb, _ = b.learn(probe)
    assert np.array_equal(pa, pb)
    assert_same_state(a, b)
    for k, v in state.arrays.items():
        assert np.array_equal(v, before[k], equal_nan=True)
    assert a.recommend(3, k=5)[0].tolist() == b.recommend(3, k=5)[0].tolist()


def test_window_retrain_round_trip_and_clone() -> None:
    cfg = LearnerConfig(model="biased_mf", n_factors=4, strategy="window_retrain",
                        window_size=300, retrain_every=200)
    a = build(cfg)
    assert isinstance(a, WindowRetrain)
    a.learn(batch(700, 1))
    assert a.n_retrains == 3
    b = learner_from_state(a.get_state())
    probe = batch(100, 5)
    assert np.array_equal(a.predict(probe), b.predict(probe))


def test_published_state_is_the_moving_average() -> None:
    model = build(LearnerConfig(model="biased_mf", shadows=0, n_factors=4, ema_decay=0.9))
    model.learn(batch(500, 1))
    model.learn(batch(500, 2))
    live = model.get_state()
    published = model.published_state()
    assert not any(k.startswith("ema.") for k in published.arrays)
    assert np.array_equal(published.arrays["user_factors"], live.arrays["ema.user_factors"])
    assert not np.array_equal(published.arrays["user_factors"], live.arrays["user_factors"])
    # A published state loads as a normal learner.
    assert learner_from_state(published).is_finite()


def test_from_state_rejects_mismatched_arrays() -> None:
    state = build(LearnerConfig(model="biased_mf", shadows=0, n_factors=4)).get_state()
    state.arrays["user_factors"] = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        learner_from_state(state)
    state.model_type = "nope"
    with pytest.raises(ValueError, match="unknown model type"):
        learner_from_state(state)


def test_reset_rows_reinitialises_recycled_rows_only() -> None:
    model = build(LearnerConfig(model="biased_mf", shadows=0, n_factors=4))
    model.learn(batch(2000, 1))
    before = model.get_state().arrays
    model.reset_rows(np.array([5]), np.array([7]))
    after = model.get_state().arrays
    assert after["user_bias"][5] == 0 and after["item_bias"][7] == 0
    assert not np.array_equal(after["user_factors"][5], before["user_factors"][5])
    assert np.array_equal(after["user_factors"][6], before["user_factors"][6])
    assert after["interactions.user_count"][5] == 0
    assert not (after["interactions.seen"] == 7).any()


_CHILD = """
import hashlib
import numpy as np
from service.examples import ExampleBatch
from service.learners import LearnerConfig, make_learner

rng = np.random.default_rng(5)
n = 4000
b = ExampleBatch.from_arrays(rng.integers(1, 300, n), rng.integers(1, 200, n),
                             rng.integers(0, 2, n).astype(np.float32) * 4 + 1)
digest = hashlib.sha256()
for model in ("bpr", "biased_mf"):
    learner = make_learner(LearnerConfig(model=model, n_factors=8, strategy="micro_batch",
                                         micro_batch_size=64, optimizer="sgd"), 300, 200, 8)
    learner.learn(b)
    for name, array in sorted(learner.get_state().arrays.items()):
        digest.update(name.encode() + array.tobytes())
print(digest.hexdigest())
"""


@pytest.mark.slow  # compiles two micro-batch kernels in a fresh cache
def test_kernels_compiled_or_loaded_from_the_cache_learn_the_same(tmp_path: Path) -> None:
    # The first process compiles the kernels and writes numba's cache, the second loads
    # them. They differed in the last bits (BPR micro-batch SGD) while apply_slots was a
    # separate compiled function: a process that compiled the kernel called apply_slots'
    # own code, one that loaded it ran the copy linked into the kernel. A recovery replay
    # in a restarted service must be the same run either way.
    root = Path(service.__file__).resolve().parents[1]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(root)}
    runs = [subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                           check=True, env=env, cwd=root).stdout.strip() for _ in range(2)]
    assert runs[0] == runs[1]
