"""A small run of ``freshrec bench e2e`` on the real broker: every contender, nothing lost.

No timed assertions: figures depend on the machine. What must hold anywhere is that every
contender ran both phases, learned exactly what was produced, and shows up in the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from service.bench import e2e
from service.bench.e2e import E2EConfig

pytestmark = pytest.mark.integration


def test_quick_run_measures_every_contender(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    cfg = E2EConfig.quick(bootstrap=kafka_bootstrap, out=tmp_path, events=5_000, rate=2_000.0,
                          live_seconds=2.0, warmup_seconds=0.2, n_users=2_000, n_items=500)
    topic = unique_topic(1)
    results = e2e.run(cfg, topic=topic, log=lambda _: None)

    assert [r.name for r in results] == list(e2e.DEFAULT_CONTENDERS)
    backlog = cfg.events
    for r in results:
        assert r.error == "", f"{r.name}: {r.error}"
        assert r.events >= backlog
        assert r.produced > backlog
        assert r.applied == r.produced, f"{r.name} applied {r.applied} of {r.produced}"
        assert r.fresh_n > 0 and r.fresh_p99_ms >= r.fresh_p50_ms > 0
        assert math.isfinite(r.rmse) and r.rmse > 0
        assert r.peak_rss_bytes > 0 and r.cpu_seconds > 0

    text = e2e.report(cfg, results, "pytest")
    for name in e2e.DEFAULT_CONTENDERS:
        assert name in text
    assert (tmp_path / "e2e.png").read_bytes()[:4] == b"\x89PNG"
    assert "river-biasedmf *" in text or "sklearn-tutorial *" in text
