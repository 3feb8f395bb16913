"""The table (markdown and JSON) and the plot of a quality run.

One :class:`DataReport` per data set: what the replay sent, what freshrec's pipeline did
with it (rejections, holdout, labels checked against the rows, the labeler's counters),
and per contender the progressive metric over the shared sequence, the secondary metric,
the metric over the last window, examples per CPU second, and freshrec's drift
detections with their reactions. The plot draws each contender's windowed metric over
the sequence, against event time when the data set has real timestamps.

Example
-------
>>> import numpy as np
>>> from service.bench.quality.scores import ContenderRun, score
>>> run = ContenderRun("river-baseline", "river", "regression", y=np.array([4.0, 3.0]),
...                    pred=np.array([3.0, 3.0]), cpu_seconds=0.001)
>>> rep = DataReport("u.data", "ratings", "regression", rows=2, messages=2, window=2,
...                  sequence_source="rows", ts_ms=np.array([0, 1000]), runs=[run],
...                  scores={"river-baseline": score(run, 2)})
>>> print(markdown([rep]).splitlines()[-1])
| river-baseline | river |  | 2 | 0.7071 | 0.5000 | 0.7071 | 2,000 | — |
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.bench.quality.pipeline_run import PipelineOutcome
from service.bench.quality.scores import METRICS, ContenderRun, Scores


@dataclass(slots=True)
class DataReport:
    """Everything measured on one data set."""

    name: str
    kind: str
    task: str
    rows: int
    messages: int
    window: int
    sequence_source: str
    ts_ms: npt.NDArray[np.int64]
    runs: list[ContenderRun]
    scores: dict[str, Scores]
    pipelines: dict[str, PipelineOutcome] = field(default_factory=dict)
    synthetic_time: bool = False
    max_shift_ms: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    order: str = "pipeline"

    @property
    def examples(self) -> int:
        return len(self.ts_ms)


# What a non-zero labeler counter means for the figures.
COUNTER_NOTES = {
    "features_truncated": "impressions waiting for their window keep only "
    "preprocess.max_pending_features side features (the rest is lost for learning, for "
    "positives and negatives alike); set max_pending_features to the data's width",
    "impressions_merged": "repeated impressions of a user-item pair inside the attribution "
    "window became one example",
    "late_clicks": "clicks after their impression's window had closed: that impression was "
    "already learned as a negative",
    "pending_evicted": "max_pending was full: impressions became negatives early",
    "impressions_absorbed": "impressions that arrived after their click",
}


def _fmt(value: float, digits: int = 4) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def drift_summary(run: ContenderRun, resets: int = 0) -> str:
    """``"3: adwin/loss adapt x1, psi/prediction alert x2"`` (— when not monitored)."""
    if run.library != "freshrec":
        return "—"
    if not run.drift:
        return "0"
    counts = Counter(f"{d['detector']}/{d['signal']} {d['reaction']}" for d in run.drift)
    text = f"{len(run.drift)}: " + ", ".join(f"{k} x{v}" for k, v in counts.most_common())
    if resets:
        text += f" ({resets} reset to the reset point)"
    return text


def pipeline_problems(out: PipelineOutcome) -> list[str]:
    """What a reader of freshrec's figures must know about how the pipeline got them."""
    problems = []
    if out.rejected:
        problems.append("rejected " + ", ".join(
            f"{reason} x{n} (e.g. {detail[:120]})" for reason, (n, detail) in out.rejected.items()))
    if out.label_mismatches:
        problems.append(f"{out.label_mismatches:,} labels differ from their rows'")
    if out.rows_learned_twice:
        problems.append(f"{out.rows_learned_twice:,} rows learned twice")
    if out.merged_positives:
        problems.append(f"{out.merged_positives:,} positives are an earlier impression of "
                        "a pair clicked later in its window (repeated impressions merged; "
                        "every contender learned that row as a positive)")
    if out.unmapped:
        problems.append(f"{out.unmapped:,} examples trace back to no row (left out of "
                        "freshrec's scores too)")
    problems += [f"{k} {int(v):,} ({COUNTER_NOTES.get(k, 'labeler counter')})"
                 for k, v in out.counters.items()]
    return problems


