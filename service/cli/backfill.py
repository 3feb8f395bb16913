"""``freshrec backfill``: train from history, then hand over to ``freshrec run``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
data (--data KIND:PATH):
  events      JSON Lines in the event contract (docs/events.md), one event per line,
              taken in the file's order (as its producer published them)
  movielens   u.data / ratings.dat / ratings.csv      -> rating events
  criteo      Criteo TSV                              -> impressions (+ clicks)
  avazu       Avazu train.csv                         -> impressions (+ clicks)
  implicit    an implicit event log (--columns for other layouts)
  csv, jsonl  any file, through --columns (see freshrec bench quality --help)
  Public formats are replayed in time order, as freshrec bench quality does.

where live reading starts (--live-from):
  after-history  the first message of each partition produced after the last history
                 event (Kafka's record timestamps, set when producers send): default
  end            only what is published from now on
  earliest       everything the topic still holds
  an integer     epoch milliseconds: the first message produced at or after it
  A live event that was in the history too is counted as a duplicate (same event_id,
  within the dedup window), never learned twice.

Then run `freshrec run` with the same settings: it loads the checkpoint the backfill
wrote and reads the live topic from the recorded offsets.

examples:
  freshrec backfill --data events:last-month.jsonl
  freshrec backfill --data movielens:ml-1m/ratings.dat --live-from end
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backfill",
        help="train from a file of past events, then hand over to freshrec run",
        description=(
            "Runs past events through the service's pipeline as fast as it goes, then "
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
                        help="the history (kinds below)")
    parser.add_argument("--columns", metavar="MAPPING",
                        help="which column holds what, for csv/jsonl/implicit files")
    parser.add_argument("--limit", type=int, metavar="N", help="read only the first N rows")
    parser.add_argument("--live-from", default="after-history", metavar="WHERE",
                        help="where freshrec run starts reading the live topic "
                             "(default: after-history; see below)")
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


def _live_from(text: str) -> str | int:
    from service.runtime.backfill import LIVE_FROM

    if text in LIVE_FROM:
        return text
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"--live-from {text!r}: use one of {', '.join(LIVE_FROM)} or epoch "
                         "milliseconds") from None


def _run(args: argparse.Namespace) -> int:
    from service.config import load_settings
    from service.runtime.backfill import BackfillRefused, backfill

    settings = load_settings(args.config)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    live_from = _live_from(args.live_from)
    try:
        values = read_history(args.data, args.columns, args.limit)
    except (OSError, ValueError) as exc:
        print(f"freshrec backfill: {exc}", file=sys.stderr)
        return 2
    print(f"backfill: {len(values):,} events from {args.data}", file=sys.stderr)
    try:
        report = backfill(settings, values, live_from=live_from)
    except BackfillRefused as exc:
        print(f"freshrec backfill: {exc}", file=sys.stderr)
        return 2
    print(f"backfill: {report.messages:,} events in {report.seconds:.1f}s: applied "
          f"{report.applied:,}, rejected {report.rejected:,} {report.rejections or ''}, "
          f"deduplicated {report.deduplicated:,}; {report.examples_trained:,} examples "
          "learned")
    for name, value in sorted(report.metrics.items()):
        print(f"  progressive {name}: {value:.4f}")
    if report.snapshot is not None:
        print(f"snapshot {report.snapshot} published ({report.snapshot_decision})")
    else:
        print(f"no snapshot published ({report.snapshot_decision}); freshrec run publishes "
              "one when the gate accepts it")
    print(f"checkpoint written for group {settings.kafka.group_id!r}, topic "
          f"{settings.kafka.topic!r}; freshrec run will read partitions from offsets "
          f"{report.offsets}")
    return 0
