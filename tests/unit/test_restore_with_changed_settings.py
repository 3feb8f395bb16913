"""A restart with edited settings restores the checkpoint instead of refusing to start.

An operator who tunes a drift threshold, a metric window or the learning rate and
restarts must get the model back: drift detectors whose settings changed start afresh,
metric windows keep their newest values, and the model keeps the settings it was built
with, each said in a WARNING. With the same settings nothing is said.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
import pytest

from service.config import Settings
from service.demo.generator import StreamSpec, SyntheticStream
from service.runtime.pipeline import Pipeline

START_MS = 1_700_000_000_000
N = 6_000


def settings(**changes: Any) -> Settings:
    base: dict[str, Any] = {
        "learner": {"n_factors": 4, "eval_window": 500},
        "drift": {"adwin": {"delta": 0.002, "min_window_length": 50, "grace_period": 100},
                  "psi": {"block_events": 500}},
    }
    for section, values in changes.items():
        for key, value in values.items():
            if isinstance(value, dict):
                base.setdefault(section, {}).setdefault(key, {}).update(value)
            else:
                base.setdefault(section, {})[key] = value
    return Settings(**base)


def values() -> list[bytes]:
    spec = StreamSpec(n_users=300, n_items=80, seed=5)
    events = SyntheticStream(spec).events(N + 500, start_ms=START_MS,
                                          events_per_second=100.0)
    return [orjson.dumps(e) for e in events]


def checkpoint() -> tuple[Pipeline, dict[str, np.ndarray], dict[str, Any]]:
    pipeline = Pipeline(settings())
    stream = values()
    for lo in range(0, N, 1_000):
        pipeline.process(stream[lo:lo + 1_000], now_ms=START_MS + 10 * N)
    arrays, meta = pipeline.get_state()
    return pipeline, arrays, orjson.loads(orjson.dumps(meta))


def learner_arrays(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {k: v.tobytes() for k, v in arrays.items() if k.startswith("learner.")}


def test_the_same_settings_restore_silently(caplog: pytest.LogCaptureFixture) -> None:
    _, arrays, meta = checkpoint()
    with caplog.at_level(logging.WARNING, logger="service.runtime.pipeline"):
        Pipeline(settings()).set_state(arrays, meta)
    assert caplog.records == []


def test_edited_settings_restore_the_model_and_say_what_was_not_applied(
        caplog: pytest.LogCaptureFixture) -> None:
    before, arrays, meta = checkpoint()
    edited = settings(learner={"learning_rate": 0.01, "eval_window": 300},
                      drift={"adwin": {"delta": 0.01}, "psi": {"block_events": 250}})
    restored = Pipeline(edited)
    with caplog.at_level(logging.WARNING, logger="service.runtime.pipeline"):
        restored.set_state(arrays, meta)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "drift detectors start afresh" in said and "delta" in said
    assert "keeps the learner settings it was built with" in said
    assert "optimizer.learning_rate: 0.1 -> 0.01" in said

    after_arrays, after_meta = restored.get_state()
    # The model is the checkpoint's, bit for bit, with the settings it was built with.
    assert learner_arrays(after_arrays) == learner_arrays(arrays)
    assert after_meta["learner"]["config"] == meta["learner"]["config"]
    # Cumulative metrics go on; the window keeps the newest values that fit.
    old, new = before.evaluator.report(), restored.evaluator.report()
    assert new[("rmse", "cumulative")] == old[("rmse", "cumulative")]
    assert np.isfinite(new[("rmse", "window")])
    # Detectors are new, the stream position is not.
    assert restored.drift.n_events == before.drift.n_events
    assert sum(restored.drift.detection_counts().values()) == 0
    # And the service goes on learning.
    out = restored.process(values()[N:], now_ms=START_MS + 10 * N)
    assert out.n_examples > 0 and np.isfinite(out.losses).all()


def test_drift_turned_off_restores_too(caplog: pytest.LogCaptureFixture) -> None:
    _, arrays, meta = checkpoint()
    restored = Pipeline(settings(drift={"enabled": False}))
    with caplog.at_level(logging.WARNING, logger="service.runtime.pipeline"):
        restored.set_state(arrays, meta)
    assert restored.drift.keys == []
    assert any("drift detectors start afresh" in r.getMessage() for r in caplog.records)
