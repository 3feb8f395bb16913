"""Several passes over a backfill's history: the shuffle, the record of pass 1, recycled
rows, determinism, and that later passes change nothing but the model.

The broker is replaced by the offsets function only (``offsets_for``); the hand-over on a
real broker is tested in tests/integration/test_backfill.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from service.checkpoint.manager import CheckpointManager
from service.config import Settings
from service.runtime.backfill import backfill
from service.runtime.loss_plot import plot_passes, windowed
from service.runtime.passes import PassRecorder, bounded_shuffle
from service.runtime.pipeline import Pipeline
from service.storage import open_store

T0 = 1_000_000_000_000  # years ago: history is judged against its own watermark
STEP = 60_000


def _settings(store: Path, **preprocess: Any) -> Settings:
    return Settings(storage={"url": f"file://{store}"},  # type: ignore[arg-type]
                    preprocess={"user_capacity": 256, "item_capacity": 128,  # type: ignore[arg-type]
                                **preprocess},
                    kafka={"batch_size": 97})  # type: ignore[arg-type]


def _events(n: int, user_of: Any = lambda k: f"u{k % 17}") -> list[bytes]:
    return [orjson.dumps({"schema_version": 1, "event_id": f"e{k}", "event_type": "rating",
                          "user_id": user_of(k), "item_id": f"i{k % 7}",
                          "timestamp": T0 + STEP * k,
                          "value": 1.0 + (k * 7 + k // 17) % 5}) for k in range(n)]


def _no_broker(_s: Settings, _live_from: str | int, _last: int | None) -> dict[int, int]:
    return {0: 0}


def _checkpointed(settings: Settings) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The state the backfill checkpointed, as a pipeline restored from it holds it."""
    pipeline = Pipeline(settings)
    manager = CheckpointManager(open_store(settings.storage), settings.checkpoint,
                                group_id=settings.kafka.group_id, topic=settings.kafka.topic)
    assert manager.restore_latest(pipeline) is not None
    return pipeline.get_state()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], prefix: str) -> bool:
    keys = sorted(k for k in a if k.startswith(prefix))
    assert keys and keys == sorted(k for k in b if k.startswith(prefix))
    return all(a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in keys)


