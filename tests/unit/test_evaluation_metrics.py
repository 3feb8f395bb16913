"""Progressive metrics against direct computations, windows and state round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from service.evaluation import (
    BinaryMetrics,
    ProgressiveEvaluator,
    RankingMetrics,
    RegressionMetrics,
    Window,
    sampled_ranks,
)


@given(sizes=st.lists(st.integers(0, 40), max_size=15), size=st.integers(1, 30))
def test_window_holds_exactly_the_last_rows(sizes: list[int], size: int) -> None:
    w = Window(size, 1)
    stream: list[float] = []
    for n in sizes:
        rows = np.arange(len(stream), len(stream) + n, dtype=np.float64)
        stream += rows.tolist()
        w.extend(rows[:, None])
    assert sorted(w.values()[:, 0].tolist()) == stream[-size:] if stream else True
    assert len(w.values()) == min(len(stream), size)


@given(before=st.lists(st.integers(0, 40), max_size=10),
       after=st.lists(st.integers(0, 40), max_size=5),
       saved_size=st.integers(1, 30), size=st.integers(1, 30))
def test_a_window_restored_into_another_size_keeps_its_newest_rows(
        before: list[int], after: list[int], saved_size: int, size: int) -> None:
    # eval_window changed between a checkpoint and a restart: the restored window must
    # be the window of the new size over the same stream, as if it had always been.
    stream: list[float] = []
    saved = Window(saved_size, 1)
    for n in before:
        rows = np.arange(len(stream), len(stream) + n, dtype=np.float64)
        stream += rows.tolist()
        saved.extend(rows[:, None])
    restored = Window(size, 1)
    restored.set_state(saved.get_state())
    kept = stream[-min(saved_size, size):] if stream else []
    assert sorted(restored.values()[:, 0].tolist()) == kept
    for n in after:
        rows = np.arange(len(stream), len(stream) + n, dtype=np.float64)
        stream += rows.tolist()
        restored.extend(rows[:, None])
    expected = (kept + stream[len(stream) - sum(after):])[-size:]
    assert sorted(restored.values()[:, 0].tolist()) == expected
    with pytest.raises(ValueError, match="columns"):
        Window(size, 2).set_state(saved.get_state())


def test_regression_metrics_match_numpy_in_batches() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=1000), rng.normal(size=1000)
    m = RegressionMetrics(window=300)
    for chunk in np.array_split(np.arange(1000), 7):
        m.update(y[chunk], p[chunk], np.ones(len(chunk)))
    r = m.result()
    assert r["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert r["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert r["rmse_window"] == pytest.approx(np.sqrt(np.mean((y[-300:] - p[-300:]) ** 2)))


def test_binary_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(np.float64)
    m = BinaryMetrics(window=2000)
    for chunk in np.array_split(np.arange(5000), 5):
        m.update(y[chunk], p[chunk], np.ones(len(chunk)))
    r = m.result()
    assert r["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-6)
    assert r["auc_window"] == pytest.approx(roc_auc_score(y[-2000:], p[-2000:]))
    # The cumulative AUC is binned: within a fraction of a percent of the exact value.
    assert r["auc"] == pytest.approx(roc_auc_score(y, p), abs=2e-3)


def test_non_finite_predictions_do_not_poison_the_metrics() -> None:
    m = RegressionMetrics()
    losses = m.update(np.array([1.0, 2.0]), np.array([np.nan, 2.5]), np.ones(2))
    assert losses.tolist() == [0.0, 0.25]
    assert m.result()["rmse"] == pytest.approx(0.5)


def test_sampled_ranks_and_ranking_metrics() -> None:
    rng = np.random.default_rng(2)
    users = np.arange(1, 101)
    items = users % 10 + 1
    def perfect(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return (i == u % 10 + 1).astype(np.float64)
    ranks = sampled_ranks(perfect, users, items, n_items=50, n_candidates=20, rng=rng)
    assert (ranks == 0).all()
    constant = sampled_ranks(lambda u, i: np.zeros(len(u)), users, items, 50, 20, rng)
    assert (constant >= 18).all()  # ties count against the positive
    m = RankingMetrics(k=1, window=50)
    m.update_ranks(ranks)
    m.update_ranks(constant)
    r = m.result()
    assert r["recall@k"] == 0.5 and r["ndcg@k"] == 0.5 and r["recall@k_window"] == 0.0


@pytest.mark.parametrize("task", ["regression", "binary", "ranking"])
def test_evaluator_state_round_trip(task: str) -> None:
    rng = np.random.default_rng(3)
    ev = ProgressiveEvaluator.for_task(task, window=100)  # type: ignore[arg-type]
    y = (rng.random(500) < 0.5).astype(np.float64)
    ev.update(y, rng.random(500))
    if task == "ranking":
        ev.update_ranks(rng.integers(0, 20, 300))
    other = ProgressiveEvaluator.for_task(task, window=100)  # type: ignore[arg-type]
    arrays, meta = ev.get_state()
    other.set_state(arrays, meta)
    assert other.result() == ev.result()
    assert other.report() == ev.report()
    assert all(np.isfinite(v) for v in ev.report().values())
    y2, p2 = np.ones(10), np.full(10, 0.7)
    assert np.array_equal(ev.update(y2, p2), other.update(y2, p2))
    assert other.result() == ev.result()


def test_evaluator_validates_input() -> None:
    with pytest.raises(ValueError, match="task"):
        ProgressiveEvaluator("clustering")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same length"):
        ProgressiveEvaluator("regression").update(np.ones(3), np.ones(2))
    with pytest.raises(TypeError, match="ranking"):
        ProgressiveEvaluator("binary").update_ranks(np.zeros(3, dtype=np.int64))
