"""``freshrec bench drift --real KIND:PATH``: the drift detectors on real rating streams.

A ratings file (MovieLens, Jester, or any CSV/JSON Lines file through ``--columns``) is
read in time order and replayed through :class:`~service.runtime.pipeline.Pipeline` as
the events a producer would publish (:mod:`service.readers.replay`), once per *plant*:

``none``
    the stream as it is: every detection is a false alarm;
``items``
    from the plant point on, every item id is replaced by another id of the file (a
    seeded random permutation of the distinct ids): what the model learned about an item
    now belongs to another one, as when a catalogue is re-keyed;
``invert``
    from the plant point on, a segment of users (half of them, drawn at random) rates on
    the reversed scale, ``lo + hi - r`` with ``lo`` and ``hi`` the smallest and largest
    rating in the file: those users' tastes turn around.

The pipeline runs with both loss detectors in ``alert`` mode, which only counts
detections, so the per-example progressive loss it produces is the model's own. On that
same loss stream four detectors run: freshrec's ADWIN and Page-Hinkley with the run's
settings (the service's defaults unless ``--settings`` says otherwise), built as the
drift monitor builds them, and River's ``drift.ADWIN()`` and ``drift.PageHinkley()``
with River's defaults, one ``update`` per event. The pipeline's other detectors (PSI on
the predictions, on item popularity and on side features) get a row each as they ran in
the pipeline, and ``freshrec-any`` is the service as an operator sees it: the first
detection of any freshrec detector. For each stream and detector:

* **false alarms**: detections on the stream with nothing planted, or before the plant
  point, also per million events;
* **delay**: events from the plant to the first detection at or after it;
* **missed**: no detection within ``miss_after`` events of the plant.

The alert run's exported values (progressive metrics, detections so far) are also laid
out as the series Prometheus would scrape, one sample a minute, and the shipped alerting
rules are evaluated on them by ``promtool`` (:mod:`service.bench.alert_replay`): on a
stream with nothing planted they must stay quiet.

Events here are the examples the pipeline learned, in order (held-out events are not
learned and are not in the loss stream). Then each stream is replayed again with the
reaction ``adapt`` and with ``reset`` given to both loss detectors, and the progressive
RMSE of every reaction is reported next to ``alert``'s, so one can see whether a
reaction ever leaves the model worse than only alerting.

Example
-------
>>> t = Interactions.build("ratings", user=["a", "b", "a", "b"], item=["x", "y", "y", "x"],
...                        ts_ms=[1, 2, 3, 4], value=[1.0, 5.0, 4.0, 2.0])
>>> plant(t, "invert", at=2, seed=0).value.tolist() in ([1, 5, 2, 2], [1, 5, 4, 4])
True
>>> moved = plant(t, "items", at=2, seed=0).item.tolist()
>>> moved[:2], sorted(moved[2:]) == sorted(t.item[2:].tolist())
(['x', 'y'], True)
>>> score_detections(np.array([10, 600, 640]), events=1000, change_at=500, miss_after=200)
(1, 2000.0, 100.0, False)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.bench.alert_replay import (
    EVENTS_PER_MINUTE,
    QUALITY_ALERTS,
    GaugeSample,
    check_alerts,
    minute_series,
    promtool_path,
)
from service.bench.measure import BarPanel, format_markdown_table, format_table, save_bar_panels
from service.bench.quality.overrides import bench_settings, merge, parse_overrides
from service.config import Settings
from service.drift.config import DriftConfig
from service.drift.monitor import adwin_from_config, page_hinkley_from_config
from service.readers import ColumnMapping, Interactions, Replay, read_table, replay
from service.readers.source import DataSpec, split_kind_path
from service.runtime.pipeline import BatchOutcome, Pipeline

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PLANTS: dict[str, str] = {
    "none": "nothing planted",
    "items": "item ids permuted from the plant point",
    "invert": "half the users rate on the reversed scale from the plant point",
}
REACTIONS = ("alert", "adapt", "reset")
DETECTORS = ("freshrec-adwin", "freshrec-page-hinkley", "river-adwin", "river-page-hinkley")
# The row of the first detection by any of freshrec's detectors: what an operator sees.
ANY = "freshrec-any"
# The pipeline's names of the two loss detectors, and which offline run each should match.
PIPELINE_DETECTORS = {"adwin": "freshrec-adwin", "page_hinkley": "freshrec-page-hinkley"}
KINDS = ("movielens", "jester", "csv", "jsonl")
# The Jester long file of /work/data (user_id,joke_id,rating; no timestamps, so file
# order with times 1 s apart) and its rating scale, which the decoder must accept.
JESTER_COLUMNS = "user=user_id,item=joke_id,value=rating"
KIND_SETTINGS: dict[str, dict[str, Any]] = {
    "jester": {"preprocess": {"rating_min": -10.0, "rating_max": 10.0}},
}
MISS_AFTER = 20_000


@dataclass(frozen=True, slots=True)
class RealSpec:
    """One ``--real KIND:PATH`` argument.

    >>> RealSpec.parse("jester:/data/jester_ratings_long.csv").settings()
    {'preprocess': {'rating_min': -10.0, 'rating_max': 10.0}}
    """

    kind: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> RealSpec:
        kind, path = split_kind_path(
            text, "--real", KINDS,
            why="the plants change items and ratings, so bench drift replays rating data")
        return cls(kind, path)

    def read(self, columns: ColumnMapping | None = None, limit: int | None = None
             ) -> Interactions:
        """The file's ratings (the first ``limit`` rows), in time order."""
        if self.kind == "jester":
            if not self.path.is_file():
                raise FileNotFoundError(f"--real jester:{self.path}: no such file")
            table = read_table(self.path, ColumnMapping.parse(JESTER_COLUMNS), fmt="csv",
                               limit=limit)
        else:
            table = DataSpec(self.kind, self.path).read(columns, limit)
        if table.kind != "ratings":
            raise ValueError(f"--real {self.kind}:{self.path} holds {table.kind}, not ratings: "
                             "the plants invert ratings, so --columns needs value=COLUMN")
        return table.time_ordered()

    def settings(self) -> dict[str, Any]:
        """Settings the data needs (Jester's -10..10 scale), under ``--settings``."""
        return KIND_SETTINGS.get(self.kind, {})


