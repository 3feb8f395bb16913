"""The shipped alerting rules, evaluated by ``promtool`` on a replayed stream.

A replay through :class:`~service.runtime.pipeline.Pipeline` yields, after every batch,
the values the service would export at that moment: the progressive metrics
(``freshrec_progressive_loss``) and the drift detections so far
(``freshrec_drift_detections_total``). This module lays those values out as the series a
Prometheus would scrape, one sample a minute at ``events_per_minute`` learned examples a
minute, writes them into a promtool unit-test file that expects no alert at every minute,
and runs ``promtool test rules`` against the rule files of ``deploy/prometheus/rules``.
Each minute where promtool finds an alert firing is a failure it reports; those are
collected per alert. So the question "do the alert rules stay quiet on this stream?" is
answered by Prometheus's own rule engine, on the rules as shipped, not by a copy of them.

Only the alerts fed by the model's quality are checked (:data:`QUALITY_ALERTS`): the
others watch the runtime (lag, checkpoints, the dead-letter topic), which a replay does
not have.

The rate matters for rules with a duration: a lower rate makes each minute hold fewer
examples, so a ``for: 15m`` clause is met by a shorter stretch of the stream. The default,
1,000 examples a minute (17 a second), is a small service's traffic: the cautious end.

Example
-------
>>> samples = [GaugeSample(5_000, {("rmse", "cumulative"): 1.0, ("rmse", "window"): 1.0}, {}),
...            GaugeSample(9_000, {("rmse", "cumulative"): 1.0, ("rmse", "window"): 1.3},
...                        {("adwin", "loss"): 1})]
>>> series = minute_series(samples, events_per_minute=2_000, model="biased_mf")
>>> [(s.name, s.labels.get("window", s.labels.get("detector")), s.values) for s in series]
... # doctest: +NORMALIZE_WHITESPACE
[('freshrec_progressive_loss', 'cumulative', [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
 ('freshrec_progressive_loss', 'recent', [1.0, 1.0, 1.0, 1.0, 1.0, 1.3]),
 ('freshrec_drift_detections_total', 'adwin', [0.0, 0.0, 0.0, 0.0, 0.0, 1.0])]
>>> parse_duration("1d2h3m")
1563
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.runtime.job import LOSSES

# The alerts whose inputs a replay produces (see the module docstring).
QUALITY_ALERTS = ("FreshrecDriftDetected", "FreshrecLossRegression")
EVENTS_PER_MINUTE = 1_000
RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
LABELS = {"job": "freshrec", "instance": "replay"}


@dataclass(frozen=True, slots=True)
class GaugeSample:
    """What the service exports after a batch, as of ``examples`` learned examples.

    Parameters
    ----------
    examples
        Learned examples so far.
    metrics
        The evaluator's report: ``(metric, window)`` to value, as
        ``ProgressiveEvaluator.report`` gives it (window ``cumulative`` or the windowed one).
    detections
        Drift detections so far per ``(detector, signal)``.
    """

    examples: int
    metrics: dict[tuple[str, str], float]
    detections: dict[tuple[str, str], int]


@dataclass(frozen=True, slots=True)
class Series:
    """One Prometheus series, one value a minute from minute 0."""

    name: str
    labels: dict[str, str]
    values: list[float]

    def selector(self) -> str:
        inner = ", ".join(f'{k}="{v}"' for k, v in {**LABELS, **self.labels}.items())
        return f"{self.name}{{{inner}}}"


@dataclass(slots=True)
class AlertReplay:
    """promtool's verdict on one replayed stream.

    ``firing`` maps each alert of :data:`QUALITY_ALERTS` to the minutes at which it was
    firing (empty: quiet throughout); ``minutes`` is the length of the series.
    """

    minutes: int
    firing: dict[str, list[int]] = field(default_factory=dict)


def minute_series(samples: Sequence[GaugeSample], events_per_minute: int, model: str
                  ) -> list[Series]:
    """The scraped series: at minute ``m``, the newest sample with at most
    ``m * events_per_minute`` examples (the first sample before any is taken), up to the
    first minute that shows the last sample."""
    if events_per_minute < 1:
        raise ValueError(f"events_per_minute must be at least 1, got {events_per_minute}")
    if not samples:
        return []
    minutes = -(-samples[-1].examples // events_per_minute) + 1
    picks: list[GaugeSample] = []
    k = 0
    for m in range(minutes):
        while k + 1 < len(samples) and samples[k + 1].examples <= m * events_per_minute:
            k += 1
        picks.append(samples[k])
    out: list[Series] = []
    metric_keys = sorted({key for s in samples for key in s.metrics if key[0] in LOSSES},
                         key=lambda key: (key[0], key[1] != "cumulative"))
    for metric, window in metric_keys:
        label = "cumulative" if window == "cumulative" else "recent"
        out.append(Series("freshrec_progressive_loss",
                          {"model": model, "metric": metric, "window": label},
                          [float(p.metrics.get((metric, window), float("nan"))) for p in picks]))
    for detector, signal in sorted({key for s in samples for key in s.detections}):
        out.append(Series("freshrec_drift_detections_total",
                          {"detector": detector, "signal": signal},
                          [float(p.detections.get((detector, signal), 0)) for p in picks]))
    return out


def _values(values: Sequence[float]) -> str:
    # promtool's expanding notation: '_' is a missing sample, and NaN is written 'NaN'.
    return " ".join("_" if v != v else repr(float(v)) for v in values)


def promtool_unit_test(series: Sequence[Series], rule_files: Sequence[Path],
                       alerts: Sequence[str] = QUALITY_ALERTS) -> dict[str, object]:
    """A promtool unit test expecting none of ``alerts`` at any minute of ``series``."""
    minutes = max((len(s.values) for s in series), default=0)
    checks = [{"eval_time": f"{m}m", "alertname": a, "exp_alerts": []}
              for m in range(minutes) for a in alerts]
    return {
        "rule_files": [str(p) for p in rule_files],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s.selector(), "values": _values(s.values)}
                             for s in series],
            "alert_rule_test": checks,
        }],
    }


_FAILED = re.compile(r"alertname: (\w+), time: ([0-9a-z]+),")
_UNITS: dict[str, float] = {"y": 525_600, "w": 10_080, "d": 1_440, "h": 60, "m": 1,
                            "s": 1 / 60, "ms": 1 / 60_000}


def parse_duration(text: str) -> int:
    """Whole minutes of a Prometheus duration as promtool prints it (``1d2h3m``)."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|[ywdhms])", text):
        total += int(number) * _UNITS[unit]
    return int(total)


