"""``freshrec bench drift --real``: plants, the replay's loss stream, the detectors' rows.

Small rating files made here, so the checks are about mechanics (what is planted where,
which rows the tables have, what the files hold), never about benchmark figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from service.bench.drift_real import (
    ANY,
    DETECTORS,
    PLANTS,
    RealSpec,
    detect,
    evaluate_data,
    plant,
    reaction_settings,
    run_stream,
    score_detections,
)
from service.cli.bench import build_parser
from service.readers import Interactions, replay

T0 = 1_700_000_000


def write_ratings(path: Path, n: int = 12_000, seed: int = 0) -> Path:
    """A u.data file with a strong user effect, so a model learns it within a few
    thousand ratings and a turned-around segment stands out."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(1, 101, n), rng.integers(1, 51, n)
    user_effect = np.where(user % 2 == 0, 1.5, -1.5)
    value = np.clip(np.round(3 + user_effect + 0.5 * (item % 3 - 1) + rng.normal(0, 0.3, n)),
                    1, 5)
    path.write_text("".join(f"{u}\t{i}\t{int(v)}\t{T0 + 60 * k}\n"
                            for k, (u, i, v) in enumerate(zip(user, item, value, strict=True))))
    return path


def small_table(n: int = 400) -> Interactions:
    rng = np.random.default_rng(1)
    return Interactions.build(
        "ratings", user=[f"u{u}" for u in rng.integers(0, 40, n)],
        item=[f"i{i}" for i in rng.integers(0, 30, n)], ts_ms=1000 * np.arange(n),
        value=rng.integers(1, 6, n).astype(float), name="small")


# -- plants ------------------------------------------------------------------------------


def test_items_plant_renames_items_after_the_point_only_and_consistently() -> None:
    t = small_table()
    p = plant(t, "items", at=200, seed=3)
    assert p.item[:200].tolist() == t.item[:200].tolist()
    assert p.value.tolist() == t.value.tolist() and p.user.tolist() == t.user.tolist()
    mapping: dict[str, str] = {}
    for old, new in zip(t.item[200:].tolist(), p.item[200:].tolist(), strict=True):
        assert mapping.setdefault(old, new) == new  # one new id per old id
    assert set(mapping.values()) <= set(t.item.tolist())  # ids of the file, permuted
    assert len(set(mapping.values())) == len(mapping)
    assert sum(a != b for a, b in mapping.items()) > len(mapping) // 2
    assert plant(t, "items", at=200, seed=3).item.tolist() == p.item.tolist()  # seeded
    assert plant(t, "none", at=200, seed=3) is t


def test_invert_plant_reverses_the_scale_for_half_the_users_after_the_point() -> None:
    t = small_table()
    p = plant(t, "invert", at=200, seed=0)
    assert p.value[:200].tolist() == t.value[:200].tolist()
    lo, hi = float(t.value.min()), float(t.value.max())
    after = list(zip(t.user[200:], t.value[200:], p.value[200:], strict=True))
    segment = {u for u, old, new in after if new != old}
    # A user is in the segment for all of their ratings or for none.
    for u, old, new in after:
        assert new == (lo + hi - old if u in segment else old)
    n_users = len(set(t.user.tolist()))
    assert 0 < len(segment) <= n_users // 2
    with pytest.raises(ValueError, match="unknown plant"):
        plant(t, "shuffle", at=0, seed=0)


def test_false_alarms_delay_and_missed_are_counted_against_the_change() -> None:
    hits = np.array([5, 90, 150, 400])
    assert score_detections(hits, 1000, None, 100)[:2] == (4, 4000.0)
    fa, per_1m, delay, missed = score_detections(hits, 1000, 100, 100)
    assert (fa, per_1m, delay, missed) == (2, 20_000.0, 50.0, False)
    assert score_detections(hits, 1000, 200, 100)[2:] == (200.0, True)  # too late
    assert score_detections(np.array([5]), 1000, 200, 100)[3] is True  # none after
    assert score_detections(hits, 150, 200, 100)[3] is None  # never saw the change


# -- the real-data path --------------------------------------------------------------------


def test_replay_plants_a_rise_of_the_loss_and_every_detector_sees_the_same_stream(
        tmp_path: Path) -> None:
    spec = RealSpec.parse(f"movielens:{write_ratings(tmp_path / 'u.data')}")
    table = spec.read()
    at = len(table) // 2
    settings = reaction_settings(spec, {}, "alert")
    runs = {k: run_stream(replay(plant(table, k, at, 0)), settings, 500)
            for k in ("none", "invert")}
    for run in runs.values():
        assert len(run.losses) == len(run.rows) and (run.rows >= 0).all()
        assert np.all(np.diff(run.rows) > 0)  # examples come in time order
    inverted = runs["invert"]
    change = int(np.flatnonzero(inverted.rows >= at)[0])
    before = inverted.losses[change - 1000:change].mean()
    after = inverted.losses[change:change + 1000].mean()
    assert after > 2 * before  # the planted change makes the model's loss worse
    # Up to the plant the two streams are one and the same.
    assert np.array_equal(runs["none"].losses[:change], inverted.losses[:change])
    hits = detect(inverted.losses, settings.drift, river_events=3000)
    assert list(hits) == list(DETECTORS)
    assert hits["freshrec-adwin"][1] == len(inverted.losses)
    assert hits["river-adwin"][1] == 3000 and (hits["river-adwin"][0] < 3000).all()
    own = [a for d, a in inverted.detections if d == "adwin"]
    assert own == hits["freshrec-adwin"][0].tolist()  # offline = the pipeline's own


