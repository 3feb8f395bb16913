"""``freshrec bench quality``: real data through the whole pipeline, against River and VW.

A data set (MovieLens, Criteo, Avazu, an implicit event log, or any CSV/JSONL through a
column mapping) is read, ordered by event time and turned into the events a producer
would publish (:mod:`service.readers.replay`: clicks as an impression plus a click 1 s
later). Then, in one run:

1. **freshrec** — the events go through :class:`~service.runtime.pipeline.Pipeline` in
   batches of ``--batch`` messages (the service's ``kafka.batch_size``): decode,
   preprocessing (dedup, admission, holdout, click attribution), the learner with drift
   detection and reactions, the progressive evaluator, all as configured: freshrec's
   defaults with the data kind's model (biased MF for ratings, FTRL for clicks, BPR for
   implicit logs) and ``--settings`` on top; once per update strategy (``per_event`` and
   ``micro_batch``);
2. the examples freshrec learned, traced back to their rows (with freshrec's labels, in
   freshrec's order; holdout rows are left out for every contender alike) are learned by
   **River** (its guide's configurations and its defaults) and **Vowpal Wabbit**, predict
   then learn, one example at a time; on implicit data by a popularity ranker.

Every contender is scored on the same examples by the same code: progressive RMSE / MAE
(ratings), log loss / AUC (clicks), sampled recall@10 / NDCG@10 (implicit). The table
(printed, and written as ``quality.md`` and ``quality.json`` under ``--out``) gives the
cumulative figures, the last window's, examples per CPU second and freshrec's drift
detections and reactions; ``quality-<data>.png`` plots the windowed metric over time.

Figures are not pass/fail: compare contenders within one run. See docs/quality.md.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.bench.quality.overrides import bench_settings, merge, parse_overrides
from service.bench.quality.pipeline_run import PipelineOutcome, run_pipeline
from service.bench.quality.popularity import run_popularity
from service.bench.quality.report import DataReport, as_json, markdown, plot
from service.bench.quality.river_models import RIVER, run_river
from service.bench.quality.scores import ContenderRun, score
from service.bench.quality.sequence import ExampleSequence
from service.bench.quality.vw_models import VW, run_vw
from service.readers import ColumnMapping, Interactions, replay
from service.readers.interactions import KINDS as DATA_KINDS
from service.readers.source import KINDS, DataSpec

FRESHREC = {"freshrec-per-event": "per_event", "freshrec-micro-batch": "micro_batch"}
BASELINES = {"popularity": ("implicit",)}


def contender_kinds() -> dict[str, tuple[str, ...]]:
    """Every contender and the data kinds it runs on."""
    out: dict[str, tuple[str, ...]] = {name: DATA_KINDS for name in FRESHREC}
    out |= {c.name: c.kinds for c in RIVER.values()}
    out |= {c.name: c.kinds for c in VW.values()}
    return out | BASELINES


def default_contenders() -> list[str]:
    opt_in = {c.name for c in RIVER.values() if not c.default}
    opt_in |= {c.name for c in VW.values() if not c.default}
    return [name for name in contender_kinds() if name not in opt_in]


def choose_contenders(text: str | None) -> list[str]:
    """``--contenders``: comma-separated names, ``default`` or ``all``."""
    known = contender_kinds()
    if text is None or text == "default":
        return default_contenders()
    if text == "all":
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown contender(s) {unknown or text!r}; choose from "
                         f"{', '.join(known)} (or 'default', 'all')")
    return names


def rating_range_of(table: Interactions, overrides: dict[str, Any]
                    ) -> tuple[dict[str, Any], str | None]:
    """``overrides`` with the data's own rating range when the file's ratings leave the
    service's default range and ``--settings`` names neither end, and a note saying so.

    The service rejects a rating outside ``[preprocess.rating_min, rating_max]``
    (``value_out_of_range``): a scale other than 0.5-5 stars (Jester's -10..10,
    MovieTweetings' 0..10) would otherwise be judged on the subset that happens to fit.

    >>> t = Interactions.build("ratings", user=["a", "b"], item=["x", "x"],
    ...                        ts_ms=[0, 1], value=[-9.5, 10.0])
    >>> o, note = rating_range_of(t, {})
    >>> o["preprocess"]
    {'rating_min': -9.5, 'rating_max': 10.0}
    >>> note[:70]
    "ratings range over [-9.5, 10] (the service's default range is [0.5, 5]"
    >>> rating_range_of(t, {"preprocess": {"rating_max": 10}})[1] is None
    True
    """
    given = overrides.get("preprocess", {})
    if table.kind != "ratings" or "rating_min" in given or "rating_max" in given:
        return overrides, None
    values = table.target()
    values = values[np.isfinite(values)]
    if not len(values):
        return overrides, None
    lo, hi = float(values.min()), float(values.max())
    default = bench_settings("ratings", {}).preprocess
    if default.rating_min <= lo and hi <= default.rating_max:
        return overrides, None
    if lo == hi:
        return overrides, None
    note = (f"ratings range over [{lo:g}, {hi:g}] (the service's default range is "
            f"[{default.rating_min:g}, {default.rating_max:g}]): preprocess.rating_min={lo:g} "
            f"and preprocess.rating_max={hi:g} for this run (--settings to choose others)")
    return merge(overrides, {"preprocess": {"rating_min": lo, "rating_max": hi}}), note


def run_data(table: Interactions, contenders: list[str], overrides: dict[str, Any],
             batch: int | None, window: int | None, order: str = "pipeline") -> DataReport:
    """Every applicable contender on one data set."""
    kinds = contender_kinds()
    chosen = [c for c in contenders if table.kind in kinds[c]]
    overrides, range_note = rating_range_of(table, overrides)
    base = bench_settings(table.kind, overrides)
    batch_size = batch or base.kafka.batch_size
    rep = replay(table)
    print(f"== {table.name}: {len(table):,} {table.kind} rows, {len(rep):,} messages, "
          f"{base.learner.model} in batches of {batch_size:,}", flush=True)
    pipelines: dict[str, PipelineOutcome] = {}
    runs: list[ContenderRun] = []
    notes: list[str] = [range_note] if range_note else []
    for name in [c for c in chosen if c in FRESHREC]:
        settings = bench_settings(table.kind, overrides,
                                  {"learner": {"strategy": FRESHREC[name]}})
        out = run_pipeline(name, rep, settings, batch_size)
        pipelines[name] = out
        runs.append(out.run)
        print(f"   {name}: {len(out.run):,} examples, {out.run.cpu_seconds:.1f} CPU s",
              flush=True)
    if pipelines:
        first_name, first = next(iter(pipelines.items()))
        seq = first.sequence
        for name, out in pipelines.items():
            if not out.sequence.same_as(seq):
                notes.append(f"{name} learned other examples than {first_name} "
                             f"({len(out.sequence):,} vs {len(seq):,}): the others follow "
                             f"{first_name}'s")
    else:
        seq = ExampleSequence.of_rows(table.target(), table.time_ordered().ts_ms)
    delay = base.preprocess.attribution_window_ms if table.kind == "clicks" else 0
    in_time = seq.by_label_time(delay)
    if table.kind == "clicks" and seq.label_runs() < in_time.label_runs() // 2:
        notes.append(
            f"the examples reached freshrec's learner in {seq.label_runs():,} runs of one "
            f"label ({in_time.label_runs():,} in the order their labels became known): the "
            "pipeline learns a batch's positives before its negatives, so progressive "
            "figures on this order flatter every contender that learns it"
            + ("; River and VW learned them in label-time order (--order label-time)"
               if order == "label-time" else
               "; --order label-time gives River and VW the label-time order as a "
               "reference, a smaller --batch shortens the runs"))
    others = in_time if order == "label-time" else seq
    for name in chosen:
        if name in FRESHREC:
            continue
        if name in RIVER:
            run = run_river(RIVER[name], table, others)
        elif name in VW:
            run = run_vw(VW[name], table, others)
        else:
            run = run_popularity(table, others, batch=batch_size)
        runs.append(run)
        print(f"   {name}: {len(run):,} examples, {run.cpu_seconds:.1f} CPU s", flush=True)
    eval_window = window or base.learner.eval_window
    # A window of at most a tenth of the sequence, so the curve has a shape.
    ranked = [len(r.ranks) for r in runs if r.ranks is not None]
    length = min(ranked) if base.learner.model == "bpr" and ranked else len(seq)
    used = max(1, min(eval_window, length // 10)) if window is None else eval_window
    if used != eval_window:
        notes.append(f"window {used:,} examples (learner.eval_window {eval_window:,} is more "
                     "than a tenth of the sequence)")
    return DataReport(
        name=table.name, kind=table.kind,
        task=next((r.task for r in runs), "regression" if table.kind == "ratings" else
                  "binary"),
        rows=len(table), messages=len(rep), window=used,
        sequence_source=seq.source, ts_ms=seq.ts_ms, runs=runs, order=order,
        scores={r.name: score(r, used) for r in runs}, pipelines=pipelines,
        synthetic_time=table.synthetic_time, max_shift_ms=rep.max_shift_ms,
        settings=base.model_dump(include={"learner", "preprocess", "drift"}), notes=notes)


def main(args: argparse.Namespace) -> int:
    try:
        specs = [DataSpec.parse(d) for d in args.data]
        columns = ColumnMapping.parse(args.columns) if args.columns else None
        overrides = parse_overrides(args.settings or [])
        contenders = choose_contenders(args.contenders)
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        reports = []
        for spec in specs:
            table = spec.read(columns, args.limit)
            reports.append(run_data(table, contenders, overrides, args.batch, args.window,
                                    args.order))
    except (ValueError, FileNotFoundError) as exc:
        print(f"freshrec bench quality: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(reports)
    print("\n" + text + "\n")
    (out / "quality.md").write_text("# freshrec bench quality\n\n" + text + "\n")
    (out / "quality.json").write_bytes(orjson.dumps(as_json(reports),
                                                    option=orjson.OPT_INDENT_2
                                                    | orjson.OPT_SERIALIZE_NUMPY))
    print(f"table: {out / 'quality.md'}, {out / 'quality.json'}")
    if not args.no_plot:
        for rep in reports:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in rep.name)
            print(f"plot: {plot(rep, out / f'quality-{safe}.png')}")
    return 0


_DESCRIPTION = """\
Real data through the whole pipeline, against River and Vowpal Wabbit, in one run.

The data set is read, ordered by event time and turned into the events a producer
would publish (clicks: an impression, plus a click 1 s later for clicked rows). freshrec
runs the events through its Pipeline in batches (decode, dedup, admission, holdout,
click attribution, the learner, drift detection and reactions), with its default
settings, the data kind's model and --settings on top, once per update strategy (a
ratings file whose scale leaves the default 0.5-5 takes its own range unless --settings
names preprocess.rating_min or rating_max). The examples freshrec learned, traced back
to their rows, are then learned in the same order with the same labels by River and
Vowpal Wabbit (predict, then learn). Every contender is scored by the same code, on
the same examples: RMSE/MAE (ratings), log loss/AUC (clicks), sampled recall@10/NDCG@10
(implicit). The table is printed and written to --out as quality.md
and quality.json, with a plot of the windowed metric over time per data set. Figures
are not pass/fail: compare contenders within one run (docs/quality.md).
"""

_EPILOG = """\
data kinds (--data KIND:PATH, repeatable):
  movielens   u.data, ratings.dat or ratings.csv              -> ratings (biased MF)
  criteo      label + 13 integer + 26 categorical TSV         -> clicks (FTRL)
  avazu       train.csv (id, click, hour, C1, ...)            -> clicks (FTRL)
  implicit    events.csv (timestamp,visitorid,event,itemid)   -> implicit (BPR)
  csv, jsonl  any file, through --columns                     -> by the target column

