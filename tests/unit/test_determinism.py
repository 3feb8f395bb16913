"""The same events give the same state, however Kafka cuts them into batches.

A poll returns whatever the broker delivered in one fetch, and recovery replays from a
checkpoint with other batch boundaries. The pipeline's state after a stream must not
depend on either: :class:`~service.runtime.pipeline.Pipeline` is fed one generated stream
cut at random places (with checkpoint round trips at random places too) and its whole
state is compared, array by array and byte for byte, with the state after a fixed cut.

The stream is built so that everything that used to happen "at the end of a batch" does
happen: ids are admitted after two sightings, aged out within seconds of event time and
their rows recycled; the vocabulary fills up; events arrive duplicated, slightly out of
order and now and then malformed; a share is held out for the gate; the concept changes
halfway, so the drift detectors fire and their reactions ('adapt', 'reset') take effect;
and with ``micro_batch`` the learner steps once per mini-batch.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.demo.generator import StreamSpec, SyntheticStream
from service.runtime import pipeline as pipeline_module
from service.runtime.pipeline import Pipeline

N_EVENTS = 5000
START_MS = 1_700_000_000_000
NOW_MS = START_MS + 10 * N_EVENTS + 60_000  # every event is in the past, none too old
# Reactions take effect every REACTION_CHUNK examples: a smaller chunk lets a short stream
# cross many of them (the rule is the same at any size).
CHUNK = 512


def make_settings(model: str, strategy: str) -> Settings:
    return Settings(
        learner={"model": model, "strategy": strategy, "n_factors": 4,
                 "micro_batch_size": 16, "micro_batch_ms": 300},  # type: ignore[arg-type]
        preprocess={
            # Tiny vocabularies: ids come and go, rows are recycled, the tables fill up.
            "user_capacity": 48, "item_capacity": 24,
            "user_admit_after": 2, "item_admit_after": 2,
            "user_evict_after_ms": 3_000, "item_evict_after_ms": 1_500,
            "dedup_window_events": 2_000, "dedup_window_ms": 20_000,
            "feature_bits": 8, "holdout_fraction": 0.1,
        },  # type: ignore[arg-type]
        drift={
            # River's sensitivity (the defaults need 5,000-event sub-windows): this short
            # stream must make the detectors fire.
            "adwin": {"reaction": "adapt", "clock": 8, "delta": 0.002, "min_window_length": 5,
                      "grace_period": 10, "min_rise": 0.0},
            "page_hinkley": {"reaction": "reset", "threshold": 20.0, "min_instances": 50},
            "psi": {"reaction": "alert", "block_events": 200, "reference_blocks": 2,
                    "current_blocks": 1},
            "adapt_duration_events": 700, "reaction_cooldown_events": 20,
            "reset_point_events": 1024,
        },  # type: ignore[arg-type]
        snapshot={"holdout_window": 60},  # type: ignore[arg-type]
    )


@functools.cache
def stream_values() -> tuple[bytes | None, ...]:
    """The stream: ratings with an abrupt change, plus repeats, disorder and junk."""
    spec = StreamSpec(n_users=400, n_items=90, user_skew=1.1, item_skew=1.1, seed=11)
    events = SyntheticStream(spec).events(N_EVENTS, start_ms=START_MS,
                                          events_per_second=100.0)
    for e in events[N_EVENTS // 3: 3 * N_EVENTS // 4]:  # opinions turn, and back
        e["value"] = 6.0 - e["value"]
    rng = np.random.default_rng(3)
    for k in range(0, len(events) - 1, 7):  # neighbours swapped: out of order
        events[k], events[k + 1] = events[k + 1], events[k]
    values: list[bytes | None] = [orjson.dumps(e) for e in events]
    for at in sorted(rng.choice(len(values), 150, replace=False).tolist(), reverse=True):
        # A redelivery a little later (a duplicate), or a message that is not an event.
        values.insert(at + 5, values[at] if at % 3 else (None if at % 2 else b"{not json"))
    return tuple(values)


def run(model: str, strategy: str, cuts: list[int], restarts: set[int]
        ) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any], dict[str, Any]]:
    """Feed the stream cut at ``cuts``, restoring from a checkpoint after the batches at
    ``restarts``; return the final state and what the batches reported, concatenated."""
    values = stream_values()
    settings = make_settings(model, strategy)
    pipeline = Pipeline(settings)
    losses, detections = [], []
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(values)}), len(values)]
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        outcome = pipeline.process(list(values[lo:hi]), now_ms=NOW_MS)
        losses.append(outcome.losses)
        detections.extend((d.detector, d.signal, d.at_event, d.reaction)
                          for d in outcome.drift)
        if k in restarts:
            arrays, meta = pipeline.get_state()
            pipeline = Pipeline(settings)
            pipeline.set_state(arrays, orjson.loads(orjson.dumps(meta)))
    arrays, meta = pipeline.get_state()
    reported = {"losses": np.concatenate(losses), "detections": detections}
    return arrays, orjson.loads(orjson.dumps(meta)), reported


@functools.cache
def reference(model: str, strategy: str
              ) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any], dict[str, Any]]:
    return run(model, strategy, list(range(0, len(stream_values()), 1000)), set())


def assert_same_state(a: dict[str, npt.NDArray[Any]], b: dict[str, npt.NDArray[Any]]) -> None:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    differ = [name for name in a if a[name].dtype != b[name].dtype
              or a[name].shape != b[name].shape or a[name].tobytes() != b[name].tobytes()]
    assert not differ, f"{len(differ)} arrays differ: {differ[:12]}"


@pytest.fixture(autouse=True)
def small_reaction_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "REACTION_CHUNK", CHUNK)


@pytest.mark.parametrize(("model", "strategy"), [
    ("biased_mf", "per_event"), ("biased_mf", "micro_batch"), ("fm", "per_event"),
])
def test_the_stream_exercises_what_batches_used_to_decide(model: str, strategy: str) -> None:
    """The property below is only worth something if the stream makes these happen."""
    arrays, meta, reported = reference(model, strategy)
    pre = meta["preprocess"]
    for side in ("users", "items"):
        counters = pre[side]["counters"]
        assert counters["evicted"] > 50 and counters["recycled"] > 50, (side, counters)
        assert counters["full"] > 0, (side, counters)
    assert pre["totals"]["duplicates"] > 50
    assert len(arrays["gate.user"]) > 0
    reactions = {r for *_, r in reported["detections"]}
    assert {"adapt", "reset"} <= reactions, reported["detections"]
    assert any(name.startswith("reset_point.") for name in arrays)
    assert meta["pipeline"]["examples_trained"] > 3000


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model_strategy=st.sampled_from([("biased_mf", "per_event"), ("biased_mf", "micro_batch"),
                                    ("fm", "per_event")]),
    cuts=st.lists(st.integers(1, N_EVENTS), min_size=1, max_size=40),
    restarts=st.sets(st.integers(0, 40), max_size=3),
)
def test_state_does_not_depend_on_batch_boundaries_or_restarts(
    model_strategy: tuple[str, str], cuts: list[int], restarts: set[int],
) -> None:
    model, strategy = model_strategy
    ref_arrays, ref_meta, ref_reported = reference(model, strategy)
    arrays, meta, reported = run(model, strategy, cuts, restarts)
    assert_same_state(ref_arrays, arrays)
    assert meta == ref_meta
    # What was reported along the way is the same stream of values too.
    assert reported["losses"].tobytes() == ref_reported["losses"].tobytes()
    assert reported["detections"] == ref_reported["detections"]
