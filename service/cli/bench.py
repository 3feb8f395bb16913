"""``freshrec bench``: benchmarks that print figures (and save plots).

Each benchmark is a module under ``service.bench`` exposing ``register(subparsers)``.
They import heavy libraries (River, scikit-learn, matplotlib), so they are loaded only
when ``freshrec bench`` itself runs: ``freshrec --help`` and ``freshrec run`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

_BENCHMARKS = ("learners", "strategies", "decode", "checkpoint", "drift", "e2e", "soak",
               "quality")
_DESCRIPTION = (
    "Benchmarks print a table of figures and save a plot under --out. They are not "
    "pass/fail tests: compare the ratios measured in the same run."
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="run a benchmark and print its table",
        description=_DESCRIPTION + f" Benchmarks: {', '.join(_BENCHMARKS)}.",
    )
    # Never reached through main(), which hands 'bench ...' to build_parser() directly.
    parser.set_defaults(func=lambda _args: build_parser().parse_args(["--help"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freshrec bench", description=_DESCRIPTION)
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name in _BENCHMARKS:
        importlib.import_module(f"service.bench.{name}").register(sub)
    return parser