@hsettings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), window=st.integers(0, 64), seed=st.integers(0, 2**32 - 1))
def test_bounded_shuffle_is_a_permutation_within_its_blocks(n: int, window: int,
                                                            seed: int) -> None:
    order = bounded_shuffle(n, window, np.random.default_rng(seed))
    assert sorted(order.tolist()) == list(range(n))
    block = max(window, 1)
    # Each position holds an index of its own block: nothing moves across a block edge.
    assert (order // block == np.arange(n) // block).all()
    again = bounded_shuffle(n, window, np.random.default_rng(seed))
    assert again.tobytes() == order.tobytes()
    if window <= 1:
        assert order.tolist() == list(range(n))


def test_bounded_shuffle_mixes() -> None:
    a = bounded_shuffle(1000, 100, np.random.default_rng([1, 2]))
    b = bounded_shuffle(1000, 100, np.random.default_rng([1, 3]))
    assert (a != np.arange(1000)).mean() > 0.9 and a.tobytes() != b.tobytes()


def test_later_passes_change_only_the_model_and_are_deterministic(tmp_path: Path) -> None:
    history = _events(3000)
    one = _settings(tmp_path / "one")
    r1 = backfill(one, history, progress=None, offsets_for=_no_broker)
    three = _settings(tmp_path / "three")
    r3 = backfill(three, history, passes=3, shuffle_window=500, progress=None,
                  offsets_for=_no_broker)
    again = _settings(tmp_path / "again")
    backfill(again, history, passes=3, shuffle_window=500, progress=None,
             offsets_for=_no_broker)
    other = _settings(tmp_path / "other")
    backfill(other, history, passes=3, shuffle_window=500, seed=99, progress=None,
             offsets_for=_no_broker)

    # The stream's figures are pass 1's, whatever the number of passes.
    assert (r3.messages, r3.applied, r3.examples_trained) == (
        r1.messages, r1.applied, r1.examples_trained)
    assert r3.metrics == r1.metrics and r3.offsets == r1.offsets
    assert [(p.number, p.kind) for p in r3.passes] == [
        (1, "progressive"), (2, "training"), (3, "training")]
    assert r3.passes[0].examples == r3.examples_trained == len(r3.passes[0].losses)
    assert r3.dropped_recycled == 0  # the tables are large enough: nothing recycled
    assert r3.examples_relearned == 2 * r3.examples_trained
    # Pass 1 is the same in both; the loss later passes report is on seen data.
    assert r3.passes[0].mean_loss == r1.passes[0].mean_loss
    assert r3.passes[2].mean_loss < r3.passes[0].mean_loss

    s1, s3 = _checkpointed(one), _checkpointed(three)
    # Everything live goes on from (dedup window, vocabularies, metric windows, drift,
    # hold-out, counters) is pass 1's: the hand-over does not depend on the passes.
    for part in ("preprocess.", "evaluator.", "drift.", "gate."):
        assert _same(s1[0], s3[0], part), part
    assert s1[1]["pipeline"] == s3[1]["pipeline"]
    assert s1[1]["preprocess"] == s3[1]["preprocess"]
    assert not _same(s1[0], s3[0], "learner.")  # the passes did learn
    # Same history, settings and seed: the same model, bit for bit; another seed differs.
    assert _same(s3[0], _checkpointed(again)[0], "learner.")
    assert not _same(s3[0], _checkpointed(other)[0], "learner.")


def test_examples_whose_row_changed_owner_are_left_out_of_later_passes(
    tmp_path: Path,
) -> None:
    # 100 users one after the other, 15 ratings each, in a 16-row table: rows are recycled
    # for new users all along (an id gives its row back 10 minutes after its last event).
    def user_of(k: int) -> str:
        return f"u{k // 15}"

    n = 1500
    settings = _settings(tmp_path / "s", user_capacity=16, user_evict_after_ms=10 * STEP)
    pipeline = Pipeline(settings)
    recorder = PassRecorder()
    pipeline.recorder = recorder
    values = _events(n, user_of)
    for lo in range(0, n, 97):
        pipeline.process(values[lo:lo + 97])
    batch, keep = recorder.examples(), recorder.reusable()
    assert len(batch) == pipeline.examples_trained
    owners = pipeline.preprocessor.users.row_ids()  # type: ignore[union-attr]
    ids = np.array([user_of(int((ts - T0) // STEP)) for ts in batch.ts_ms])
    owned = np.array([owners[r] for r in batch.user])
    admitted = batch.user > 0  # row 0 is everyone's before admission: never recycled
    wrong_owner = admitted & (owned != ids) & (owned != "")
    assert wrong_owner.sum() > 100  # the test does recycle rows under earlier examples
    # No kept example would train a row that now belongs to another id ...
    assert not (keep & wrong_owner).any()
    # ... and those of the ids holding their rows at the end are kept.
    assert keep[admitted & (owned == ids)].all() and keep[~admitted].all()

    # Through backfill: the count is reported and the kept ones are learned each pass.
    report = backfill(_settings(tmp_path / "b", user_capacity=16,
                                user_evict_after_ms=10 * STEP),
                      values, passes=3, progress=None, offsets_for=_no_broker)
    assert report.dropped_recycled == int(len(keep) - keep.sum()) > 0
    assert report.examples_relearned == 2 * int(keep.sum())
    assert [p.examples for p in report.passes[1:]] == [int(keep.sum())] * 2


def test_the_loss_plot_has_one_line_per_pass(tmp_path: Path) -> None:
    report = backfill(_settings(tmp_path / "s"), _events(1200), passes=2,
                      progress=None, offsets_for=_no_broker)
    x, y = windowed(report.passes[0].losses, 100)
    assert len(x) == report.passes[0].examples - 99
    assert y[0] == pytest.approx(float(report.passes[0].losses[:100].mean()), rel=1e-6)
    out = plot_passes(report.passes, tmp_path / "passes.png", window=100)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    assert mpimg.imread(out).shape[0] > 100


def test_passes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="passes"):
        backfill(_settings(tmp_path / "s"), _events(5), passes=0, progress=None,
                 offsets_for=_no_broker)
