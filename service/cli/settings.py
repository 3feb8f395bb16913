"""``freshrec settings``: every setting, its environment variable, default and meaning."""

from __future__ import annotations

import argparse
from typing import Any

from service.config import settings_rows


def markdown_table() -> str:
    lines = ["| environment variable | default | meaning |", "|---|---|---|"]
    for var, default, description in settings_rows():
        lines.append(f"| `{var}` | `{default}` | {description.replace('|', '/')} |")
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "settings",
        help="list every setting with its environment variable and default",
        description="Lists every setting: its FRESHREC_* environment variable, default "
        "and meaning. --markdown prints the table that README.md embeds.",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    rows = settings_rows()
    width = max(len(r[0]) for r in rows)
    for var, default, description in rows:
        print(f"{var:<{width}}  {default:<24}  {description}")
    return 0
