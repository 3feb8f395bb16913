"""DriftConfig: environment variables reach nested detector settings; bad values are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.drift import DriftConfig


def test_nested_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_DRIFT__ADWIN__DELTA", "0.01")
    monkeypatch.setenv("FRESHREC_DRIFT__PAGE_HINKLEY__REACTION", "reset")
    monkeypatch.setenv("FRESHREC_DRIFT__PSI__FEATURES", "[5, 3, 5]")
    drift = Settings().drift
    assert drift.adwin.delta == 0.01
    assert drift.page_hinkley.reaction == "reset"
    assert drift.psi.features == [3, 5]


@pytest.mark.parametrize(
    "data",
    [
        {"psi": {"item_buckets": 48}},
        {"psi": {"features": [-1]}},
        {"psi": {"features": list(range(40))}},
        {"adwin": {"reaction": "panic"}},
        {"adwin": {"delta": 2.0}},
        {"adapt_lr_factor": 0.5},
    ],
)
def test_invalid_settings_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DriftConfig.model_validate(data)
