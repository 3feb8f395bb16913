"""The README's configuration reference must list exactly the settings the code has."""

from __future__ import annotations

import re
from pathlib import Path

from service.cli.settings import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_the_code() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start -->\n(.*?)\n?<!-- settings-table:end -->", text, re.S
    )
    assert match, "README.md lost its settings-table markers"
    assert match.group(1).strip() == markdown_table().strip(), (
        "README.md's settings table is stale: regenerate it with "
        "`python -m service settings --markdown` between the settings-table markers"
    )
