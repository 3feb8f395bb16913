"""Drift detection through the running service (issue 7), on the real stack.

``freshrec run`` consumes a generated ratings stream whose concept changes abruptly at a
known event (item tastes are redrawn: the model's loss jumps). The stream is sent in
steady chunks and each chunk is waited for (``tests/streams.py``), so the service's
counters after each chunk tell *where in the stream* a detection happened, without timing
anything. A stationary stream of the same shape must raise no alarm. The stack's
Prometheus scrapes the service, and its query API must return the drift statistics and the
progressive loss of that target.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from service.demo.generator import StreamSpec
from tests.service_process import ServiceProcess
from tests.streams import (
    ChunkedStream,
    checkpointed_learner,
    file_storage,
    fresh_topic,
    parse_key,
    prometheus_query,
    sample,
    samples,
    service_env,
    wait_applied,
)

pytestmark = pytest.mark.integration

N_EVENTS = 60_000
CHANGE_AT = 30_000  # stream position of the abrupt concept change
STEP = 500  # events per chunk around the change: the resolution of "when"
# A loss detector must fire at most this many events after the change. Measured through
# the service: one model, both detectors within 2,500; the default shadow stack, ADWIN
# within 2,500 and Page-Hinkley within 4,500: the stack's loss rises less, and ADWIN's
# 'adapt' reaction then speeds its recovery, so Page-Hinkley's cumulative sum grows slower.
DETECT_WITHIN = 5_000
# A small world learns fast: the model's loss has settled well before the change, so the
# change is a clear jump. Same shape for the drifting and the stationary stream.
WORLD = StreamSpec(n_users=400, n_items=150)
LOSS_DETECTORS = ("adwin", "page_hinkley")


def _loss_detections(metrics: dict[str, float]) -> dict[str, float]:
    return {
        d: sample(metrics, "freshrec_drift_detections_total", detector=d, signal="loss")
        for d in LOSS_DETECTORS
    }


def _reactions(metrics: dict[str, float], detector: str) -> dict[str, float]:
    return {
        r: sample(metrics, "freshrec_drift_reactions_total", detector=detector, reaction=r)
        for r in ("alert", "adapt", "reset")
    }


def _labels(key: str) -> dict[str, str]:
    return parse_key(key)[1]


def test_abrupt_change_is_detected_soon_after_it_and_reacted_to(
    kafka_bootstrap: str,
    prometheus_url: str,
    prometheus_targets: Callable[[str, str], Path],
    unique_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    topic = unique_topic()
    stream = ChunkedStream(
        kafka_bootstrap, topic, replace(WORLD, seed=3, drift_at=CHANGE_AT), N_EVENTS
    )
    log_path = tmp_path / "service.log"
    # The 'adapt' reaction is asked for: the default only alerts (docs/quality.md).
    service = ServiceProcess(
        service_env(kafka_bootstrap, topic, file_storage(str(tmp_path / "store")),
                    FRESHREC_DRIFT__ADWIN__REACTION="adapt"), log_path
    ).start()
    try:
        service.wait_ready()
        target = f"drift-svc-{uuid.uuid4().hex[:8]}"
        prometheus_targets(target, service.address)

        # 1. The old concept, up to the change.
        wait_applied(service, stream.send(CHANGE_AT))
        before = service.metrics()
        at_change = _loss_detections(before)
        # Page-Hinkley watches for loss *increases*: the settling loss of a model that is
        # still learning must not trip it. (ADWIN is two-sided; see the stationary tests.)
        assert at_change["page_hinkley"] == 0, at_change

        # 2. The new concept, a chunk at a time, until both loss detectors have fired.
        first_seen: dict[str, int] = {}
        while stream.sent < CHANGE_AT + DETECT_WITHIN and len(first_seen) < len(LOSS_DETECTORS):
            wait_applied(service, stream.send(STEP))
            now = _loss_detections(service.metrics())
            for d in LOSS_DETECTORS:
                if d not in first_seen and now[d] > at_change[d]:
                    first_seen[d] = stream.sent
        assert set(first_seen) == set(LOSS_DETECTORS), (
            f"within {DETECT_WITHIN} events of the change at {CHANGE_AT}, only {first_seen} "
            f"detected it (detections at the change: {at_change})\n{service.log()}"
        )
        print(f"loss detectors fired by stream position (chunks of {STEP}): {first_seen}")
        # first_seen is the end of the chunk in which a detector fired: an upper bound.
        for d, upper in first_seen.items():
            assert CHANGE_AT < upper <= CHANGE_AT + DETECT_WITHIN, (d, upper)

        # 3. The rest of the stream; the service then sits idle with final values.
        wait_applied(service, stream.send(N_EVENTS - stream.sent))
        final = service.metrics()

        # Every detection was reacted to exactly once, with the configured reaction
        # (defaults: ADWIN adapts or, during the cooldown, alerts; Page-Hinkley alerts).
        detections = _loss_detections(final)
        adwin_reactions = _reactions(final, "adwin")
        ph_reactions = _reactions(final, "page_hinkley")
        assert sum(adwin_reactions.values()) == detections["adwin"], (adwin_reactions, detections)
        assert adwin_reactions["reset"] == 0
        assert ph_reactions == {"alert": detections["page_hinkley"], "adapt": 0, "reset": 0}
        # An 'adapt' reaction counted is one the runtime carried out: it logs each boost.
        boosts = re.findall(
            r"drift \(adwin on loss\): learning rate x[0-9.]+ for \d+ examples",
            log_path.read_text(errors="replace"),
        )
        assert len(boosts) == adwin_reactions["adapt"], (boosts, adwin_reactions)
        # The change is adapted to, unless an earlier ADWIN alarm's cooldown still covers
        # it: either way at least one boost was carried out.
        assert adwin_reactions["adapt"] >= 1, adwin_reactions

        # 4. Prometheus scraped the same values: drift statistics and progressive loss.
        sel = f'target="{target}"'
        expected_stats = samples(final, "freshrec_drift_statistic")
        expected_loss = samples(final, "freshrec_progressive_loss")
        assert {_labels(k)["window"] for k in expected_loss} == {"cumulative", "recent"}

        def scraped(name: str, expected: dict[str, float]) -> bool:
            got = {
                tuple(sorted((k, v) for k, v in r["metric"].items()
                             if k not in ("__name__", "job", "instance", "target"))):
                float(r["value"][1])
                for r in prometheus_query(prometheus_url, f"{name}{{{sel}}}")
            }
            want = {tuple(sorted(_labels(k).items())): v for k, v in expected.items()}
            return got.keys() == want.keys() and all(
                math.isclose(got[k], want[k], rel_tol=1e-9, abs_tol=1e-12) for k in want
            )

        service.wait_until(
            "Prometheus to return the service's final drift statistics",
            lambda: scraped("freshrec_drift_statistic", expected_stats), timeout=60,
        )
        service.wait_until(
            "Prometheus to return the service's final progressive loss",
            lambda: scraped("freshrec_progressive_loss", expected_loss), timeout=60,
        )
        # The default model is a shadow stack: each member's own loss is exported.
        members = samples(final, "freshrec_shadow_member_loss")
        assert {_labels(k)["member"] for k in members} == {
            "main", "shadow-1", "shadow-2", "shadow-3"}, members
        assert all(math.isfinite(v) and v > 0 for v in members.values()), members
        service.wait_until(
            "Prometheus to return each shadow member's loss",
            lambda: scraped("freshrec_shadow_member_loss", members), timeout=60,
        )
        found = prometheus_query(
            prometheus_url,
            f'sum(freshrec_drift_detections_total{{{sel}, signal="loss"}})',
        )
        assert found and float(found[0]["value"][1]) == sum(detections.values()), found
    finally:
        code = service.terminate()
    assert code == 0, service.log()


# -- reactions and the event order ---------------------------------------------------------


def test_an_adapt_reaction_leaves_the_model_a_function_of_the_events(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    # The drifting stream up to a little after the change: ADWIN adapts at least once.
    n = CHANGE_AT + 6_000
    topic = unique_topic()
    ChunkedStream(kafka_bootstrap, topic, replace(WORLD, seed=3, drift_at=CHANGE_AT), n).send(n)
    models = []
    for batch_size in ("1000", "1700"):
        env = service_env(kafka_bootstrap, topic, file_storage(str(tmp_path / batch_size)),
                          FRESHREC_KAFKA__BATCH_SIZE=batch_size,
                          FRESHREC_DRIFT__ADWIN__REACTION="adapt")
        service = ServiceProcess(env, tmp_path / f"service-{batch_size}.log").start()
        try:
            wait_applied(service, n)
            adapted = sample(service.metrics(), "freshrec_drift_reactions_total",
                             detector="adwin", reaction="adapt")
        finally:
            code = service.terminate()
        if code != 0 or adapted < 1:  # not the failure this test is about: fail outright
            pytest.fail(f"batch size {batch_size}: exit {code}, {adapted} adapt reactions\n"
                        + service.log())
        offsets, arrays = checkpointed_learner(env)
        if offsets != {0: n}:
            pytest.fail(f"the final checkpoint covers {offsets}, not {{0: {n}}}")
        models.append(arrays)
    a, b = models
    assert a.keys() == b.keys()
    differ = sorted(k for k in a if not np.array_equal(a[k], b[k], equal_nan=True))
    assert not differ, f"batch sizes 1000 and 1700 learned different {differ}"


# -- a stationary stream ------------------------------------------------------------------


@dataclass(frozen=True)
class StationaryRun:
    metrics: dict[str, float]
    log: str


@pytest.fixture(scope="module")
def stationary_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StationaryRun]:
    """The service over a stationary stream shaped like the drifting one (another seed),
    run once for the tests below; its final metrics and log."""
    tmp = tmp_path_factory.mktemp("stationary")
    with fresh_topic(kafka_bootstrap, "stationary") as topic:
        stream = ChunkedStream(kafka_bootstrap, topic, replace(WORLD, seed=4), N_EVENTS)
        service = ServiceProcess(
            service_env(kafka_bootstrap, topic, file_storage(str(tmp / "store"))),
            tmp / "service.log",
        ).start()
        try:
            service.wait_ready()
            wait_applied(service, stream.send(N_EVENTS))
            metrics = service.metrics()
        finally:
            code = service.terminate()
        assert code == 0, service.log()
        yield StationaryRun(metrics, (tmp / "service.log").read_text(errors="replace"))


def test_stationary_stream_trips_no_page_hinkley_or_psi_alarm(
    stationary_run: StationaryRun,
) -> None:
    m = stationary_run.metrics
    detections = samples(m, "freshrec_drift_detections_total")
    # Every detector exported its counter (at 0 before any detection) ...
    assert {_labels(k)["detector"] for k in detections} == {"adwin", "page_hinkley", "psi"}
    # ... and the ones that watch for a worse loss or a shifted input never fired.
    assert sample(m, "freshrec_drift_detections_total", detector="page_hinkley") == 0, detections
    assert sample(m, "freshrec_drift_detections_total", detector="psi") == 0, detections
    # PSI was computed (its windows filled), it just stayed below the threshold.
    psi = samples(m, "freshrec_drift_statistic", detector="psi")
    assert psi and all(0 < v < 0.25 for v in psi.values()), psi


def test_stationary_stream_trips_no_adwin_alarm(stationary_run: StationaryRun) -> None:
    fired = sample(stationary_run.metrics, "freshrec_drift_detections_total", detector="adwin")
    assert fired == 0, f"ADWIN reported {fired:g} drifts of the loss on a stationary stream"
    assert "drift (adwin on loss)" not in stationary_run.log
