"""Drift statistics and detections reach a real Prometheus, and the drift alert fires.

A ``ServiceMetrics`` registry is served over HTTP on a free port and registered with the
stack's Prometheus; a ``DriftMonitor`` is fed a generated stream whose loss jumps at a
known event, and the metrics are updated once per batch the way the runtime does. The
test then reads the series back through Prometheus's query API.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from prometheus_client import start_http_server

from service.drift import DriftConfig, DriftMonitor
from service.examples import ExampleBatch
from service.observability.metrics import ServiceMetrics

pytestmark = pytest.mark.integration

BATCH = 5_000
CHANGE_AT = 30_000  # the loss mean jumps at this event
DEADLINE_S = 60.0


def _query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _poll(what: str, check: Callable[[], Any]) -> Any:
    """Call check() until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {DEADLINE_S:.0f}s waiting for {what} (last: {last!r})")


def _batch(rng: np.random.Generator, n: int) -> ExampleBatch:
    items = rng.zipf(1.3, n) % 100_000
    return ExampleBatch.from_arrays(rng.integers(1, 10_000, n), items, rng.random(n))


def test_drift_and_loss_series_reach_prometheus(
    prometheus_url: str, prometheus_targets: Callable[[str, str], Any]
) -> None:
    metrics = ServiceMetrics()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        port = server.server_port
        target = f"drift-{uuid.uuid4().hex[:8]}"
        prometheus_targets(target, f"127.0.0.1:{port}")
        sel = f'target="{target}"'
        metrics.set_state("running")

        # ADWIN reacts with 'adapt' here so that the reaction counter is exported too (the
        # default reaction is 'alert').
        monitor = DriftMonitor(DriftConfig.model_validate({"adwin": {"reaction": "adapt"}}))
        rng = np.random.default_rng(2024)
        cumulative_sum = 0.0
        detections = []

        def feed(n_batches: int, shift: float) -> None:
            nonlocal cumulative_sum
            for _ in range(n_batches):
                batch = _batch(rng, BATCH)
                losses = rng.exponential(0.5, BATCH) + shift
                found = monitor.update(losses, rng.random(BATCH), batch)
                # What the runtime does once per batch.
                cumulative_sum += float(losses.sum())
                metrics.examples_trained.inc(BATCH)
                loss = metrics.progressive_loss
                loss.labels("biased_mf", "mae", "cumulative").set(cumulative_sum / monitor.n_events)
                loss.labels("biased_mf", "mae", "recent").set(float(losses.mean()))
                metrics.observe_drift(monitor.statistics(), found)
                for d in found:
                    metrics.drift_reactions.labels(d.detector, d.reaction).inc()
                detections.extend(found)

        feed(CHANGE_AT // BATCH, 0.0)
        assert detections == [], f"false alarms on the stationary part: {detections}"

        # Prometheus must have scraped the pre-drift state (counter at 0) so that the
        # detection shows up as an increase, as it would in production.
        adwin_sel = f'freshrec_drift_detections_total{{{sel}, detector="adwin", signal="loss"}}'
        _poll(
            "the pre-drift scrape (detections counter at 0)",
            lambda: [r for r in _query(prometheus_url, adwin_sel) if float(r["value"][1]) == 0],
        )

        feed(2, 1.0)
        adwin = [d for d in detections if d.detector == "adwin"]
        assert adwin, f"ADWIN missed the change at event {CHANGE_AT}: {detections}"
        # The newer sub-window (5,000 events by default) must hold enough of the change.
        assert CHANGE_AT <= adwin[0].at_event < CHANGE_AT + 3000

        counted = _poll(
            "the ADWIN detection in Prometheus",
            lambda: [r for r in _query(prometheus_url, adwin_sel) if float(r["value"][1]) >= 1],
        )
        assert counted[0]["metric"]["job"] == "freshrec"

        stats = _query(prometheus_url, f"freshrec_drift_statistic{{{sel}}}")
        exported = {(r["metric"]["detector"], r["metric"]["signal"]) for r in stats}
        assert exported == set(monitor.statistics()), exported

        increase = _query(
            prometheus_url,
            f"sum(increase(freshrec_drift_detections_total{{{sel}, signal=\"loss\"}}[5m]))",
        )
        assert increase and float(increase[0]["value"][1]) > 0, increase

        reactions = _poll(
            "the adapt reaction counter",
            lambda: _query(
                prometheus_url,
                f'freshrec_drift_reactions_total{{{sel}, detector="adwin", reaction="adapt"}} >= 1',
            ),
        )
        assert reactions

        recent = _poll(
            "the raised recent loss",
            lambda: _query(
                prometheus_url,
                f'freshrec_progressive_loss{{{sel}, window="recent"}} > 1.2',
            ),
        )
        assert recent[0]["metric"]["metric"] == "mae"

        # The repo's alert rule, loaded by the stack's Prometheus, fires for this target.
        instance = f"127.0.0.1:{port}"
        _poll(
            "the FreshrecDriftDetected alert",
            lambda: _query(
                prometheus_url,
                f'ALERTS{{alertname="FreshrecDriftDetected", instance="{instance}", '
                'alertstate="firing", detector="adwin"}',
            ),
        )
    finally:
        server.shutdown()
        thread.join(timeout=5)
