"""The ``freshrec`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``; this module only
assembles them, so adding a command never touches another's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Module names under service.cli, each defining register(subparsers).
_COMMANDS = ("run", "backfill", "demo", "bench", "snapshots", "settings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freshrec",
        description=(
            "Keeps recommendation models fresh: consumes behaviour events from Kafka, "
            "learns online, publishes validated model snapshots to object storage and "
            "exports metrics for Prometheus."
        ),
        epilog="Run 'freshrec COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"service.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"service.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Benchmarks import heavy libraries; their parser is built only when asked for.
        from service.cli import bench

        bench_args = bench.build_parser().parse_args(argv[1:])
        code: int = bench_args.func(bench_args)
        return code
    parser = build_parser()
    args = parser.parse_args(argv)
    from service.config import SettingsError

    try:
        result: int = args.func(args)
    except SettingsError as exc:
        print(f"freshrec: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