def plant(table: Interactions, kind: str, at: int, seed: int) -> Interactions:
    """``table`` (in time order) with the change ``kind`` planted from row ``at`` on.

    The draws (which item becomes which, which users form the segment) depend only on
    ``seed`` and the file's ids, so every reaction replays the same planted stream.
    """
    if kind not in PLANTS:
        raise ValueError(f"unknown plant {kind!r}; plants: {', '.join(PLANTS)}")
    if kind == "none":
        return table
    rng = np.random.default_rng([seed, list(PLANTS).index(kind)])
    if kind == "items":
        ids = sorted(set(table.item.tolist()))
        perm = rng.permutation(len(ids))
        to = {old: ids[new] for old, new in zip(ids, perm.tolist(), strict=True)}
        item = table.item.copy()
        item[at:] = [to[i] for i in table.item[at:].tolist()]
        return replace(table, item=item)
    assert table.value is not None
    users = sorted(set(table.user.tolist()))
    segment = {users[k] for k in rng.permutation(len(users))[: len(users) // 2].tolist()}
    value = table.value.copy()
    lo, hi = float(value.min()), float(value.max())
    hit = np.zeros(len(table), dtype=np.bool_)
    hit[at:] = [u in segment for u in table.user[at:].tolist()]
    value[hit] = lo + hi - value[hit]
    return replace(table, value=value)


@dataclass(slots=True)
class StreamRun:
    """One replay through the pipeline.

    Parameters
    ----------
    losses
        The progressive (pre-update) loss of every learned example, in order.
    rows
        The row each example came from (-1 if none matched its event time).
    rmse
        The evaluator's cumulative progressive RMSE at the end.
    detections
        ``(detector, at_event)`` of the pipeline's own detections: ``adwin`` and
        ``page_hinkley`` on the loss, ``psi-<signal>`` for the PSI detectors.
    monitored
        The names of :attr:`detections` that the pipeline ran, detections or not.
    gauges
        What the service would export after each batch (for the alert rules).
    reactions
        Detections the pipeline reacted to with something other than ``alert``.
    seconds
        Wall time of the replay (the first in a process also loads compiled kernels).
    """

    losses: FloatArray
    rows: IntArray
    rmse: float
    detections: list[tuple[str, int]]
    reactions: int
    seconds: float
    monitored: list[str] = field(default_factory=list)
    gauges: list[GaugeSample] = field(default_factory=list)


def run_stream(rep: Replay, settings: Settings, batch: int) -> StreamRun:
    """Replay every message through a fresh pipeline, ``batch`` messages per call, as
    the service's poll loop would; the last open mini-batch is learned at the end."""
    pipeline = Pipeline(settings)
    losses: list[FloatArray] = []
    ts: list[IntArray] = []
    detections: list[tuple[str, int]] = []
    gauges: list[GaugeSample] = []
    reactions = 0
    learned = 0
    started = time.perf_counter()

    def collect(out: BatchOutcome) -> None:
        nonlocal reactions, learned
        losses.append(out.losses)
        ts.append(out.event_ts_ms)
        learned += len(out.losses)
        gauges.append(GaugeSample(learned, pipeline.evaluator.report(),
                                  pipeline.drift.detection_counts()))
        for d in out.drift:
            detections.append((_detection_name(d.detector, d.signal), int(d.at_event)))
            reactions += int(d.reaction != "alert")

    for lo, hi, now in rep.batches(batch):
        collect(pipeline.process(rep.values[lo:hi], now_ms=now))
    collect(pipeline.finish())
    loss = np.concatenate(losses) if losses else np.zeros(0)
    stamps = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    rows = rep.rows_of(stamps, np.zeros(len(stamps)))
    rmse = pipeline.evaluator.report().get(("rmse", "cumulative"), float("nan"))
    monitored = [_detection_name(d, s) for d, s in pipeline.drift.keys]
    return StreamRun(loss, rows, rmse, detections, reactions, time.perf_counter() - started,
                     monitored, gauges)


def _detection_name(detector: str, signal: str) -> str:
    """``adwin`` / ``page_hinkley`` for the loss detectors (the names the offline runs are
    matched by), ``psi-<signal>`` for the others."""
    return detector if signal == "loss" else f"{detector}-{signal}"


def _river_hits(make: Callable[[], Any], values: list[float]) -> IntArray:
    detector = make()
    hits = []
    for i, v in enumerate(values):
        detector.update(v)
        if detector.drift_detected:
            hits.append(i)
    return np.asarray(hits, dtype=np.int64)


def detect(losses: FloatArray, cfg: DriftConfig, river_events: int | None = None
           ) -> dict[str, tuple[IntArray, int]]:
    """Each detector's detections on ``losses``: ``(positions, events it saw)``.

    Non-finite losses are left out, as the drift monitor leaves them out; positions are
    indices into ``losses``. River's detectors see the first ``river_events`` finite
    losses (all when None).
    """
    from river import drift as river_drift

    finite = np.flatnonzero(np.isfinite(losses))
    x = losses[finite]
    out: dict[str, tuple[IntArray, int]] = {
        "freshrec-adwin": (finite[adwin_from_config(cfg.adwin).update(x)], len(losses)),
        "freshrec-page-hinkley": (finite[page_hinkley_from_config(cfg.page_hinkley).update(x)],
                                  len(losses)),
    }
    m = len(x) if river_events is None else min(len(x), river_events)
    seen = int(finite[m - 1]) + 1 if m else 0
    values = x[:m].tolist()
    out["river-adwin"] = (finite[_river_hits(river_drift.ADWIN, values)], seen)
    out["river-page-hinkley"] = (finite[_river_hits(river_drift.PageHinkley, values)], seen)
    return out


def score_detections(hits: IntArray, events: int, change_at: int | None, miss_after: int
                     ) -> tuple[int, float, float, bool | None]:
    """``(false alarms, per million events, delay, missed)`` of one detector on a stream.

    With no change (``change_at`` None) every detection is a false alarm; otherwise those
    before the change are, the delay is from the change to the first detection at or
    after it (NaN if none), and the change is missed when that takes more than
    ``miss_after`` events. Missed is None when the detector saw no event after the change.
    """
    if change_at is None:
        n = len(hits)
        return n, 1e6 * n / max(events, 1), float("nan"), None
    before = int(np.sum(hits < change_at))
    per_1m = 1e6 * before / max(min(change_at, events), 1)
    if events <= change_at:
        return before, per_1m, float("nan"), None
    after = hits[hits >= change_at]
    delay = float(after[0] - change_at) if len(after) else float("nan")
    return before, per_1m, delay, not (len(after) and delay <= miss_after)


@dataclass(slots=True)
class DetectionRow:
    """One detector on one stream."""

    data: str
    plant: str
    detector: str
    events: int
    change_at: int | None
    detections: int
    false_alarms: int
    false_alarms_per_1m: float
    delay: float
    missed: bool | None


@dataclass(slots=True)
class ReactionRow:
    """The pipeline's progressive RMSE on one stream, per reaction of the loss detectors."""

    data: str
    plant: str
    examples: int
    rmse: dict[str, float] = field(default_factory=dict)
    reactions: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class AlertRow:
    """One alerting rule, evaluated by promtool on one stream's exported series.

    ``firing_minutes`` counts the minutes it was firing; ``false_minutes`` those with
    nothing planted yet (all of them on a stream with nothing planted); ``delay`` is the
    number of examples from the plant to the first firing at or after it (NaN if none).
    """

    data: str
    plant: str
    alert: str
    minutes: int
    events_per_minute: int
    firing_minutes: int
    false_minutes: int
    delay: float


@dataclass(slots=True)
class RealReport:
    """Every stream of one data set."""

    name: str
    kind: str
    rows: int
    plant_row: int
    synthetic_time: bool
    detections: list[DetectionRow]
    reactions: list[ReactionRow]
    notes: list[str]
    alerts: list[AlertRow] = field(default_factory=list)


def alert_rows(name: str, kind: str, run: StreamRun, change_at: int | None,
               events_per_minute: int, model: str) -> list[AlertRow]:
    """promtool's verdict on the shipped quality alerts over ``run``'s exported series.

    A minute ``m`` holds examples up to ``m * events_per_minute``; firing in a minute that
    ends before ``change_at`` is false.
    """
    verdict = check_alerts(minute_series(run.gauges, events_per_minute, model))
    rows = []
    for alert in QUALITY_ALERTS:
        minutes = verdict.firing.get(alert, [])
        if change_at is None:
            false, delay = len(minutes), float("nan")
        else:
            false = sum(m * events_per_minute < change_at for m in minutes)
            after = [m * events_per_minute for m in minutes if m * events_per_minute >= change_at]
            delay = float(after[0] - change_at) if after else float("nan")
        rows.append(AlertRow(name, kind, alert, verdict.minutes, events_per_minute,
                             len(minutes), false, delay))
    return rows


def reaction_settings(spec: RealSpec, overrides: dict[str, Any], reaction: str) -> Settings:
    """The run's settings with ``reaction`` for both loss detectors."""
    both = {"drift": {"adwin": {"reaction": reaction}, "page_hinkley": {"reaction": reaction}}}
    return bench_settings("ratings", merge(spec.settings(), overrides), both)


def evaluate_data(spec: RealSpec, table: Interactions, *, plants: Sequence[str],
                  reactions: Sequence[str], overrides: dict[str, Any], batch: int | None,
                  seed: int, plant_at: float, river_events: int | None, miss_after: int,
                  events_per_minute: int | None = None,
                  log: Callable[[str], None] = print) -> RealReport:
    """Every plant of one data set: the detectors on the alert run's loss stream, the
    progressive RMSE of each reaction, and (with ``events_per_minute``, which needs
    promtool) the shipped alert rules on the alert run's exported series."""
    at = int(len(table) * plant_at)
    name = table.name
    det_rows: list[DetectionRow] = []
    react_rows: list[ReactionRow] = []
    alert_table: list[AlertRow] = []
    notes: list[str] = []
    runs_of = ["alert", *[r for r in reactions if r != "alert"]]
    alert_settings = reaction_settings(spec, overrides, "alert")
    size = batch or alert_settings.kafka.batch_size
    for kind in plants:
        rep = replay(plant(table, kind, at, seed))
        runs: dict[str, StreamRun] = {}
        for reaction in runs_of:
            settings = alert_settings if reaction == "alert" else reaction_settings(
                spec, overrides, reaction)
            runs[reaction] = run_stream(rep, settings, size)
            log(f"   {name} / {kind} / {reaction}: {len(runs[reaction].losses):,} examples, "
                f"RMSE {runs[reaction].rmse:.4f}, {runs[reaction].seconds:.1f} s")
        alert = runs["alert"]
        change_at: int | None = None
        if kind != "none":
            after = np.flatnonzero(alert.rows >= at)
            if len(after) == 0:
                notes.append(f"{kind}: no learned example after the plant row {at:,}; "
                             "nothing to detect")
                continue
            change_at = int(after[0])
        hits = detect(alert.losses, alert_settings.drift, river_events)
        for pipeline_name, offline in PIPELINE_DETECTORS.items():
            own = [a for d, a in alert.detections if d == pipeline_name]
            if own != hits[offline][0].tolist():
                notes.append(f"{kind}: the pipeline's own {pipeline_name} detections "
                             f"({len(own)}) differ from {offline} run on its loss stream "
                             f"({len(hits[offline][0])})")
        # The pipeline's other detectors, as they ran in it, then all of freshrec's as one.
        events = len(alert.losses)
        for other in alert.monitored:
            if other not in PIPELINE_DETECTORS:
                hits[f"freshrec-{other}"] = (np.asarray(
                    [a for d, a in alert.detections if d == other], dtype=np.int64), events)
        freshrec = [h for d, (h, _) in hits.items() if d.startswith("freshrec-")]
        hits[ANY] = (np.unique(np.concatenate(freshrec)).astype(np.int64), events)
        for detector, (positions, seen) in hits.items():
            fa, per_1m, delay, missed = score_detections(positions, seen, change_at,
                                                         miss_after)
            det_rows.append(DetectionRow(name, kind, detector, seen, change_at,
                                         len(positions), fa, per_1m, delay, missed))
        react_rows.append(ReactionRow(
            name, kind, len(alert.losses),
            rmse={r: runs[r].rmse for r in runs_of},
            reactions={r: runs[r].reactions for r in runs_of},
            seconds={r: runs[r].seconds for r in runs_of}))
        if events_per_minute is not None:
            alert_table += alert_rows(name, kind, alert, change_at, events_per_minute,
                                      alert_settings.learner.model)
    return RealReport(name, spec.kind, len(table), at, table.synthetic_time, det_rows,
                      react_rows, notes, alert_table)


# -- presentation ------------------------------------------------------------------------

DETECTION_HEADERS = ["data", "plant", "detector", "events", "change at", "detections",
                     "false alarms", "FA / 1M ev", "delay", "missed"]


def _missed(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def detection_table(reports: Sequence[RealReport]) -> list[list[Any]]:
    """Rows of the detection table (see :data:`DETECTION_HEADERS`)."""
    return [[r.data, r.plant, r.detector, r.events,
             "-" if r.change_at is None else r.change_at, r.detections, r.false_alarms,
             r.false_alarms_per_1m, r.delay, _missed(r.missed)]
            for rep in reports for r in rep.detections]


ALERT_HEADERS = ["data", "plant", "alert", "minutes", "examples / min", "firing min",
                 "false min", "delay"]


def alert_table(reports: Sequence[RealReport]) -> list[list[Any]]:
    """Rows of the alert-rule table (see :data:`ALERT_HEADERS`)."""
    return [[a.data, a.plant, a.alert, a.minutes, a.events_per_minute, a.firing_minutes,
             a.false_minutes, a.delay] for rep in reports for a in rep.alerts]


def reaction_headers(reactions: Sequence[str]) -> list[str]:
    others = [r for r in reactions if r != "alert"]
    return (["data", "plant", "examples"] + [f"RMSE {r}" for r in ("alert", *others)]
            + [f"{r} vs alert %" for r in others] + [f"{r} reactions" for r in others])


def reaction_table(reports: Sequence[RealReport], reactions: Sequence[str]) -> list[list[Any]]:
    """Rows of the reaction table: RMSE per reaction, the change against alert in %, and
    how many detections were reacted to."""
    others = [r for r in reactions if r != "alert"]
    out = []
    for rep in reports:
        for r in rep.reactions:
            base = r.rmse["alert"]
            out.append([r.data, r.plant, r.examples]
                       # Four decimals: reactions move the RMSE by tenths of a percent.
                       + [f"{r.rmse[x]:.4f}" for x in ("alert", *others)]
                       + [f"{100.0 * (r.rmse[x] / base - 1.0):+.2f}" for x in others]
                       + [r.reactions[x] for x in others])
    return out


def markdown(reports: Sequence[RealReport], reactions: Sequence[str], command: str,
             when: str, miss_after: int) -> str:
    """Both tables and the notes as markdown (``drift-real.md``)."""
    parts = [f"Command: `{command}` ({when}).", "",
             "Detectors on the progressive loss of the pipeline in 'alert' mode, the "
             "pipeline's PSI detectors as they ran, and freshrec-any, the first detection "
             "of any freshrec detector. events: "
             "learned examples the detector saw; change at: the first example of the plant; "
             "FA: false alarms (any detection with nothing planted, else before the change); "
             f"delay in events; missed: nothing within {miss_after:,} events of the change.",
             "", format_markdown_table(DETECTION_HEADERS, detection_table(reports)), "",
             "Progressive RMSE of the pipeline with each reaction of both loss detectors "
             "(reactions: detections reacted to, after the cooldown).", "",
             format_markdown_table(reaction_headers(reactions),
                                   reaction_table(reports, reactions))]
    if any(rep.alerts for rep in reports):
        parts += ["", "The shipped alerting rules on the alert run's exported series, evaluated "
                  "by promtool one minute at a time (firing min: minutes firing; false min: "
                  "those before the plant, or all with nothing planted; delay: examples from "
                  "the plant to the first firing).", "",
                  format_markdown_table(ALERT_HEADERS, alert_table(reports))]
    notes = [f"- {rep.name}: {n}" for rep in reports for n in rep.notes]
    notes += [f"- {rep.name}: no timestamps; file order with synthetic times"
              for rep in reports if rep.synthetic_time]
    if notes:
        parts += ["", "Notes:", "", *notes]
    return "\n".join(parts)


def _vs_alert(rep: RealReport, reaction: str) -> dict[str, float]:
    """Per plant, how much higher (%) the RMSE is with ``reaction`` than with alert."""
    return {r.plant: 100.0 * (r.rmse[reaction] / r.rmse["alert"] - 1.0)
            for r in rep.reactions}


def plot(reports: Sequence[RealReport], reactions: Sequence[str], path: Path) -> Path:
    """Per data set: false alarms with nothing planted, the delay after each plant, and
    the RMSE of each reaction against alert."""
    panels: list[BarPanel] = []
    for rep in reports:
        none = [r for r in rep.detections if r.plant == "none"]
        if none:
            panels.append(BarPanel(title=f"{rep.name}: false alarms / 1M events, no plant",
                                   values={r.detector: r.false_alarms_per_1m for r in none},
                                   better="lower"))
        planted = sorted({r.plant for r in rep.detections if r.plant != "none"},
                         key=list(PLANTS).index)
        if planted:
            first = {r.detector: r.delay for r in rep.detections if r.plant == planted[0]}
            extra = ({r.detector: r.delay for r in rep.detections if r.plant == planted[1]}
                     if len(planted) > 1 else {})
            panels.append(BarPanel(title=f"{rep.name}: events from the plant to a detection",
                                   values=first, extra=extra, better="lower",
                                   label=planted[0],
                                   extra_label=planted[1] if len(planted) > 1 else "",
                                   missing_text="none"))
        others = [r for r in reactions if r != "alert"]
        if others and rep.reactions:
            panels.append(BarPanel(title=f"{rep.name}: RMSE vs alert, %",
                                   values=_vs_alert(rep, others[0]), better="lower",
                                   label=others[0],
                                   extra=_vs_alert(rep, others[1]) if len(others) > 1 else {},
                                   extra_label=others[1] if len(others) > 1 else ""))
    return save_bar_panels(path, "freshrec drift detectors on real streams", panels)


# -- command line ------------------------------------------------------------------------


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown {what} {unknown or text!r}; choose from {', '.join(known)}")
    return names


def _no_nan(value: Any) -> Any:
    """``value`` with NaN (no delay, no RMSE) as None: JSON has no NaN, null is portable.

    >>> _no_nan({"delay": float("nan"), "rows": [1.5, float("nan")]})
    {'delay': None, 'rows': [1.5, None]}
    """
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main(args: argparse.Namespace) -> int:
    """``bench drift --real ...``: every data set, table, JSON, markdown and plot."""
    try:
        specs = [RealSpec.parse(t) for t in args.real]
        columns = ColumnMapping.parse(args.columns) if args.columns else None
        overrides = parse_overrides(args.settings or [])
        plants = _names(args.plants, list(PLANTS), "plant(s)")
        reactions = _names(args.reactions, REACTIONS, "reaction(s)")
        if "alert" not in reactions:
            reactions.insert(0, "alert")  # the loss stream and the reference
        if not 0.0 < args.plant_at < 1.0:
            raise ValueError(f"--plant-at must be a fraction in (0, 1), got {args.plant_at}")
        for flag in ("limit", "river_events", "batch", "events_per_minute"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
        events_per_minute: int | None = None if args.no_alerts else args.events_per_minute
        if events_per_minute is not None and promtool_path() is None:
            print("note: promtool is not installed, so the alert rules are not checked "
                  "(install Prometheus, e.g. `apt-get install -y prometheus`, or pass "
                  "--no-alerts)", file=sys.stderr)
            events_per_minute = None
        started = time.perf_counter()
        reports = []
        for spec in specs:
            table = spec.read(columns, args.limit)
            print(f"== {table.name}: {len(table):,} ratings, plants from row "
                  f"{int(len(table) * args.plant_at):,}", flush=True)
            reports.append(evaluate_data(
                spec, table, plants=plants, reactions=reactions, overrides=overrides,
                batch=args.batch, seed=args.seed, plant_at=args.plant_at,
                river_events=args.river_events, miss_after=args.miss_after,
                events_per_minute=events_per_minute,
                log=lambda line: print(line, flush=True)))
    except (ValueError, FileNotFoundError) as exc:
        print(f"freshrec bench drift: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    # The command line that made the tables, for whoever pastes them somewhere.
    if sys.argv[1:3] == ["bench", "drift"]:
        command = " ".join(["freshrec bench drift", *sys.argv[3:]])
    else:
        command = "freshrec bench drift " + " ".join(f"--real {t}" for t in args.real)
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print("\nDetectors on the progressive loss (pipeline in 'alert' mode), the pipeline's PSI "
          "detectors, and freshrec-any (the first of any freshrec detector); delays in events, "
          f"missed: nothing within {args.miss_after:,} events of the change\n")
    print(format_table(DETECTION_HEADERS, detection_table(reports)))
    print("\nProgressive RMSE with each reaction of both loss detectors\n")
    print(format_table(reaction_headers(reactions), reaction_table(reports, reactions)))
    if any(rep.alerts for rep in reports):
        print(f"\nThe shipped alert rules, by promtool, on the exported series at "
              f"{events_per_minute:,} examples a minute (false: firing before the plant, or "
              "at all with nothing planted)\n")
        print(format_table(ALERT_HEADERS, alert_table(reports)))
    for rep in reports:
        for note in rep.notes:
            print(f"note: {rep.name}: {note}")
    print(f"\n({elapsed:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift-real.md").write_text("# freshrec bench drift, real streams\n\n"
                                       + markdown(reports, reactions, command, when,
                                                  args.miss_after) + "\n")
    base = bench_settings("ratings", overrides)
    (out / "drift-real.json").write_text(json.dumps(_no_nan({
        "command": command, "date": when, "seed": args.seed, "plant_at": args.plant_at,
        "miss_after": args.miss_after, "river_events": args.river_events,
        "drift_settings": base.drift.model_dump(), "reports": [asdict(r) for r in reports],
    }), indent=2, allow_nan=False))
    print(f"table: {out / 'drift-real.md'}, {out / 'drift-real.json'}")
    if not args.no_plot:
        print(f"plot: {plot(reports, reactions, out / 'drift-real.png')}")
    return 0


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The real-stream options of ``bench drift`` (on the parser or one of its groups)."""
    parser.add_argument("--real", action="append", metavar="KIND:PATH",
                        help=f"a ratings file to replay (repeatable); KIND is one of "
                             f"{', '.join(KINDS)}. Without it, the synthetic scenarios run")
    parser.add_argument("--columns", metavar="MAPPING",
                        help="for csv/jsonl: which column holds what, e.g. "
                             "user=uid,item=iid,timestamp=ts,value=rating")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="read only the first N rows of each file")
    parser.add_argument("--plants", default=",".join(PLANTS), metavar="NAMES",
                        help="comma-separated changes to plant: " + "; ".join(
                            f"{k}: {v}" for k, v in PLANTS.items()) + " (default: all)")
    parser.add_argument("--plant-at", type=float, default=0.5, metavar="FRACTION",
                        help="where the change is planted, as a fraction of the rows in time "
                             "order (default 0.5: halfway)")
    parser.add_argument("--reactions", default=",".join(REACTIONS), metavar="NAMES",
                        help="reactions of both loss detectors to replay each stream with, "
                             "for the RMSE table (default: alert,adapt,reset; alert always "
                             "runs, its loss stream is what the detectors see)")
    parser.add_argument("--miss-after", type=int, default=MISS_AFTER, metavar="N",
                        help=f"a change not detected within N events is missed (default "
                             f"{MISS_AFTER:,})")
    parser.add_argument("--river-events", type=int, metavar="N",
                        help="feed River's detectors only the first N losses of each stream "
                             "(default: all; River updates one event at a time)")
    parser.add_argument("--events-per-minute", type=int, default=EVENTS_PER_MINUTE,
                        metavar="N",
                        help="for the alert rules: learned examples per minute of the "
                             f"exported series (default {EVENTS_PER_MINUTE:,}; fewer make "
                             "'for:' durations easier to meet)")
    parser.add_argument("--no-alerts", action="store_true",
                        help="skip the check of the alert rules with promtool")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="messages per Pipeline.process call (default: kafka.batch_size)")
    parser.add_argument("--settings", action="append", metavar="SETTING",
                        help="freshrec settings for the replays and freshrec's detectors: a "
                             "JSON object or NAME=VALUE, e.g. drift.adwin.delta=0.001 "
                             "(repeatable; FRESHREC_* variables are ignored)")
