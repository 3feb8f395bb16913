"""The promotion gate: decision table, metrics, determinism and the holdout window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.examples import ExampleBatch
from service.snapshots import GATE_REASONS, HoldoutWindow, PromotionGate, SnapshotConfig
from service.snapshots.holdout import concat, take_rows
from service.snapshots.scoring import log_loss, rmse, sampled_auc
from tests.unit.test_snapshot_fakes import FakeLearner, planted_batch

CFG = SnapshotConfig(min_holdout=50, min_new_events=100, tolerance=0.05, holdout_window=2000)


def _trained(seed: int = 1, n: int = 4000) -> FakeLearner:
    learner = FakeLearner()
    batch = planted_batch(n, seed)
    learner.learn(batch.select(~batch.holdout))
    return learner


def _poisoned(learner: FakeLearner) -> FakeLearner:
    bad = FakeLearner.from_state(learner.get_state())
    bad.arrays["item_bias"] = -bad.arrays["item_bias"]  # finite, but badly wrong
    return bad


def _nan(learner: FakeLearner) -> FakeLearner:
    bad = FakeLearner.from_state(learner.get_state())
    bad.arrays["user_bias"][3] = np.nan
    return bad


@pytest.fixture(scope="module")
def good() -> FakeLearner:
    return _trained()


@pytest.fixture
def gate() -> PromotionGate:
    g = PromotionGate(CFG)
    g.observe(planted_batch(4000, seed=2))  # 800 held-out rows
    return g


@pytest.mark.parametrize(
    ("candidate", "champion", "events", "accepted", "reason"),
    [
        ("good", None, 500, True, "first_publication"),
        ("good", "good", 500, True, "passed"),
        ("good", "poisoned", 500, True, "passed"),
        ("poisoned", "good", 500, False, "worse_than_champion"),
        ("nan", "good", 500, False, "non_finite"),
        ("nan", None, 500, False, "non_finite"),
        ("good", "good", 99, False, "not_enough_events"),
        ("good", "nan", 500, True, "champion_non_finite"),
        ("good", "binary", 500, False, "task_mismatch"),
    ],
)
def test_decision_table(gate: PromotionGate, good: FakeLearner, candidate: str,
                        champion: str | None, events: int, accepted: bool, reason: str) -> None:
    make = {"good": lambda: good, "poisoned": lambda: _poisoned(good), "nan": lambda: _nan(good),
            "binary": lambda: FakeLearner(task="binary")}
    d = gate.evaluate(make[candidate](), make[champion]() if champion else None, events)
    assert (d.accepted, d.reason) == (accepted, reason), d.message
    assert d.reason in GATE_REASONS
    assert d.metric == "rmse" and d.higher_is_better is False
    assert d.events_since_last == events


def test_not_enough_holdout(good: FakeLearner) -> None:
    gate = PromotionGate(CFG)
    gate.observe(planted_batch(200, seed=3))  # 40 held-out < 50
    d = gate.evaluate(good, None, 500)
    assert (d.accepted, d.reason, d.n_holdout) == (False, "not_enough_holdout", 40)


def test_tolerance_is_relative_to_the_champion(gate: PromotionGate, good: FakeLearner) -> None:
    champ = gate.evaluate(good, None, 500).candidate
    assert champ is not None
    window = gate.window.batch()
    # A candidate whose predictions are shifted by a constant c has RMSE sqrt(r^2 + c^2)
    # about; pick shifts just inside and outside the 5% tolerance.
    for shift, expected in ((0.02, "passed"), (0.6, "worse_than_champion")):
        cand = FakeLearner.from_state(good.get_state())
        cand.arrays["mean"] += shift
        d = gate.evaluate(cand, good, 500)
        assert d.reason == expected
        assert d.candidate == pytest.approx(rmse(window.y, cand.predict(window)))
        assert d.champion == pytest.approx(champ)


def test_decisions_are_deterministic(good: FakeLearner) -> None:
    def run() -> list[tuple[object, ...]]:
        g = PromotionGate(CFG)
        g.observe(planted_batch(4000, seed=9))
        ds = [g.evaluate(_poisoned(good), good, 500), g.evaluate(good, None, 500)]
        return [(d.accepted, d.reason, d.candidate, d.champion) for d in ds]

    assert run() == run()


def test_binary_gate_uses_log_loss() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 60, 5000), rng.integers(1, 40, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(np.sin(users) + np.cos(items))))).astype(float)
    batch = ExampleBatch.from_arrays(users, items, y)
    batch.holdout[::4] = True
    learner = FakeLearner(task="binary", lr=2.0)
    learner.learn(batch.select(~batch.holdout))
    gate = PromotionGate(CFG)
    gate.observe(batch)
    d = gate.evaluate(learner, FakeLearner(task="binary"), 500)
    held = batch.select(batch.holdout)
    assert d.metric == "log_loss" and d.accepted
    assert d.candidate == pytest.approx(log_loss(held.y, learner.predict(held)))
    assert d.champion == pytest.approx(np.log(2))  # an untrained model predicts 0.5
    assert gate.evaluate(FakeLearner(task="binary"), learner, 500).reason == "worse_than_champion"


def _ranking_batch(n: int, seed: int) -> ExampleBatch:
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 60, n)
    items = rng.integers(1, 21, n)  # popular items 1..20 are the positives
    batch = ExampleBatch.from_arrays(users, items, np.ones(n))
    batch.holdout[::2] = True
    return batch


def test_ranking_gate_uses_sampled_auc() -> None:
    cfg = SnapshotConfig(min_holdout=50, min_new_events=0, ranking_negatives=20,
                         holdout_window=5000)
    gate = PromotionGate(cfg)
    gate.observe(_ranking_batch(600, 1))
    # Items 21..39 appear only as never-positive pool items.
    extra = ExampleBatch.from_arrays(np.ones(19, np.int64), np.arange(21, 40), np.zeros(19))
    extra.holdout[:] = True
    gate.observe(extra)
    knows = FakeLearner(task="ranking")
    knows.arrays["item_bias"][1:21] = 1.0  # scores positives above the rest
    clueless = FakeLearner(task="ranking")  # all ties: AUC one half
    d = gate.evaluate(knows, clueless, 10)
    assert d.metric == "sampled_auc" and d.higher_is_better
    assert d.accepted and d.champion == pytest.approx(0.5)
    assert d.candidate is not None and d.candidate > 0.7
    assert d.n_holdout == 300  # positives only
    assert gate.evaluate(clueless, knows, 10).reason == "worse_than_champion"


def test_sampled_auc_counts_ties_half_and_skips_invalid() -> None:
    pos = np.array([1.0, 0.0])
    neg = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 5.0]])
    valid = np.array([[True, True, False], [True, True, True]])
    assert sampled_auc(pos, neg, valid) == pytest.approx(((1 + 0.5) / 2 + (0.5 + 0.5) / 3) / 2)


def _with_features(n: int, seed: int) -> ExampleBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 4, n)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    m = int(indptr[-1])
    b = ExampleBatch(
        user=rng.integers(1, 100, n), item=rng.integers(1, 50, n),
        y=rng.random(n).astype(np.float32), weight=np.ones(n, np.float32),
        ts_ms=np.arange(n, dtype=np.int64) + seed * 10_000,
        feat_indptr=indptr, feat_idx=rng.integers(0, 1000, m),
        feat_val=rng.random(m).astype(np.float32), holdout=rng.random(n) < 0.5,
    )
    return b


def _rows(b: ExampleBatch) -> list[tuple[object, ...]]:
    return [
        (int(b.user[i]), int(b.item[i]), int(b.ts_ms[i]),
         tuple(b.feat_idx[b.feat_indptr[i]:b.feat_indptr[i + 1]].tolist()))
        for i in range(len(b))
    ]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=8),
       capacity=st.integers(1, 40))
def test_window_holds_exactly_the_latest_heldout_rows(sizes: list[int], capacity: int) -> None:
    window = HoldoutWindow(capacity)
    batches = [_with_features(n, seed) for seed, n in enumerate(sizes)]
    for b in batches:
        window.add(b)
    everything = concat(batches)
    held = take_rows(everything, np.flatnonzero(everything.holdout))
    expected = _rows(held)[-capacity:] if capacity else []
    assert len(window) == len(expected)
    assert _rows(window.batch()) == expected


def test_window_forgets_rows_of_recycled_ids() -> None:
    window = HoldoutWindow(100)
    b = ExampleBatch.from_arrays([1, 2, 3], [7, 8, 9], [1.0, 1.0, 1.0])
    b.holdout[:] = True
    window.add(b)
    recycle = ExampleBatch.from_arrays([], [], [])
    recycle.recycled_users = np.array([2], np.int64)
    recycle.recycled_items = np.array([9], np.int64)
    window.add(recycle)
    assert window.batch().user.tolist() == [1]


def test_gate_refuses_learner_without_known_task(gate: PromotionGate) -> None:
    odd = FakeLearner()
    odd.task = "clustering"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="gate knows"):
        gate.evaluate(odd, None, 500)
