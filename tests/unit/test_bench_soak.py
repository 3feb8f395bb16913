"""The soak benchmark's checks: warm-up boundary, RSS flatness, event accounting, report."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.bench import soak
from service.bench.soak import SoakConfig, SoakResult
from service.cli.bench import build_parser


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=50), st.floats(0, 0.99))
def test_warmup_ends_at_the_first_time_the_share_is_consumed(steps: list[int],
                                                             fraction: float) -> None:
    consumed, progress = 0, []
    for i, step in enumerate(steps):
        consumed += step
        progress.append((float(i), float(consumed)))
    end = soak.warmup_end(progress, consumed, fraction)
    if consumed == 0 and fraction > 0:
        return
    assert not math.isnan(end)
    i = int(end)
    assert progress[i][1] >= consumed * fraction
    assert i == 0 or progress[i - 1][1] < consumed * fraction


def test_warmup_never_reached_is_nan() -> None:
    assert math.isnan(soak.warmup_end([(0.0, 10.0)], 100, 0.5))


def test_flatness_only_counts_samples_after_warmup() -> None:
    rss = [(0.0, 100), (1.0, 400), (2.0, 1000), (3.0, 1080), (4.0, 1050)]
    assert soak.rss_flatness_after(rss, 2.0) == pytest.approx(1.08)
    assert soak.rss_flatness_after(rss, 0.0) == pytest.approx(10.8)
    assert math.isnan(soak.rss_flatness_after(rss, 4.0))  # one sample: no verdict
    assert math.isnan(soak.rss_flatness_after(rss, float("nan")))


@given(st.integers(1, 10**8), st.integers(0, 10**6), st.integers(-5, 5))
def test_accounting_passes_only_when_every_event_is_accounted_for(applied: int,
                                                                   rejected: int,
                                                                   delta: int) -> None:
    r = SoakResult(produced=applied + rejected + delta, applied=applied, rejected=rejected)
    assert r.lost == delta
    assert soak.accounting_ok(r) == (delta == 0)


def test_no_events_is_not_a_pass() -> None:
    assert not soak.accounting_ok(SoakResult())


def test_config_validation_says_what_to_change() -> None:
    with pytest.raises(ValueError, match="--events"):
        SoakConfig(events=10)
    with pytest.raises(ValueError, match="--warmup-fraction"):
        SoakConfig(warmup_fraction=1.0)


def test_cli_options() -> None:
    args = build_parser().parse_args(["soak", "--events", "10000000", "--users",
                                      "1000000", "--strategy", "per_event"])
    assert (args.events, args.users, args.strategy) == (10_000_000, 1_000_000, "per_event")
    assert args.func is soak._main
    assert (args.grow, args.floor_window) == (False, 30.0)
    args = build_parser().parse_args(["soak", "--grow", "--floor-window", "12"])
    assert (args.grow, args.floor_window) == (True, 12.0)


def test_steady_rss_ignores_periodic_copies_but_not_growth() -> None:
    # A checkpoint copy of +50% for 2 s every 10 s on a flat floor: the floor is flat.
    flat = [(float(t), 150 if t % 10 in (5, 6) else 100) for t in range(100)]
    floor = soak.steady_rss(flat, window_s=5.0)
    assert {b for t, b in floor if t >= 5} == {100}
    assert soak.rss_flatness_after(flat, 0.0) == 1.5
    assert soak.rss_flatness_after(floor, 5.0) == 1.0
    # A leak lifts the floor too.
    leaking = [(t, b + int(t)) for t, b in flat]
    assert soak.rss_flatness_after(soak.steady_rss(leaking, 5.0), 5.0) > 1.5
    # A window of 0 is the raw series.
    assert soak.steady_rss(flat, 0.0) == flat


def test_bad_env_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["soak", "--freshrec-env", "nope"])
    assert args.func(args) == 2
    assert "FRESHREC_NAME=VALUE" in capsys.readouterr().err


def _result(flat_tail: list[int], lost: int = 0) -> SoakResult:
    rss = [(float(i), b) for i, b in enumerate([50 * 2**20, *flat_tail])]
    return SoakResult(produced=1_000 + lost, applied=990, rejected=10, seconds=2.0,
                      cpu_seconds=1.0, peak_rss_bytes=max(flat_tail), rss=rss,
                      progress=[(0.0, 0.0), (1.0, 500.0), (2.0, 1000.0)],
                      warmup_end_s=1.0, flatness=max(flat_tail) / min(flat_tail))


def test_report_verdicts_and_files(tmp_path: Path) -> None:
    cfg = SoakConfig(out=tmp_path, plot=True)
    good = soak.report(cfg, _result([100 * 2**20, 105 * 2**20, 103 * 2**20]),
                       "freshrec bench soak")
    assert "nothing lost (applied + rejected == produced): PASS" in good
    assert "steady RSS (minimum over 30 s) flat within 10%" in good and "FAIL" not in good
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"
    saved = orjson.loads((tmp_path / "soak.json").read_bytes())
    assert saved["result"]["applied"] == 990
    bad = soak.report(cfg, _result([100 * 2**20, 130 * 2**20], lost=3), "freshrec bench soak")
    assert "produced): FAIL" in bad and "after the first 25% of events: FAIL" in bad
    assert "| 1,003 | 990 | 10 | 3 |" in (tmp_path / "soak.md").read_text()
