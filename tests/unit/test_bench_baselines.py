"""The contender protocol and the baseline loops, driven by a fake consumer (no broker)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.bench.baselines import river_loop, sklearn_loop
from service.bench.baselines.freshrec_job import progressive_rmse
from service.bench.baselines.protocol import (
    PREFIX,
    Progress,
    WorkerSpec,
    emit_stdout,
    parse_report,
)
from service.demo.generator import StreamSpec, SyntheticStream

# -- fakes ---------------------------------------------------------------------------


@dataclass
class FakeMessage:
    _value: bytes
    _offset: int
    _ts_ms: int

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts_ms)  # TIMESTAMP_CREATE_TIME

    def error(self) -> None:
        return None


class FakeConsumer:
    """Hands out the messages one by one, then ``None`` (a quiet topic)."""

    def __init__(self, values: list[bytes], ts_ms: int = 1_000) -> None:
        self.messages = [FakeMessage(v, i, ts_ms) for i, v in enumerate(values)]
        self.i = 0
        self.idle_polls = 0

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.i < len(self.messages):
            self.i += 1
            return self.messages[self.i - 1]
        self.idle_polls += 1
        if self.idle_polls > 1_000:
            raise AssertionError("the loop never stopped on a quiet topic")
        return None


class Recorder:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        self.reports.append({"event": event, **fields})

    def events(self) -> list[str]:
        return [r["event"] for r in self.reports]

    def one(self, event: str) -> dict[str, Any]:
        (found,) = [r for r in self.reports if r["event"] == event]
        return found


def ratings(n: int, seed: int = 3) -> tuple[list[bytes], np.ndarray]:
    stream = SyntheticStream(StreamSpec(n_users=300, n_items=100, seed=seed))
    values = stream.encoded_events(n, start_ms=1_700_000_000_000)
    y = np.array([float(v.split(b'"value":')[1].split(b",")[0]) for v in values])
    return values, y


def spec(measure: int, backlog: int, every: int = 10) -> WorkerSpec:
    return WorkerSpec("127.0.0.1:1", "t", "g", measure_events=measure, backlog_end=backlog,
                      sample_every=every)


# -- the protocol ------------------------------------------------------------------------


def test_spec_rejects_impossible_phases() -> None:
    with pytest.raises(ValueError, match="backlog_end"):
        spec(100, 50)
    with pytest.raises(ValueError, match="measure_events"):
        spec(0, 10)
    with pytest.raises(ValueError, match="sample_every"):
        spec(10, 10, every=0)


@given(st.integers(1, 10_000), st.integers(0, 10_000), st.integers(1, 100))
def test_spec_round_trips_through_json(measure: int, extra: int, every: int) -> None:
    s = spec(measure, measure + extra, every)
    assert WorkerSpec.from_json(s.to_json()) == s


@given(st.lists(st.integers(1, 500), min_size=1, max_size=30), st.integers(1, 3000),
       st.integers(0, 3000))
def test_each_phase_is_reported_once_in_order(steps: list[int], measure: int,
                                              extra: int) -> None:
    rec = Recorder()
    p = Progress(spec(measure, measure + extra), emit=rec)
    p.started()
    position = 0
    for step in steps:
        position += step
        p.advance(position, sq_err=4.0 * position, n_scored=position)
    events = rec.events()
    assert events.count("backlog_done") == (1 if position >= measure else 0)
    assert events.count("caught_up") == (1 if position >= measure + extra else 0)
    if "caught_up" in events:
        assert events.index("backlog_done") < events.index("caught_up")
    if "backlog_done" in events:
        done = rec.one("backlog_done")
        assert done["events"] >= measure
        assert done["rmse"] == pytest.approx(2.0)
        assert done["seconds"] >= 0 and done["cpu_seconds"] >= 0


def test_done_only_after_stop_at_is_reached() -> None:
    p = Progress(spec(10, 10), emit=Recorder())
    p.advance(50)
    assert not p.done()  # no stop_at yet: the live phase is still running
    p.stop_at = 60
    assert not p.done()
    p.advance(60)
    assert p.done()


def test_samples_are_live_offsets_on_the_stride_only() -> None:
    p = Progress(spec(100, 200, every=7), emit=Recorder())
    wanted = [o for o in range(0, 400) if p.wants_sample(o)]
    assert wanted == [o for o in range(200, 400) if o % 7 == 0]
    p.sample(1_000, now_s=1.25)
    assert p.fresh == [(1_000, 250.0)]


def test_reports_survive_stdout_noise(capsys: pytest.CaptureFixture[str]) -> None:
    print("some library banner")
    emit_stdout("caught_up", {"position": 5})
    lines = capsys.readouterr().out.splitlines()
    assert parse_report(lines[0]) is None
    assert lines[1].startswith(PREFIX)
    assert parse_report(lines[1]) == {"event": "caught_up", "position": 5}


def test_control_lines_set_stop_at() -> None:
    p = Progress(spec(1, 1), emit=Recorder())
    p.listen(io.StringIO('\n{"stop_at": 1234}\n')).join(timeout=5)
    assert p.stop_at == 1234


def test_finish_reports_the_samples() -> None:
    rec = Recorder()
    p = Progress(spec(1, 1), emit=rec)
    p.sample(5, now_s=0.01)
    p.advance(3)
    p.finish(applied=3)
    done = rec.one("done")
    assert done["position"] == 3 and done["applied"] == 3
    assert done["fresh"] == [(5, 5.0)] and done["rss_bytes"] > 0


# -- the loops ---------------------------------------------------------------------------


@pytest.mark.parametrize("loop", [river_loop, sklearn_loop], ids=["river", "sklearn"])
def test_loop_learns_every_message_and_samples_the_live_ones(loop: Any) -> None:
    measure, backlog, live = 1_250, 1_500, 730  # not multiples of 100, on purpose
    values, _ = ratings(backlog + live)
    rec = Recorder()
    s = spec(measure, backlog, every=10)
    progress = Progress(s, emit=rec)
    progress.stop_at = backlog + live
    loop.run(s, progress, FakeConsumer(values))
    assert progress.position == backlog + live
    assert rec.events() == ["backlog_done", "caught_up"]
    assert rec.one("caught_up")["position"] == backlog
    sampled = [o for o in range(backlog, backlog + live) if o % 10 == 0]
    assert len(progress.fresh) == len(sampled)
    assert all(ts == 1_000 and ms > 0 for ts, ms in progress.fresh)
    assert math.isfinite(rec.one("backlog_done")["rmse"])


def test_river_progressive_rmse_is_the_error_of_predictions_made_before_learning() -> None:
    values, y = ratings(3_000)
    rec = Recorder()
    s = spec(3_000, 3_000)
    progress = Progress(s, emit=rec)
    progress.stop_at = 3_000
    river_loop.run(s, progress, FakeConsumer(values))
    rmse = rec.one("backlog_done")["rmse"]
    assert rec.one("backlog_done")["n_scored"] == 3_000
    # Recompute it independently with the same model, predicting before learning.
    model, errors = river_loop.RiverBiasedMF(), []
    for v in values:
        errors.append(model.apply(v))
    assert rmse == pytest.approx(math.sqrt(np.mean(errors)))
    # And it learns: later errors are smaller than a constant guess's.
    late = np.mean(errors[-1_000:])
    assert late < np.var(y[-1_000:]) + (y[-1_000:].mean() - 1.0) ** 2
    assert late < np.mean(errors[:200])


def test_sklearn_scores_every_batch_but_the_first() -> None:
    values, _ = ratings(2_000)
    rec = Recorder()
    s = spec(2_000, 2_000)
    progress = Progress(s, emit=rec)
    progress.stop_at = 2_000
    sklearn_loop.run(s, progress, FakeConsumer(values))
    done = rec.one("backlog_done")
    assert done["n_scored"] == 2_000 - 100
    assert 0 < done["rmse"] < 10


def test_sklearn_partial_batch_waits_for_a_quiet_topic() -> None:
    values, _ = ratings(150)
    rec = Recorder()
    s = spec(100, 100)
    progress = Progress(s, emit=rec)
    consumer = FakeConsumer(values)
    progress.stop_at = 10_000  # not reached: the loop must still learn the tail of 50
    with pytest.raises(AssertionError, match="never stopped"):
        sklearn_loop.run(s, progress, consumer)
    assert progress.position == 150


def test_sklearn_rejects_an_empty_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        sklearn_loop.SklearnTutorial(batch_size=0)


def test_freshrec_rmse_is_the_cumulative_one() -> None:
    class WithResult:
        def result(self) -> dict[str, float]:
            return {"rmse_window": 1.3, "rmse": 0.95, "mae": 0.7}

    class WithReport:
        def report(self) -> dict[Any, float]:
            return {("rmse", "window"): 1.3, ("rmse", "all"): 0.8}

    assert progressive_rmse(WithResult()) == 0.95
    assert progressive_rmse(WithReport()) == 0.8
    assert math.isnan(progressive_rmse(object()))