def promtool_path() -> str | None:
    """``promtool`` on PATH, or None."""
    return shutil.which("promtool")


def check_alerts(series: Sequence[Series], rule_files: Sequence[Path] | None = None,
                 alerts: Sequence[str] = QUALITY_ALERTS) -> AlertReplay:
    """Run promtool on ``series`` and collect the minutes where each alert fired.

    Raises ``FileNotFoundError`` when promtool is not installed and ``RuntimeError``
    when promtool fails for another reason than alerts that fired (a rule that does not
    load, a malformed series).
    """
    promtool = promtool_path()
    if promtool is None:
        raise FileNotFoundError(
            "promtool is not installed: install Prometheus (`apt-get install -y prometheus` "
            "ships it) or put a Prometheus 2.4x promtool on PATH")
    rules = list(rule_files) if rule_files is not None else sorted(RULES_DIR.glob("*.yml"))
    minutes = max((len(s.values) for s in series), default=0)
    result = AlertReplay(minutes, {a: [] for a in alerts})
    if minutes == 0:
        return result
    with tempfile.TemporaryDirectory(prefix="freshrec-alerts-") as tmp:
        path = Path(tmp) / "replay.yml"
        # JSON is YAML, and needs no YAML library: promtool reads it as it is.
        path.write_text(json.dumps(promtool_unit_test(series, rules, alerts)))
        done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                              text=True, timeout=600)
    output = done.stdout + done.stderr
    for alert, when in _FAILED.findall(output):
        result.firing.setdefault(alert, []).append(parse_duration(when))
    if done.returncode != 0 and not any(result.firing.values()):
        raise RuntimeError(f"promtool test rules failed:\n{output.strip()}")
    for times in result.firing.values():
        times.sort()
    return result
