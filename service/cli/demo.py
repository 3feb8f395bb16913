"""``freshrec demo``: the whole pipeline on the local stack, with live progress."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the service on a generated stream and watch it learn",
        description=(
            "Starts the local stack if needed (Kafka, an S3 server, Prometheus), creates a "
            "fresh topic, starts the service, publishes a generated stream of behaviour "
            "events with known structure and shows live progress until every event is "
            "applied. Ends by printing where the snapshots are and a Prometheus link."
        ),
    )
    parser.add_argument("--events", type=int, default=400_000,
                        help="rating events to publish (default 400000)")
    parser.add_argument("--users", type=int, default=20_000, help="distinct users")
    parser.add_argument("--items", type=int, default=3_000, help="distinct items")
    parser.add_argument("--rate", type=float, default=20_000.0,
                        help="events/s to publish at, so the learning can be watched "
                        "(default 20000; 0 = as fast as possible)")
    parser.add_argument("--no-stack", action="store_true",
                        help="do not start deploy/local/stack.sh; use FRESHREC_* settings")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from service.demo.demo import run_demo

    return run_demo(
        n_events=args.events,
        n_users=args.users,
        n_items=args.items,
        rate=args.rate,
        start_stack=not args.no_stack,
    )
