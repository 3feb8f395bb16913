"""DriftMonitor: signals, positions, reactions, cooldown and exact state round trips."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from service.drift import DriftConfig, DriftMonitor, DriftState
from service.examples import ExampleBatch


def _batch(rng: np.random.Generator, n: int, item_offset: int = 0,
           feature_shift: float = 0.0) -> ExampleBatch:
    # Long-tailed popularity; item_offset changes which items are the popular ones.
    items = (rng.zipf(1.3, n) + item_offset) % 100_000
    batch = ExampleBatch.from_arrays(rng.integers(1, 1000, n), items, rng.random(n))
    # Two side features per example: feature 7 (numeric) and one of 100 hashed indicators.
    batch.feat_indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    idx = np.empty(2 * n, dtype=np.int64)
    idx[0::2] = 7
    idx[1::2] = rng.integers(1000, 1100, n)
    val = np.ones(2 * n, dtype=np.float32)
    val[0::2] = rng.normal(feature_shift, 1.0, n)
    batch.feat_idx, batch.feat_val = idx, val
    return batch


def _config(**psi: object) -> DriftConfig:
    return DriftConfig.model_validate(
        {"psi": {"block_events": 2000, "reference_blocks": 4, "current_blocks": 1,
                 "item_buckets": 64, **psi}}
    )


def _run(monitor: DriftMonitor, rng: np.random.Generator, batches: int, n: int = 5000,
         loss_shift: float = 0.0, **kw: object) -> list:
    found = []
    for _ in range(batches):
        b = _batch(rng, n, **kw)  # type: ignore[arg-type]
        found += monitor.update(rng.exponential(0.5, n) + loss_shift, rng.random(n), b)
    return found


def test_stationary_stream_raises_nothing() -> None:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(_config(features=[7]))
    assert _run(monitor, rng, 12) == []
    stats = monitor.statistics()
    assert set(stats) == {
        ("adwin", "loss"),
        ("page_hinkley", "loss"),
        ("psi", "prediction"),
        ("psi", "item_popularity"),
        ("psi", "feature_occurrence"),
        ("psi", "feature_7"),
    }
    assert all(v < 0.1 for (det, _), v in stats.items() if det == "psi")
    assert monitor.n_events == 60_000


def test_loss_shift_is_detected_at_the_right_event_with_the_configured_reaction() -> None:
    rng = np.random.default_rng(1)
    # River's sensitivity and the adapt reaction (the defaults are slower and only alert:
    # see the next test).
    monitor = DriftMonitor(DriftConfig.model_validate({
        **_config().model_dump(),
        "adwin": {"delta": 0.002, "min_window_length": 5, "grace_period": 10,
                  "min_rise": 0.0, "reaction": "adapt"},
        "page_hinkley": {"threshold": 100.0}}))
    assert _run(monitor, rng, 6) == []
    found = _run(monitor, rng, 2, loss_shift=1.0)
    loss = [d for d in found if d.signal == "loss"]
    assert {d.detector for d in loss} == {"adwin", "page_hinkley"}
    first = min(loss, key=lambda d: d.at_event)
    assert 30_000 <= first.at_event < 30_300
    adwin = next(d for d in loss if d.detector == "adwin")
    assert adwin.reaction == "adapt"
    assert adwin.lr_factor == monitor.config.adapt_lr_factor
    assert adwin.duration_events == monitor.config.adapt_duration_events
    ph = next(d for d in loss if d.detector == "page_hinkley")
    assert ph.reaction == "alert" and ph.lr_factor == 1.0 and ph.statistic > 100.0
    assert [d.at_event for d in found] == sorted(d.at_event for d in found)


def test_the_defaults_find_a_large_rise_within_a_window_and_only_alert() -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(_config())
    assert _run(monitor, rng, 6) == []
    found = [d for d in _run(monitor, rng, 3, loss_shift=1.0) if d.signal == "loss"]
    adwin = [d for d in found if d.detector == "adwin"]
    # The newer sub-window (5,000 events) holds enough of the change after ~2k events.
    assert adwin and 30_000 <= adwin[0].at_event < 33_000
    assert {d.reaction for d in found} == {"alert"}


def test_input_shifts_are_detected_per_signal() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(_config(features=[7]))
    _run(monitor, rng, 4)
    found = _run(monitor, rng, 2, item_offset=500, feature_shift=2.0)
    signals = {d.signal for d in found if d.detector == "psi"}
    assert {"item_popularity", "feature_7"} <= signals
    assert "prediction" not in signals
    assert all(20_000 <= d.at_event < 30_000 for d in found)


def test_cooldown_downgrades_reactions_after_an_adapt_or_reset() -> None:
    rng = np.random.default_rng(3)
    cfg = _config(reaction="reset")
    cfg.adwin.reaction = "adapt"
    cfg.page_hinkley.reaction = "reset"
    cfg.reaction_cooldown_events = 1_000_000
    monitor = DriftMonitor(cfg)
    _run(monitor, rng, 4)
    found = _run(monitor, rng, 2, loss_shift=1.0, item_offset=500)
    reactions = [d.reaction for d in found]
    assert reactions[0] in ("adapt", "reset")
    assert all(r == "alert" for r in reactions[1:]) and len(reactions) >= 2


def test_disabled_monitor_does_nothing() -> None:
    monitor = DriftMonitor(DriftConfig(enabled=False))
    rng = np.random.default_rng(4)
    assert _run(monitor, rng, 2, loss_shift=5.0) == []
    assert monitor.statistics() == {}


def test_non_finite_losses_and_predictions_are_ignored() -> None:
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(_config())
    b = _batch(rng, 1000)
    losses = rng.exponential(0.5, 1000)
    losses[::7] = np.nan
    preds = rng.random(1000)
    preds[::5] = np.inf
    assert monitor.update(losses, preds, b) == []
    assert monitor.n_events == 1000


def test_lengths_must_match_the_batch() -> None:
    monitor = DriftMonitor()
    b = _batch(np.random.default_rng(6), 10)
    with pytest.raises(ValueError, match="one value per example"):
        monitor.update(np.zeros(9), np.zeros(10), b)


def _roundtrip(state: DriftState) -> DriftState:
    buf = io.BytesIO()
    np.savez(buf, **state.arrays)
    buf.seek(0)
    return DriftState(dict(np.load(buf)), json.loads(json.dumps(state.meta)))


def test_state_round_trips_exactly() -> None:
    cfg = _config(features=[7])
    streams = []
    rng = np.random.default_rng(7)
    for i in range(10):
        n = 3000 + 17 * i
        shift = 1.0 if i >= 6 else 0.0
        b = _batch(rng, n, item_offset=500 if i >= 6 else 0, feature_shift=shift)
        streams.append((rng.exponential(0.5, n) + shift, rng.random(n), b))

    reference = DriftMonitor(cfg)
    expected = [d for s in streams for d in reference.update(*s)]

    first = DriftMonitor(cfg)
    got = [d for s in streams[:5] for d in first.update(*s)]
    second = DriftMonitor(cfg)
    second.set_state(_roundtrip(first.get_state()))
    got += [d for s in streams[5:] for d in second.update(*s)]
    assert got == expected
    assert len(expected) >= 2
    assert second.statistics() == reference.statistics()
    assert second.detection_counts() == reference.detection_counts()


def test_state_from_other_settings_is_refused() -> None:
    state = DriftMonitor(_config(features=[7])).get_state()
    with pytest.raises(ValueError, match="settings"):
        DriftMonitor(_config()).set_state(state)
    bad = DriftState(state.arrays, {**state.meta, "format_version": 99})
    with pytest.raises(ValueError, match="format"):
        DriftMonitor(_config(features=[7])).set_state(bad)
