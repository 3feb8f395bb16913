"""``freshrec backfill``: train from history, then hand over to ``freshrec run``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

# The default only: the backfill's module (numpy, Kafka, the learners) loads when it runs.
DEFAULT_SHUFFLE_WINDOW = 10_000

EPILOG = """\
data (--data KIND:PATH):
  events      JSON Lines in the event contract (docs/events.md), one event per line,
              taken in the file's order (as its producer published them)
  movielens   u.data / ratings.dat / ratings.csv      -> rating events
  criteo      Criteo TSV                              -> impressions (+ clicks)
  avazu       Avazu train.csv                         -> impressions (+ clicks)
  implicit    an implicit event log (--columns for other layouts)
  csv, jsonl  any file, through --columns (see freshrec bench quality --help)
  parquet     a Parquet file, through --columns as for csv (timestamp columns may be
              Parquet timestamps; without a zone they are taken as UTC)
  topic       a Kafka topic (--data topic:NAME) on FRESHREC_KAFKA__BOOTSTRAP_SERVERS, from
              --from-offset up to its end when the backfill starts; decoded and validated
              as freshrec run does, rejects copied to the dead-letter topic with reasons
  Public formats are replayed in time order, as freshrec bench quality does.

passes (--passes N):
  Pass 1 runs the history through the whole pipeline (dedup, admission, labels, the
  hold-out, the progressive metrics); that is the state live reading continues from.
  Passes 2..N learn the examples pass 1 produced again (dedup would drop the events
  themselves), mixed within blocks of --shuffle-window examples, seeded by --seed: the
  same history, settings and seed give the same model, bit for bit. An example whose
  user or item row was recycled for another id after it is left out of later passes
  (reported; raise FRESHREC_PREPROCESS__USER_CAPACITY / ITEM_CAPACITY to keep them).
  Pass 1's loss is progressive; later passes' is training loss on seen data.

where live reading starts (--live-from):
  history-end    exactly where the history ended: for --data topic:NAME when NAME is
                 the live topic (FRESHREC_KAFKA__TOPIC), and then the default
  after-history  the first message of each partition produced after the last history
                 event (Kafka's record timestamps, set when producers send): the default
                 for files and other topics
  end            only what is published from now on
  earliest       everything the topic still holds
  an integer     epoch milliseconds: the first message produced at or after it
  A live event that was in the history too is counted as a duplicate (same event_id,
  within the dedup window), never learned twice.

Then run `freshrec run` with the same settings: it loads the checkpoint the backfill
wrote and reads the live topic from the recorded offsets.

examples:
  freshrec backfill --data events:last-month.jsonl
  freshrec backfill --data movielens:ml-1m/ratings.dat --passes 3 --plot passes.png
  freshrec backfill --data topic:freshrec.events --from-offset 1717200000000
  freshrec backfill --data parquet:export.parquet --columns user=uid,item=iid,value=rating
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backfill",
        help="train from past events (a file or a topic), then hand over to freshrec run",
        description=(
            "Runs past events (a file or a topic) through the service's pipeline as fast "
            "as it goes, optionally for several passes, then "
            "writes a checkpoint of the service group (the model, vocabularies, dedup "
            "window, metric windows and drift detectors) with the live topic's offsets "
            "where the history stops. Settings come from FRESHREC_* variables and "
            "--config, as for freshrec run; the group and topic must have no checkpoint "
            "yet."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="KIND:PATH",
                        help="the history: a file or topic:NAME (kinds below)")
    parser.add_argument("--columns", metavar="MAPPING",
                        help="which column holds what, for csv/jsonl/parquet/implicit files")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="read only the first N rows of a file")
    parser.add_argument("--from-offset", default="earliest", metavar="START",
                        help="for topic:NAME, where the history starts: earliest (default) "
                             "or epoch milliseconds (the first message produced then)")
    parser.add_argument("--live-from", default=None, metavar="WHERE",
                        help="where freshrec run starts reading the live topic (default: "
                             "history-end for the live topic's own history, else "
                             "after-history; see below)")
    parser.add_argument("--passes", type=int, default=1, metavar="N",
                        help="epochs over the history (default 1; see below)")
    parser.add_argument("--shuffle-window", type=int, default=DEFAULT_SHUFFLE_WINDOW,
                        metavar="N", help="passes 2..N mix examples within blocks of N "
                        f"(default {DEFAULT_SHUFFLE_WINDOW:,}; 1 keeps time order)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the shuffles (default: FRESHREC_LEARNER__SEED)")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="draw the loss per pass (windowed over --plot-window examples)")
    parser.add_argument("--plot-window", type=int, default=None, metavar="N",
                        help="examples per point of the plot (default: "
                             "FRESHREC_LEARNER__EVAL_WINDOW, the metrics' window)")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (env overrides it)")
    parser.set_defaults(func=_run)


