"""Every model runs inside the service's pipeline, chosen by configuration alone."""

from __future__ import annotations

import time

import numpy as np
import pytest

from service.config import Settings
from service.demo.generator import StreamSpec, SyntheticStream
from service.runtime.pipeline import Pipeline

SMALL = {
    "user_capacity": 4096,
    "item_capacity": 1024,
    "feature_bits": 12,
    # Impressions resolve quickly in event time, so a short stream yields negatives.
    "attribution_window_ms": 2000,
}


def settings_for(model: str, strategy: str = "per_event") -> Settings:
    return Settings(
        learner={"model": model, "strategy": strategy},  # type: ignore[arg-type]
        preprocess=SMALL,  # type: ignore[arg-type]
    )


def stream_values(mode: str, n: int, seed: int = 3) -> list[bytes]:
    stream = SyntheticStream(StreamSpec(n_users=800, n_items=200, mode=mode,  # type: ignore[arg-type]
                                        seed=seed))
    return stream.encoded_events(n, start_ms=int(time.time() * 1000) - 10 * n,
                                 events_per_second=100.0)


@pytest.mark.parametrize(
    ("model", "mode", "metric"),
    [
        ("biased_mf", "ratings", "rmse"),
        ("fm", "ratings", "rmse"),
        ("sklearn", "ratings", "rmse"),
        ("ftrl", "behaviour", "log_loss"),
        ("bpr", "behaviour", "recall@k"),
    ],
)
def test_model_runs_in_the_pipeline_and_round_trips(model: str, mode: str, metric: str) -> None:
    settings = settings_for(model)
    pipeline = Pipeline(settings)
    values = stream_values(mode, 6000)
    trained = 0
    for lo in range(0, len(values), 1000):
        outcome = pipeline.process(values[lo:lo + 1000])
        assert not outcome.rejected, outcome.rejected[:3]
        trained += outcome.n_trained
    assert trained > 1000, "the stream should yield training examples for this task"
    report = {name: v for (name, window), v in pipeline.evaluator.report().items()
              if window == "cumulative"}
    assert metric in report and np.isfinite(report[metric]), report
    assert pipeline.learner.is_finite()

    # The whole state round-trips: a restored pipeline continues identically.
    arrays, meta = pipeline.get_state()
    restored = Pipeline(settings)
    restored.set_state(arrays, meta)
    more = stream_values(mode, 1000, seed=4)
    a = pipeline.process(more)
    b = restored.process(more)
    assert np.array_equal(a.losses, b.losses)
    state_a, state_b = pipeline.learner.get_state(), restored.learner.get_state()
    for name, array in state_a.arrays.items():
        assert np.array_equal(array, state_b.arrays[name], equal_nan=True), name


def test_micro_batch_strategy_runs_in_the_pipeline() -> None:
    pipeline = Pipeline(settings_for("biased_mf", "micro_batch"))
    outcome = pipeline.process(stream_values("ratings", 3000))
    assert outcome.n_trained > 2500
    assert np.isfinite(pipeline.evaluator.report()[("rmse", "cumulative")])


def test_contradicting_tasks_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="FRESHREC_PREPROCESS__TASK=binary"):
        Settings(learner={"model": "ftrl"}, preprocess={"task": "regression"})  # type: ignore[arg-type]