def test_evaluate_data_has_a_row_per_plant_and_detector(tmp_path: Path) -> None:
    spec = RealSpec.parse(f"movielens:{write_ratings(tmp_path / 'u.data', n=6000)}")
    report = evaluate_data(spec, spec.read(), plants=list(PLANTS), reactions=["alert", "reset"],
                           overrides={}, batch=1000, seed=0, plant_at=0.5, river_events=None,
                           miss_after=2000, log=lambda _line: None)
    psi = ["freshrec-psi-prediction", "freshrec-psi-item_popularity",
           "freshrec-psi-feature_occurrence"]  # the pipeline's, with the default settings
    assert [(r.plant, r.detector) for r in report.detections] == [
        (p, d) for p in PLANTS for d in [*DETECTORS, *psi, ANY]]
    for p in PLANTS:
        rows = {r.detector: r for r in report.detections if r.plant == p}
        # freshrec-any is every freshrec detector at once: at least as many detections as
        # the busiest one, at most their sum, and never later than the quickest.
        own = [rows[d] for d in (*DETECTORS[:2], *psi)]
        assert max(r.detections for r in own) <= rows[ANY].detections
        assert rows[ANY].detections <= sum(r.detections for r in own)
        if p != "none":
            delays = [r.delay for r in own if not math.isnan(r.delay)]
            first = None if math.isnan(rows[ANY].delay) else rows[ANY].delay
            assert first == (min(delays) if delays else None)
    for r in report.detections:
        assert (r.change_at is None) == (r.plant == "none")
        assert (r.missed is None) == (r.plant == "none")
        assert r.false_alarms <= r.detections
    changes = {r.change_at for r in report.detections if r.plant != "none"}
    assert len(changes) == 1 and 0.4 * 6000 < changes.pop() < 0.6 * 6000
    assert [r.plant for r in report.reactions] == list(PLANTS)
    for r in report.reactions:
        assert set(r.rmse) == {"alert", "reset"} and r.reactions["alert"] == 0
    assert report.notes == []  # the pipeline's detections match the offline ones


# -- the command -------------------------------------------------------------------------


def test_command_writes_tables_json_and_plot(tmp_path: Path) -> None:
    ratings = write_ratings(tmp_path / "u.data", n=4000)
    jester = tmp_path / "jester.csv"
    rng = np.random.default_rng(2)
    jester.write_text("user_id,joke_id,rating\n" + "".join(
        f"{u},{j},{r:.2f}\n" for u, j, r in zip(rng.integers(1, 50, 3000),
                                               rng.integers(1, 20, 3000),
                                               rng.uniform(-10, 10, 3000), strict=True)))
    out = tmp_path / "out"
    args = build_parser().parse_args([
        "drift", "--real", f"movielens:{ratings}", "--real", f"jester:{jester}",
        "--plants", "none,items", "--reactions", "adapt", "--batch", "500",
        "--out", str(out)])
    assert args.func(args) == 0
    data = json.loads((out / "drift-real.json").read_text())  # strict JSON: no NaN
    assert [r["name"] for r in data["reports"]] == ["u.data", "jester.csv"]
    jester_report = data["reports"][1]
    assert jester_report["synthetic_time"] is True
    assert len(jester_report["reactions"][0]["rmse"]) == 2  # alert always runs
    # Jester's -10..10 ratings reach the learner: the decoder's range was widened.
    assert jester_report["reactions"][0]["examples"] > 2500
    md = (out / "drift-real.md").read_text()
    assert "| u.data | items | river-page-hinkley |" in md and "RMSE adapt" in md
    assert (out / "drift-real.png").read_bytes()[:4] == b"\x89PNG"


def test_command_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    parser = build_parser()
    ratings = write_ratings(tmp_path / "u.data", n=100)
    for argv, message in [
        (["--real", "criteo:x"], "unknown kind"),
        (["--real", f"movielens:{tmp_path / 'none'}"], "no such file"),
        (["--real", f"movielens:{ratings}", "--plants", "shuffle"], "unknown plant"),
        (["--real", f"movielens:{ratings}", "--reactions", "panic"], "unknown reaction"),
        (["--real", f"movielens:{ratings}", "--plant-at", "1.5"], "--plant-at"),
    ]:
        args = parser.parse_args(["drift", *argv, "--out", str(tmp_path)])
        assert args.func(args) == 2
        assert message in capsys.readouterr().err