def read_history(data: str, columns: str | None, limit: int | None) -> list[bytes]:
    """The history's event messages in stream order."""
    kind, sep, path = data.partition(":")
    if kind == "events" and sep and path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"--data events:{path}: no such file")
        with file.open("rb") as f:
            lines = [line.rstrip(b"\r\n") for line in f if line.strip()]
        return lines[:limit] if limit is not None else lines
    from service.readers import ColumnMapping
    from service.readers.replay import replay
    from service.readers.source import DataSpec

    spec = DataSpec.parse(data)
    table = spec.read(ColumnMapping.parse(columns) if columns else None, limit)
    return replay(table).values


def _start(text: str, option: str, named: tuple[str, ...]) -> str | int:
    if text in named:
        return text
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"{option} {text!r}: use {' or '.join(named)} or epoch "
                         "milliseconds") from None


def _live_from(text: str | None) -> str | int | None:
    from service.runtime.backfill import LIVE_FROM

    if text is None or text in LIVE_FROM:
        return text
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"--live-from {text!r}: use one of {', '.join(LIVE_FROM)} or epoch "
                         "milliseconds") from None


def _run(args: argparse.Namespace) -> int:
    from service.config import load_settings
    from service.ingest.history import START_POINTS, TopicHistory, TopicHistoryError
    from service.runtime.backfill import BackfillRefused, backfill

    settings = load_settings(args.config)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    live_from = _live_from(args.live_from)
    if args.passes < 1 or args.shuffle_window < 0:
        print("freshrec backfill: --passes must be >= 1 and --shuffle-window >= 0",
              file=sys.stderr)
        return 2
    kind, _, name = args.data.partition(":")
    history: Any
    try:
        if kind == "topic" and name:
            history = TopicHistory(settings.kafka.bootstrap_servers, name,
                                   _start(args.from_offset, "--from-offset", START_POINTS),
                                   extra=settings.kafka.consumer_config)
            print(f"backfill: up to {len(history):,} events from topic {name!r}, offsets "
                  f"{history.start_offsets} to {history.end_offsets}", file=sys.stderr)
        else:
            history = read_history(args.data, args.columns, args.limit)
            print(f"backfill: {len(history):,} events from {args.data}", file=sys.stderr)
    except (OSError, ValueError, TopicHistoryError) as exc:
        print(f"freshrec backfill: {exc}", file=sys.stderr)
        return 2
    try:
        report = backfill(settings, history, live_from=live_from, passes=args.passes,
                          shuffle_window=args.shuffle_window, seed=args.seed)
    except (BackfillRefused, ValueError) as exc:
        print(f"freshrec backfill: {exc}", file=sys.stderr)
        return 2
    finally:
        if isinstance(history, TopicHistory):
            history.close()
    print(f"backfill: {report.messages:,} events in {report.seconds:.1f}s: applied "
          f"{report.applied:,}, rejected {report.rejected:,} {report.rejections or ''}, "
          f"deduplicated {report.deduplicated:,}; {report.examples_trained:,} examples "
          "learned")
    if kind == "topic":
        print(f"  {report.dead_lettered:,} rejects copied to "
              f"{settings.kafka.dead_letter_topic()!r}"
              + (f", {report.undeliverable:,} copies given up (logged)"
                 if report.undeliverable else ""))
    for name_, value in sorted(report.metrics.items()):
        print(f"  progressive {name_}: {value:.4f}")
    for result in report.passes:
        print(f"  {result.describe()}")
    if report.dropped_recycled:
        print(f"  {report.dropped_recycled:,} examples left out of passes 2-{args.passes}: "
              "their user or item row was recycled for another id after them (raise "
              "FRESHREC_PREPROCESS__USER_CAPACITY / ITEM_CAPACITY to keep them)")
    if args.plot:
        from service.runtime.loss_plot import plot_passes

        window = args.plot_window or settings.learner.eval_window
        print(f"  plot of the loss per pass: {plot_passes(report.passes, args.plot, window)}")
    if report.snapshot is not None:
        print(f"snapshot {report.snapshot} published ({report.snapshot_decision})")
    else:
        print(f"no snapshot published ({report.snapshot_decision}); freshrec run publishes "
              "one when the gate accepts it")
    print(f"checkpoint written for group {settings.kafka.group_id!r}, topic "
          f"{settings.kafka.topic!r}; freshrec run will read partitions from offsets "
          f"{report.offsets}")
    return 0