--columns (csv, jsonl; implicit logs in another layout):
  key=column pairs, lists joined with '+':
    user=userId,item=movieId,timestamp=ts,value=rating            (ratings)
    user=uid,item=ad,timestamp=t,label=clicked,context=device+page  (clicks)
    user=u,item=i,timestamp=t,event=type,events=view:click;buy:purchase
  also: user_features=, item_features=, numeric=COL+COL (numbers, not categories),
  time_unit=s|ms|iso (default: told from the values)

--settings (repeatable; later wins; FRESHREC_* variables in the environment are ignored):
  '{"learner": {"n_factors": 10}}'  or  FRESHREC_PREPROCESS__HOLDOUT_FRACTION=0
  or  learner.learning_rate=0.05

contenders (--contenders a,b | default | all):
  %(contenders)s
  (river-fm is left out of 'default': River's FM runs a few hundred examples/s on wide rows)

examples:
  freshrec bench quality --data movielens:ml-100k/u.data
  freshrec bench quality --data criteo:train.txt --limit 100000 --contenders \\
      freshrec-per-event,river-ftrl,vw-ftrl
  freshrec bench quality --data csv:log.csv \\
      --columns user=uid,item=ad,timestamp=t,label=clicked --settings learner.model=fm
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, metavar="KIND:PATH",
                        help=f"a data set; KIND is one of {', '.join(KINDS)} (repeatable)")
    parser.add_argument("--columns", metavar="MAPPING",
                        help="which column holds what, for csv/jsonl (and implicit logs not "
                             "in Retailrocket's layout); see below")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="read only the first N rows of each file")
    parser.add_argument("--settings", action="append", metavar="SETTING",
                        help="freshrec settings for this run: a JSON object or NAME=VALUE "
                             "(repeatable); see below")
    parser.add_argument("--contenders", metavar="NAMES",
                        help="comma-separated contenders, 'default' or 'all' (default: "
                             "every contender that fits the data, river-fm excepted)")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="messages per Pipeline.process call (default: kafka.batch_size, "
                             "5,000, what one poll hands the service)")
    parser.add_argument("--window", type=int, metavar="N",
                        help="examples in the windowed metric (default: learner.eval_window, "
                             "10,000, or a tenth of the sequence when that is less)")
    parser.add_argument("--order", choices=("pipeline", "label-time"), default="pipeline",
                        help="order River and VW learn freshrec's examples in: 'pipeline' "
                             "(default), freshrec's own; 'label-time', when each label "
                             "became known (a click at once, a negative when its attribution "
                             "window closed), the order of a live stream")
    parser.add_argument("--out", default="bench-results",
                        help="folder for quality.md, quality.json and the plots "
                             "(default: bench-results)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quality",
        help="real data through the whole pipeline vs River and Vowpal Wabbit",
        description=_DESCRIPTION,
        epilog=_EPILOG % {"contenders": textwrap.fill(
            ", ".join(contender_kinds()), 86, subsequent_indent="  ", break_on_hyphens=False)},
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=main)