def _data_lines(rep: DataReport) -> list[str]:
    lines = [f"## {rep.name} ({rep.kind})", ""]
    time_note = ("synthetic times in file order" if rep.synthetic_time else
                 "time order" + (f", ties spread up to {rep.max_shift_ms} ms"
                                 if rep.max_shift_ms else ""))
    lines.append(f"- {rep.rows:,} rows → {rep.messages:,} messages ({time_note})")
    if rep.sequence_source == "pipeline":
        first = next(iter(rep.pipelines.values()))
        how = ("in its order" if rep.order == "pipeline" else
               "in its order (River and VW: in the order their labels became known)")
        lines.append(f"- every contender learned the {rep.examples:,} examples freshrec's "
                     f"pipeline learned, {how}, with its labels ({first.holdout:,} "
                     f"held out for the snapshot gate; {first.rows_without_example:,} rows "
                     "gave no example)")
        said: list[str] | None = None
        for name, out in rep.pipelines.items():
            problems = pipeline_problems(out)
            if problems == said:
                lines.append(f"- {name}: the same")
                continue
            said = problems
            lines.append(f"- {name}: " + ("; ".join(problems) if problems else
                                          "no rejection, labels equal the rows'"))
    else:
        lines.append(f"- no freshrec contender: every contender learned the {rep.examples:,} "
                     "rows in time order with their own labels")
    lines.extend(f"- {note}" for note in rep.notes)
    metric, secondary = METRICS[rep.task]
    lines += ["", f"| contender | library | config | examples | {metric} | {secondary} | "
              f"{metric} last {rep.window:,} | examples/s (CPU) | drift detections |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run in rep.runs:
        s = rep.scores[run.name]
        pipe = rep.pipelines.get(run.name)
        n = f"{len(run):,}"
        if run.task == "ranking":
            n += f" ({0 if run.ranks is None else len(run.ranks):,} ranked)"
        lines.append(
            f"| {run.name} | {run.library} | {run.config} | {n} | {_fmt(s.value)} | "
            f"{_fmt(s.secondary_value)} | {_fmt(s.last_window)} | "
            f"{run.examples_per_second:,.0f} | "
            f"{drift_summary(run, pipe.resets_requested if pipe else 0)} |")
    return lines


def markdown(reports: list[DataReport]) -> str:
    """The run's tables, one section per data set."""
    lines: list[str] = []
    for rep in reports:
        if lines:
            lines.append("")
        lines += _data_lines(rep)
    return "\n".join(lines)


def as_json(reports: list[DataReport]) -> list[dict[str, Any]]:
    """The figures (and each curve) as JSON-able dicts."""
    out = []
    for rep in reports:
        contenders = []
        for run in rep.runs:
            s = rep.scores[run.name]
            entry: dict[str, Any] = {
                "name": run.name, "library": run.library, "config": run.config,
                "examples": len(run), "metric": s.metric, "value": s.value,
                "secondary": s.secondary, "secondary_value": s.secondary_value,
                "last_window": s.last_window, "cpu_seconds": run.cpu_seconds,
                "examples_per_second": run.examples_per_second, "timed": run.timed,
                "curve": {"examples": s.curve_x.tolist(), "value": s.curve_y.tolist()},
            }
            if run.library == "freshrec":
                pipe = rep.pipelines[run.name]
                entry |= {"messages": run.messages, "drift": run.drift,
                          "evaluator": run.evaluator, "holdout": pipe.holdout,
                          "rejected": {k: n for k, (n, _) in pipe.rejected.items()},
                          "label_mismatches": pipe.label_mismatches,
                          "merged_positives": pipe.merged_positives,
                          "rows_learned_twice": pipe.rows_learned_twice,
                          "rows_without_example": pipe.rows_without_example,
                          "resets_requested": pipe.resets_requested,
                          "labeler": pipe.counters}
            contenders.append(entry)
        out.append({"data": rep.name, "kind": rep.kind, "task": rep.task, "rows": rep.rows,
                    "messages": rep.messages, "examples": rep.examples, "window": rep.window,
                    "sequence": rep.sequence_source, "order": rep.order,
                    "synthetic_time": rep.synthetic_time,
                    "settings": rep.settings, "notes": rep.notes, "contenders": contenders})
    return out


def plot(rep: DataReport, path: Path) -> Path:
    """Each contender's windowed metric over the sequence, saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, _ = METRICS[rep.task]
    fig, ax = plt.subplots(figsize=(10, 5))
    use_time = not rep.synthetic_time and rep.examples > 0
    for run in rep.runs:
        s = rep.scores[run.name]
        if not len(s.curve_x):
            continue
        if use_time:
            at = rep.ts_ms[np.minimum(s.curve_x, rep.examples) - 1]
            xs: Any = [dt.datetime.fromtimestamp(t / 1000, dt.UTC) for t in at.tolist()]
        else:
            xs = s.curve_x
        style = "-" if run.library == "freshrec" else "--"
        ax.plot(xs, s.curve_y, style, lw=1.2, label=f"{run.name} ({_fmt(s.value)})")
        for d in run.drift:
            if d["reaction"] == "alert":
                continue
            k = min(d["at_event"], rep.examples - 1)
            x: Any = (dt.datetime.fromtimestamp(int(rep.ts_ms[k]) / 1000, dt.UTC) if use_time
                      else d["at_event"])
            ax.axvline(x, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("event time (UTC)" if use_time else "examples learned")
    ax.set_ylabel(f"{metric}, last {rep.window:,} examples")
    ax.set_title(f"freshrec bench quality: {rep.name} — {rep.examples:,} examples "
                 "(dotted: freshrec drift reactions)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
