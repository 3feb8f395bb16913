"""The shipped alert rules evaluated by the real promtool on replayed series
(``service.bench.alert_replay``, used by ``freshrec bench drift --real``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from service.bench.alert_replay import (
    QUALITY_ALERTS,
    GaugeSample,
    check_alerts,
    minute_series,
    parse_duration,
    promtool_path,
)
from service.bench.drift_real import RealSpec, evaluate_data

pytestmark = pytest.mark.integration

RMSE = ("rmse", "cumulative")
RECENT = ("rmse", "window")


@pytest.fixture(autouse=True)
def _promtool() -> None:
    if promtool_path() is None:
        pytest.fail("promtool is not installed: `apt-get install -y prometheus` ships it "
                    "(deploy/local/bootstrap.sh installs it)")


def samples(recent: list[float], detections_at: tuple[int, ...] = (),
            per_minute: int = 100) -> list[GaugeSample]:
    """One sample a minute: cumulative RMSE 1.0, the given recent RMSE, and a detection
    counted from each minute in ``detections_at``."""
    return [GaugeSample((m + 1) * per_minute, {RMSE: 1.0, RECENT: r},
                        {("adwin", "loss"): sum(m >= d for d in detections_at)})
            for m, r in enumerate(recent)]


def test_a_steady_stream_leaves_every_quality_alert_quiet() -> None:
    verdict = check_alerts(minute_series(samples([1.05] * 60), 100, "biased_mf"))
    assert verdict.minutes == 61
    assert verdict.firing == {a: [] for a in QUALITY_ALERTS}


def test_a_loss_regression_fires_after_its_for_duration_and_only_then() -> None:
    # Recent RMSE 30% over the cumulative one from minute 20 to minute 59.
    recent = [1.0] * 20 + [1.3] * 40 + [1.0] * 20
    verdict = check_alerts(minute_series(samples(recent), 100, "biased_mf"))
    firing = verdict.firing["FreshrecLossRegression"]
    # Pending from the first minute over 1.2x, firing once that held for 15 minutes.
    assert firing and 35 <= firing[0] <= 37 and firing[-1] <= 61
    assert verdict.firing["FreshrecDriftDetected"] == []


def test_a_detection_fires_the_drift_alert_for_ten_minutes() -> None:
    verdict = check_alerts(minute_series(samples([1.0] * 60, detections_at=(30,)), 100,
                                         "biased_mf"))
    firing = verdict.firing["FreshrecDriftDetected"]
    assert firing and 30 <= firing[0] <= 32 and 8 <= len(firing) <= 11
    assert verdict.firing["FreshrecLossRegression"] == []


def test_a_rule_file_promtool_cannot_load_is_an_error_not_a_quiet_verdict(
        tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: (\n")
    with pytest.raises(RuntimeError, match="promtool"):
        check_alerts(minute_series(samples([1.0] * 5), 100, "biased_mf"), [broken])


def test_bench_drift_reports_the_rules_on_each_replayed_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 12_000
    user, item = rng.integers(1, 101, n), rng.integers(1, 51, n)
    value = np.clip(np.round(3 + np.where(user % 2 == 0, 1.5, -1.5) + rng.normal(0, 0.3, n)),
                    1, 5)
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{int(v)}\t{1_700_000_000 + 60 * k}\n"
                            for k, (u, i, v) in enumerate(zip(user, item, value, strict=True))))
    spec = RealSpec.parse(f"movielens:{path}")
    report = evaluate_data(spec, spec.read(), plants=["none", "invert"], reactions=["alert"],
                           overrides={}, batch=500, seed=0, plant_at=0.5, river_events=100,
                           miss_after=5000, events_per_minute=200, log=lambda _line: None)
    assert [(a.plant, a.alert) for a in report.alerts] == [
        (p, a) for p in ("none", "invert") for a in QUALITY_ALERTS]
    for a in report.alerts:
        assert a.events_per_minute == 200 and a.minutes >= n * 0.9 / 200
        assert 0 <= a.false_minutes <= a.firing_minutes <= a.minutes
    # The drift alert fires exactly when some freshrec detector detected, after the plant.
    detected = {r.plant: r.detections for r in report.detections if r.detector == "freshrec-any"}
    drift = {a.plant: a for a in report.alerts if a.alert == "FreshrecDriftDetected"}
    assert detected["invert"] > 0 and drift["invert"].firing_minutes > 0
    assert not math.isnan(drift["invert"].delay)
    assert (drift["none"].firing_minutes > 0) == (detected["none"] > 0)


def test_durations_as_promtool_prints_them() -> None:
    assert [parse_duration(t) for t in ("0s", "59m", "1h", "1d5h34m", "2w", "90s")] == [
        0, 59, 60, 1774, 20_160, 1]
