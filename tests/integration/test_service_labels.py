"""Labels without leakage through the running service (issue 15, item 0), on the real stack.

Impressions with side features and, 1 s later, clicks with ids only on a random 17% of
them, drawn independently of everything: nothing in the stream predicts a click. After
``freshrec run`` (task=binary, FTRL) has applied all of it, the progressive AUC it
reports, and the AUC of its model on the gate's held-out examples, must be within noise
of 0.5. Before positives were their impressions as shown, held as long as negatives, the
same stream gave about 0.99: the positives were the click events, with no context.
With half the clicks late (after their impression's window), the late ones have no
impression to be: learned as examples of their own they gave the same leak by shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.config import Settings
from service.demo.publish import make_producer, publish
from service.evaluation.binary import BinaryMetrics, auc_from_scores
from service.runtime.pipeline import Pipeline
from tests.service_process import ServiceProcess
from tests.streams import (
    auc_noise,
    env_storage,
    file_storage,
    newest_checkpoint,
    random_clicks,
    sample,
    service_env,
    wait_applied,
)

pytestmark = pytest.mark.integration

N_IMPRESSIONS = 8000  # 300 ms apart: 40 minutes of event time, 5-minute windows
SETTINGS = {
    "FRESHREC_LEARNER__MODEL": "ftrl",
    "FRESHREC_PREPROCESS__TASK": "binary",
    "FRESHREC_PREPROCESS__HOLDOUT_FRACTION": "0.2",  # a gate holdout of ~1300 examples
    "FRESHREC_PREPROCESS__MAX_PENDING": "4096",
}


@pytest.mark.parametrize("late_share", [0.0, 0.5])
def test_random_clicks_give_auc_within_noise_of_one_half(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
    late_share: float,
) -> None:
    topic = unique_topic()
    start = int(time.time() * 1000) - 300 * N_IMPRESSIONS - 60_000
    values = random_clicks(N_IMPRESSIONS, 8, seed=15, start_ms=start, late_share=late_share)
    env = service_env(kafka_bootstrap, topic, file_storage(str(tmp_path / "store")),
                      **SETTINGS)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        service.wait_ready()
        wait_applied(service, publish(make_producer(kafka_bootstrap), topic, values))
        metrics = service.metrics()
        served = sample(metrics, "freshrec_progressive_score", metric="auc", window="recent")
    finally:
        code = service.terminate()
    assert code == 0, service.log()

    # The final checkpoint holds what the service computed: its evaluator, gate and model.
    _, arrays, meta = newest_checkpoint(env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"],
                                        topic)
    pipeline = Pipeline(Settings(
        learner={"model": "ftrl"},  # type: ignore[arg-type]
        preprocess={"task": "binary", "user_capacity": 8192, "item_capacity": 2048,  # type: ignore[arg-type]
                    "max_pending": 4096},
    ))
    pipeline.set_state(arrays, meta)
    counters = meta["preprocess"]["labels"]["counters"]
    converted = 1000 if not late_share else 500
    assert counters["impressions_converted"] > converted
    assert counters["negatives_emitted"] > 5000
    if late_share:
        # Late clicks are counted, and those no later impression of the pair claimed are
        # not learned: their impressions stay negatives.
        assert counters["late_clicks"] > 500, counters
        assert 500 < counters["positives_without_impression"] <= counters["late_clicks"]
    # /metrics showed the same totals, for the team to see how many clicks came late.
    for outcome in ("late_clicks", "positives_without_impression", "impressions_converted"):
        assert sample(metrics, "freshrec_label_outcomes", outcome=outcome) == counters[outcome]

    metrics = pipeline.evaluator.metrics
    assert isinstance(metrics, BinaryMetrics)
    y = metrics.window.values()[:, 2]  # the last 10,000 examples: all of them here
    n_pos = int((y > 0.5).sum())
    noise = auc_noise(n_pos, len(y) - n_pos)
    # What /metrics showed once every event was applied (the gauge is set just after the
    # applied counter, so it may be one batch older) and the checkpoint's exact figure.
    auc = pipeline.evaluator.result()["auc_window"]
    assert abs(served - 0.5) < 4 * noise and abs(auc - 0.5) < 4 * noise, (served, auc)

    holdout = pipeline.gate.window.batch()
    hy = holdout.y.astype(np.float64)
    h_pos = int(hy.sum())
    assert len(hy) > 1000
    gate_auc = auc_from_scores(hy, pipeline.learner.predict(holdout).astype(np.float64))
    print(f"progressive AUC {auc:.4f} (served {served:.4f}) over {len(y)} examples, "
          f"{n_pos} positive; gate holdout AUC {gate_auc:.4f} over {len(hy)}")
    assert abs(gate_auc - 0.5) < 4 * auc_noise(h_pos, len(hy) - h_pos), gate_auc
