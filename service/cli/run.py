"""``freshrec run``: the service."""

from __future__ import annotations

import argparse
import logging
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="consume events, learn online, publish snapshots, serve metrics",
        description=(
            "Runs the freshrec service: consumes the event topic, learns online, "
            "checkpoints its state with the Kafka offsets, publishes validated snapshots "
            "and serves /metrics, /healthz and /readyz. Settings come from FRESHREC_* "
            "environment variables (nested with a double underscore, e.g. "
            "FRESHREC_KAFKA__TOPIC) and an optional TOML file; every setting has a "
            "default that works with deploy/local/stack.sh. See README.md."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (env overrides it)")
    parser.add_argument(
        "--stop-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit after this many seconds without a message (default: run until SIGTERM)",
    )
    parser.add_argument(
        "--print-settings",
        action="store_true",
        help="print the effective settings as JSON and exit",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from service.config import load_settings

    settings = load_settings(args.config)
    if args.print_settings:
        print(settings.model_dump_json(indent=2))
        return 0
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import faulthandler
    import signal

    # `kill -USR1 <pid>` prints every thread's stack to stderr: how to see where a
    # running service is stuck without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    from service.runtime.allocator import tune_allocator
    from service.runtime.job import Job

    tune_allocator()  # before any worker thread exists
    job = Job(settings, stop_when_idle_s=args.stop_when_idle)
    job.install_signal_handlers()
    return job.run()
