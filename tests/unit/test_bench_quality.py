"""``freshrec bench quality``: settings, contenders on one sequence, scoring, the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from service.bench.quality import choose_contenders, default_contenders, run_data
from service.bench.quality.overrides import bench_settings, parse_overrides
from service.bench.quality.pipeline_run import run_pipeline
from service.bench.quality.scores import ContenderRun, score
from service.bench.quality.sequence import ExampleSequence
from service.cli.bench import build_parser
from service.readers import Interactions, replay

T0 = 1_700_000_000_000


def ratings_table(n: int = 400, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 30, n), rng.integers(0, 20, n)
    value = np.clip(np.round(3 + (user % 3) - (item % 2) + rng.normal(0, 0.5, n)), 1, 5)
    return Interactions.build("ratings", user=[f"u{u}" for u in user],
                              item=[f"i{i}" for i in item],
                              ts_ms=T0 + 60_000 * np.arange(n), value=value, name="r")


def clicks_table(n: int = 400, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    device = rng.choice(["ios", "android"], n)
    label = (rng.random(n) < np.where(device == "ios", 0.5, 0.1)).astype(float)
    return Interactions.build("clicks", user=[f"u{k}" for k in range(n)], item=["ad"] * n,
                              ts_ms=T0 + 2_000 * np.arange(n), label=label,
                              features={"context": {"device": device}}, name="c")


# -- settings -------------------------------------------------------------------------------


def test_overrides_in_every_spelling_merge_in_order() -> None:
    o = parse_overrides(['{"learner": {"n_factors": 8, "seed": 1}}',
                         "FRESHREC_LEARNER__N_FACTORS=4", "preprocess.crosses=[\"item*user\"]",
                         "drift.adwin.reaction=alert"])
    assert o == {"learner": {"n_factors": 4, "seed": 1},
                 "preprocess": {"crosses": ["item*user"]},
                 "drift": {"adwin": {"reaction": "alert"}}}
    for bad in ("learner.n_factors", "[1, 2]", "{not json"):
        with pytest.raises(ValueError, match="--settings"):
            parse_overrides([bad])


def test_settings_come_from_the_command_line_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_LEARNER__N_FACTORS", "3")
    s = bench_settings("ratings", parse_overrides(["learner.l2=0.5"]))
    assert s.learner.n_factors != 3 and s.learner.l2 == 0.5
    assert (bench_settings("clicks").learner.model, bench_settings("implicit").learner.model) \
        == ("ftrl", "bpr")
    assert bench_settings("clicks", {"learner": {"model": "fm"}}).learner.task == "binary"
    with pytest.raises(ValueError, match="learns from binary labels"):
        bench_settings("ratings", {"learner": {"model": "ftrl"}})
    # The nested sections ignore unknown keys: the bench refuses them instead.
    with pytest.raises(ValueError, match=r"did you mean learner\.n_factors"):
        bench_settings("ratings", parse_overrides(["learner.n_factor=3"]))
    with pytest.raises(ValueError, match=r"no setting drift\.adwin\.delt"):
        bench_settings("ratings", parse_overrides(["FRESHREC_DRIFT__ADWIN__DELT=0.1"]))


def test_contender_choice() -> None:
    assert "river-fm" not in default_contenders()
    assert "river-fm" in choose_contenders("all")
    assert choose_contenders("vw-ftrl, river-ftrl") == ["vw-ftrl", "river-ftrl"]
    with pytest.raises(ValueError, match="unknown contender"):
        choose_contenders("freshrec,vw-ftrl")


# -- one sequence for everyone --------------------------------------------------------------


@pytest.mark.parametrize("make", [ratings_table, clicks_table])
def test_every_contender_learns_freshrecs_examples_in_its_order(make) -> None:
    table = make()
    rep = run_data(table, default_contenders(), {}, batch=100, window=None)
    freshrec = next(r for r in rep.runs if r.name == "freshrec-per-event")
    assert rep.sequence_source == "pipeline"
    # Holdout keeps ~2% out of learning for freshrec: and so for everyone.
    held = next(iter(rep.pipelines.values())).holdout
    assert held > 0 and len(freshrec) == len(table) - held == rep.examples
    others = [r for r in rep.runs if r.library in ("river", "vw")]
    assert len(others) >= 4
    for run in rep.runs:
        assert np.isfinite(rep.scores[run.name].value), run.name
        if run.name == "freshrec-micro-batch":
            # Its last mini-batch is still open when the stream ends (it waits for more
            # examples in the pipeline's state): at most one mini-batch fewer.
            assert len(freshrec) - 256 <= len(run) <= len(freshrec), run.name
            continue
        assert len(run) == len(freshrec), run.name
        assert np.array_equal(run.y, freshrec.y), run.name  # same labels, same order
    # freshrec's figure is its pipeline evaluator's, and the shared scorer agrees with it.
    key = "rmse" if table.kind == "ratings" else "log_loss"
    assert rep.scores["freshrec-per-event"].value == pytest.approx(freshrec.evaluator[key])


def test_label_time_order_gives_the_others_the_same_examples_reordered() -> None:
    table = clicks_table(300)
    contenders = ["freshrec-per-event", "river-logreg"]
    rep = run_data(table, contenders, {}, batch=5000, window=None, order="label-time")
    fresh, river = rep.runs
    assert sorted(fresh.y.tolist()) == sorted(river.y.tolist())
    # One batch of 300 rows: the pipeline emits each impression when its window closes,
    # in impression order, whatever its label (the positives no longer come first, which
    # gave the label away): its order has as many label runs as the rows' own.
    runs = ExampleSequence(np.arange(len(fresh)), fresh.y.astype(np.float32),
                           np.ones(len(fresh), np.float32),
                           np.zeros(len(fresh), np.int64)).label_runs()
    expected = 1 + int(np.count_nonzero(np.diff(fresh.y)))
    assert runs == expected > 10
    assert not any("runs of one label" in note for note in rep.notes)


def test_without_freshrec_the_rows_are_the_sequence() -> None:
    table = ratings_table(100)
    rep = run_data(table, ["river-baseline", "vw-linear"], {}, batch=None, window=10)
    assert rep.sequence_source == "rows"
    assert [len(r) for r in rep.runs] == [100, 100]
    assert np.array_equal(rep.runs[0].y, table.value)


def test_implicit_data_ranks_with_bpr_and_popularity() -> None:
    rng = np.random.default_rng(3)
    n = 600
    table = Interactions.build(
        "implicit", user=[f"u{u}" for u in rng.integers(0, 40, n)],
        item=[f"i{i}" for i in rng.zipf(1.6, n) % 50], ts_ms=T0 + 1000 * np.arange(n),
        event_type=rng.choice(["click", "click", "purchase"], n))
    # Batches of 50 messages: the popularity ranker ranks from its second batch on.
    rep = run_data(table, default_contenders(), {}, batch=50, window=None)
    assert [r.name for r in rep.runs] == ["freshrec-per-event", "freshrec-micro-batch",
                                         "popularity"]
    assert rep.task == "ranking"
    for run in rep.runs:
        assert run.ranks is not None and len(run.ranks) > 0
        assert 0.0 <= rep.scores[run.name].value <= 1.0


def test_pipeline_run_reports_what_it_refused() -> None:
    table = Interactions.build("ratings", user=["u1", "u2", "u3"], item=["i"] * 3,
                               ts_ms=[T0, T0 + 1, T0 + 2], value=[4.0, 9.0, 3.0])
    out = run_pipeline("freshrec-per-event", replay(table),
                       bench_settings("ratings", {"preprocess": {"holdout_fraction": 0}}),
                       batch_size=10, warm_up=False)
    assert list(out.rejected) == ["value_out_of_range"]
    assert out.sequence.rows.tolist() == [0, 2]


def test_a_rating_scale_beyond_the_default_range_is_taken_from_the_data() -> None:
    base = ratings_table(200)
    table = Interactions.build("ratings", user=base.user.tolist(), item=base.item.tolist(),
                               ts_ms=base.ts_ms, value=5.0 * base.target() - 15.0, name="j")
    rep = run_data(table, ["freshrec-per-event"], {}, batch=100, window=None)
    assert rep.pipelines["freshrec-per-event"].rejected == {}
    assert rep.settings["preprocess"]["rating_min"] == -10.0
    assert any("ratings range over [-10, 10]" in n for n in rep.notes)
    # A range given on the command line is the user's: kept, and the rest is refused.
    rep = run_data(table, ["freshrec-per-event"],
                   {"preprocess": {"rating_min": 0.5, "rating_max": 5.0}}, batch=100,
                   window=None)
    assert "value_out_of_range" in rep.pipelines["freshrec-per-event"].rejected
    assert not any("ratings range over" in n for n in rep.notes)


def test_scores_of_known_predictions() -> None:
    y = np.array([1.0, 0.0, 1.0, 0.0])
    run = ContenderRun("x", "vw", "binary", y=y, pred=np.array([0.9, 0.1, 0.8, 0.3]),
                       cpu_seconds=1.0)
    s = score(run, window=2)
    expected = -np.mean(np.log([0.9, 0.9, 0.8, 0.7]))
    assert s.value == pytest.approx(expected) and s.secondary_value == 1.0
    assert s.last_window == pytest.approx(-np.mean(np.log([0.8, 0.7])))
    assert s.curve_x.tolist() == [2, 3, 4]


# -- the command ------------------------------------------------------------------------------


def test_command_writes_table_json_and_plots(tmp_path: Path) -> None:
    ratings = tmp_path / "u.data"
    table = ratings_table(300)
    ratings.write_text("".join(f"{u[1:]}\t{i[1:]}\t{int(v)}\t{t // 1000}\n" for u, i, v, t in
                               zip(table.user, table.item, table.value, table.ts_ms,
                                   strict=True)))
    clicks = tmp_path / "clicks.csv"
    c = clicks_table(300)
    clicks.write_text("uid,ad,time,clicked,device\n" + "".join(
        f"{u},{i},{t},{int(y)},{d}\n" for u, i, t, y, d in
        zip(c.user, c.item, c.ts_ms, c.label, c.features["context"]["device"], strict=True)))
    out = tmp_path / "out"
    args = build_parser().parse_args([
        "quality", "--data", f"movielens:{ratings}", "--data", f"csv:{clicks}",
        "--columns", "user=uid,item=ad,timestamp=time,label=clicked,context=device",
        "--contenders", "freshrec-per-event,river-baseline,vw-mf,river-logreg,vw-ftrl",
        "--settings", "preprocess.holdout_fraction=0", "--batch", "64", "--out", str(out)])
    assert args.func(args) == 0
    md = (out / "quality.md").read_text()
    assert "| freshrec-per-event | freshrec |" in md and "| vw-ftrl | vw |" in md
    data = orjson.loads((out / "quality.json").read_bytes())
    assert [d["kind"] for d in data] == ["ratings", "clicks"]
    for d in data:
        names = [c["name"] for c in d["contenders"]]
        assert names[0] == "freshrec-per-event" and len(names) == 3
        assert {c["examples"] for c in d["contenders"]} == {300}  # holdout off: every row
        assert d["settings"]["preprocess"]["holdout_fraction"] == 0
    for png in ("quality-u.data.png", "quality-clicks.csv.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_command_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    parser = build_parser()
    (tmp_path / "log.csv").write_text("u,i,r\na,b,1\n")
    for argv, message in [
        (["--data", "xlsx:x"], "unknown data kind"),
        (["--data", f"movielens:{tmp_path / 'none'}"], "no such file"),
        (["--data", f"csv:{tmp_path / 'log.csv'}"], "needs --columns"),
        (["--data", "movielens:x", "--contenders", "nope"], "unknown contender"),
    ]:
        args = parser.parse_args(["quality", *argv, "--out", str(tmp_path)])
        assert args.func(args) == 2
        assert message in capsys.readouterr().err
