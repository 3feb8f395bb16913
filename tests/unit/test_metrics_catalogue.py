"""ServiceMetrics: the names the runtime relies on, states, drift export, independence."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.drift import DriftDetection
from service.observability.metrics import SERVICE_STATES, ServiceMetrics

# Attribute name -> exported sample name that the runtime and the alert rules rely on.
REQUIRED = {
    "events_consumed": "freshrec_events_consumed_total",
    "events_applied": "freshrec_events_applied_total",
    "events_rejected": "freshrec_events_rejected_total",
    "events_deduplicated": "freshrec_events_deduplicated_total",
    "dlq_messages": "freshrec_dlq_messages_total",
    "examples_trained": "freshrec_examples_trained_total",
    "updates_skipped_nonfinite": "freshrec_updates_skipped_nonfinite_total",
    "consumer_lag": "freshrec_consumer_lag",
    "event_time_lag_seconds": "freshrec_event_time_lag_seconds_count",
    "update_latency_seconds": "freshrec_update_latency_seconds_count",
    "batch_size": "freshrec_batch_size_count",
    "progressive_loss": "freshrec_progressive_loss",
    "model_version": "freshrec_model_version",
    "last_snapshot_timestamp_seconds": "freshrec_last_snapshot_timestamp_seconds",
    "snapshots_published": "freshrec_snapshots_published_total",
    "snapshots_rejected": "freshrec_snapshots_rejected_total",
    "checkpoint_duration_seconds": "freshrec_checkpoint_duration_seconds_count",
    "last_checkpoint_timestamp_seconds": "freshrec_last_checkpoint_timestamp_seconds",
    "checkpoints_written": "freshrec_checkpoints_written_total",
    "checkpoint_failures": "freshrec_checkpoint_failures_total",
    "drift_statistic": "freshrec_drift_statistic",
    "drift_detections": "freshrec_drift_detections_total",
    "drift_reactions": "freshrec_drift_reactions_total",
    "service_state": "freshrec_service_state",
    "build_info": "freshrec_build_info",
}

LABELS = {
    "events_consumed": {"topic": "events"},
    "events_applied": {"topic": "events"},
    "events_rejected": {"reason": "schema"},
    "dlq_messages": {"outcome": "acked"},
    "consumer_lag": {"topic": "events", "partition": "0"},
    "progressive_loss": {"model": "biased_mf", "metric": "rmse", "window": "recent"},
    "snapshots_rejected": {"reason": "loss_regression"},
    "drift_statistic": {"detector": "adwin", "signal": "loss"},
    "drift_detections": {"detector": "adwin", "signal": "loss"},
    "drift_reactions": {"detector": "adwin", "reaction": "adapt"},
}


def _sample_names(m: ServiceMetrics) -> set[str]:
    return {s.name for f in m.registry.collect() for s in f.samples}


def test_required_attributes_export_the_documented_names() -> None:
    m = ServiceMetrics()
    for attr in REQUIRED:
        metric = getattr(m, attr)
        if attr in ("service_state", "build_info"):
            continue
        child = metric.labels(**LABELS[attr]) if attr in LABELS else metric
        if hasattr(child, "inc"):
            child.inc()
        elif hasattr(child, "observe"):
            child.observe(1.0)
        else:
            child.set(1.0)
    names = _sample_names(m)
    missing = {attr: n for attr, n in REQUIRED.items() if n not in names}
    assert not missing, f"not exported: {missing}"


def test_every_name_is_prefixed_and_labels_are_bounded() -> None:
    m = ServiceMetrics(process_metrics=False)
    forbidden = {"user", "item", "user_id", "item_id", "event_id"}
    for family in m.registry.collect():
        assert family.name.startswith("freshrec_"), family.name
    for metric in vars(m).values():
        labelnames = set(getattr(metric, "_labelnames", ()))
        assert not labelnames & forbidden, f"{metric}: unbounded label {labelnames & forbidden}"


def test_set_state_sets_exactly_one_state() -> None:
    m = ServiceMetrics()
    for name in SERVICE_STATES:
        m.set_state(name)
        values = {
            s.labels["state"]: s.value
            for f in m.registry.collect()
            if f.name == "freshrec_service_state"
            for s in f.samples
        }
        assert values == {s: (1.0 if s == name else 0.0) for s in SERVICE_STATES}


def test_set_state_rejects_unknown_states() -> None:
    with pytest.raises(ValueError, match="unknown service state"):
        ServiceMetrics().set_state("sleeping")


def test_instances_are_independent() -> None:
    a, b = ServiceMetrics(), ServiceMetrics()
    a.examples_trained.inc(5)
    assert a.registry.get_sample_value("freshrec_examples_trained_total") == 5
    assert b.registry.get_sample_value("freshrec_examples_trained_total") == 0


def test_shared_registry_is_used_when_given() -> None:
    registry = CollectorRegistry()
    m = ServiceMetrics(registry, process_metrics=False)
    m.snapshots_published.inc()
    assert b"freshrec_snapshots_published_total 1.0" in generate_latest(registry)


def test_build_info_carries_the_version() -> None:
    from service import __version__

    m = ServiceMetrics()
    assert m.registry.get_sample_value("freshrec_build_info", {"version": __version__}) == 1.0


def test_observe_drift_sets_statistics_and_counts_detections() -> None:
    m = ServiceMetrics()
    det = DriftDetection("psi", "prediction", 0.4, 10, "alert")
    m.observe_drift({("psi", "prediction"): 0.4, ("adwin", "loss"): 0.7}, [det, det])
    get = m.registry.get_sample_value
    assert get("freshrec_drift_statistic", {"detector": "psi", "signal": "prediction"}) == 0.4
    assert get("freshrec_drift_statistic", {"detector": "adwin", "signal": "loss"}) == 0.7
    assert get("freshrec_drift_detections_total", {"detector": "psi", "signal": "prediction"}) == 2


def test_counters_used_by_alerts_exist_at_zero_before_the_first_event() -> None:
    # increase() in the alert rules ignores a series' first sample, so these must start at 0.
    m = ServiceMetrics()
    get = m.registry.get_sample_value
    assert get("freshrec_dlq_messages_total", {"outcome": "failed"}) == 0.0
    m.observe_drift({("adwin", "loss"): 0.5})
    assert get("freshrec_drift_detections_total", {"detector": "adwin", "signal": "loss"}) == 0
    assert get("freshrec_drift_reactions_total", {"detector": "adwin", "reaction": "reset"}) == 0
