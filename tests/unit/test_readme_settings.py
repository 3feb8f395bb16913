"""The README's configuration reference must list exactly the settings the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_a_misspelt_or_invalid_setting_is_refused_by_its_variable_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from service.cli import main
    from service.config import SettingsError, load_settings

    monkeypatch.setenv("FRESHREC_LEARNER__N_FACTOR", "3")  # n_factors, misspelt
    monkeypatch.setenv("FRESHREC_KAFKA__BATCH_SIZE", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "FRESHREC_LEARNER__N_FACTOR: no such setting" in message
    assert "FRESHREC_KAFKA__BATCH_SIZE: Input should be greater than or equal to 1" in message
    assert main(["run", "--print-settings"]) == 2
    assert "freshrec settings" in capsys.readouterr().err
