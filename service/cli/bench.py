"""``freshrec bench``: benchmarks that print figures (and save plots).

Each benchmark is a module under ``service.bench`` exposing ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

_BENCHMARKS = ("learners", "decode", "drift", "e2e", "soak", "checkpoint", "strategies")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="run a benchmark and print its table",
        description=(
            "Benchmarks print a table of figures and save a plot under --out. They are "
            "not pass/fail tests: compare the ratios measured in the same run."
        ),
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name in _BENCHMARKS:
        try:
            module = importlib.import_module(f"service.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"service.bench.{name}":
                continue  # benchmark not built yet
            raise
        module.register(sub)
