"""Replaying rows as contract events: order, decoding, click pairs and the labels the
pipeline attributes from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from service.bench.quality.overrides import bench_settings
from service.bench.quality.pipeline_run import run_pipeline
from service.events.decode import decode_batch
from service.preprocess.config import PreprocessConfig
from service.readers import (
    ColumnMapping,
    Interactions,
    read_avazu,
    read_criteo_rows,
    read_implicit,
    read_movielens,
    read_table,
    replay,
)
from service.readers.criteo import N_CAT, N_INT
from service.readers.replay import strictly_increasing
from tests.unit.test_readers_avazu import avazu_row, write

T0 = 1_700_000_000_000


def clicks_table(n: int, seed: int = 0) -> Interactions:
    """Clicks where every row is its own user-item pair (no merging), ~30% clicked."""
    rng = np.random.default_rng(seed)
    return Interactions.build(
        "clicks", user=[f"u{k}" for k in range(n)], item=[f"a{k % 7}" for k in range(n)],
        ts_ms=T0 + np.sort(rng.integers(0, 3_600_000, n)),
        label=(rng.random(n) < 0.3).astype(float),
        features={"context": {"device": rng.choice(["ios", "android"], n)}})


def test_time_order_is_stable_and_strict() -> None:
    t = Interactions.build("ratings", user=["a", "b", "c", "d"], item=["x"] * 4,
                           ts_ms=[T0 + 5, T0, T0 + 5, T0], value=[1, 2, 3, 4])
    r = replay(t)
    # Sorted by time, ties in file order: b (T0), d (T0), a (T0+5), c (T0+5).
    assert [orjson.loads(v)["user_id"] for v in r.values] == ["b", "d", "a", "c"]
    assert r.ts_ms.tolist() == [T0, T0 + 1, T0 + 5, T0 + 6]
    assert r.max_shift_ms == 1
    assert strictly_increasing(np.array([3, 3, 3, 3])).tolist() == [3, 4, 5, 6]


def write_formats(tmp: Path) -> dict[str, Interactions]:
    """One small file of every format, read back through its reader."""
    (tmp / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
                                "22\t377\t1\t878887116\n196\t377\t5\t881250949\n")
    ints = ["1", "", "1000", *["0"] * (N_INT - 3)]
    cats = ["68fd1e64", "", *["80e26c9b"] * (N_CAT - 2)]
    (tmp / "criteo.txt").write_text("".join("\t".join([str(k % 2), *ints, *cats]) + "\n"
                                            for k in range(4)))
    avazu = write(tmp / "avazu.csv", [avazu_row(k, k % 2, "14102100", device=f"d{k}")
                                      for k in range(4)])
    (tmp / "log.jsonl").write_bytes(b"".join(orjson.dumps(
        {"u": f"u{k}", "i": "x", "t": 1_700_000_000 + k, "clicked": k % 2,
         "device": "ios", "price": 1.5 * k}) + b"\n" for k in range(4)))
    (tmp / "events.csv").write_text("timestamp,visitorid,event,itemid,transactionid\n"
                                    "1433221332117,1,view,10,\n1433221332118,1,addtocart,10,\n"
                                    "1433221332119,1,transaction,10,7\n")
    mapping = ColumnMapping.parse("user=u,item=i,timestamp=t,label=clicked,"
                                  "context=device+price,numeric=price")
    return {
        "movielens": read_movielens(tmp / "u.data"),
        "criteo": read_criteo_rows(tmp / "criteo.txt"),
        "avazu": read_avazu(avazu),
        "jsonl": read_table(tmp / "log.jsonl", mapping),
        "implicit": read_implicit(tmp / "events.csv"),
    }


def test_every_format_replays_as_events_the_decoder_accepts(tmp_path: Path) -> None:
    for name, table in write_formats(tmp_path).items():
        r = replay(table)
        for lo, hi, now in r.batches(size=3):
            decoded = decode_batch(r.values[lo:hi], now, PreprocessConfig())
            assert decoded.rejections == [], (name, decoded.rejections)
        ids = [orjson.loads(v)["event_id"] for v in r.values]
        assert len(set(ids)) == len(ids), name
        assert np.all(np.diff(r.ts_ms) >= 0), name
        first = orjson.loads(r.values[0])
        assert first["schema_version"] == 1 and isinstance(first["timestamp"], int)
        if name == "movielens":
            assert first["event_type"] == "rating" and first["value"] == 1.0
        if name == "implicit":
            assert [orjson.loads(v)["event_type"] for v in r.values] == [
                "click", "add_to_cart", "purchase"]


def test_numbers_stay_numbers_and_missing_features_are_left_out(tmp_path: Path) -> None:
    tables = write_formats(tmp_path)
    jsonl = [orjson.loads(v) for v in replay(tables["jsonl"]).values]
    assert jsonl[1]["context"] == {"device": "ios", "price": 1.5}
    criteo = orjson.loads(replay(tables["criteo"]).values[0])
    assert "C2" not in criteo["context"] and criteo["context"]["C1"] == "68fd1e64"
    assert "I2" not in criteo["user_features"] and criteo["user_features"]["I3"] == "b47"


def test_a_clicked_row_is_an_impression_and_a_click_one_second_later() -> None:
    t = clicks_table(200)
    r = replay(t)
    events = [orjson.loads(v) for v in r.values]
    impressions = [e for e in events if e["event_type"] == "impression"]
    clicks = [e for e in events if e["event_type"] == "click"]
    assert len(impressions) == len(t)
    assert len(clicks) == int(t.label.sum())
    by_pair = {(e["user_id"], e["item_id"]): e for e in impressions}
    for c in clicks:
        shown = by_pair[(c["user_id"], c["item_id"])]
        assert c["timestamp"] == shown["timestamp"] + 1000
        assert c["context"] == shown["context"]
    assert r.is_click.sum() == len(clicks)
    assert np.all(t.label[r.row[r.is_click]] == 1)


@pytest.mark.parametrize("batch", [1000, 37])
def test_the_pipelines_labels_are_the_rows_labels(batch: int) -> None:
    t = clicks_table(600, seed=batch)
    settings = bench_settings("clicks", {"preprocess": {"holdout_fraction": 0}})
    out = run_pipeline("freshrec-per-event", replay(t), settings, batch, warm_up=False)
    assert out.rejected == {}
    assert out.label_mismatches == 0 and out.unmapped == 0 and out.rows_learned_twice == 0
    # Every row became exactly one example (the end marker resolved the last impressions).
    assert sorted(out.sequence.rows.tolist()) == list(range(len(t)))
    assert np.array_equal(out.sequence.y, t.label[out.sequence.rows])
    assert len(out.run) == len(t)


def test_without_the_end_marker_the_last_impressions_stay_pending() -> None:
    from service.runtime.pipeline import Pipeline

    t = clicks_table(50)
    r = replay(t)
    settings = bench_settings("clicks", {"preprocess": {"holdout_fraction": 0}})
    pipeline = Pipeline(settings)
    learned = sum(pipeline.process(r.values[lo:hi], now_ms=now).n_trained
                  for lo, hi, now in r.batches(1000))
    # The last five minutes' impressions wait for a window that no later event closes.
    last = t.ts_ms.max() - settings.preprocess.attribution_window_ms
    waiting = int(((t.ts_ms >= last) & (t.label == 0)).sum())
    assert waiting > 0 and learned == len(t) - waiting
    marker, at = r.end_marker(settings.preprocess.attribution_window_ms + 1)
    assert pipeline.process([marker], now_ms=at).n_trained == len(t) - learned


def test_batches_are_polls_of_a_fixed_size_whatever_time_they_span() -> None:
    t = Interactions.build("ratings", user=["u"] * 5, item=["i"] * 5,
                           ts_ms=[0, 10, 20, 100, 500], value=[1] * 5)
    r = replay(t)
    assert list(r.batches(size=2)) == [(0, 2, 10), (2, 4, 100), (4, 5, 500)]
    with pytest.raises(ValueError, match="at least 1"):
        list(r.batches(size=0))


def test_a_poll_spanning_years_of_history_learns_as_small_polls_do() -> None:
    """A backlog poll spans far more than the allowed lateness (one day): lateness is
    judged against the stream's watermark, so nothing is refused, and the model is the
    one that small polls give."""
    from service.runtime.pipeline import Pipeline

    rng = np.random.default_rng(3)
    n = 600
    day = 86_400_000
    ts = np.cumsum(rng.integers(0, 3 * day, n))  # about 2.5 years
    t = Interactions.build("ratings", user=[f"u{k}" for k in rng.integers(0, 40, n)],
                           item=[f"i{k}" for k in rng.integers(0, 60, n)], ts_ms=ts,
                           value=rng.integers(1, 6, n).astype(float))
    r = replay(t)
    settings = bench_settings("ratings", {"preprocess": {"holdout_fraction": 0}})
    runs = []
    for size in (n, 7):
        pipeline = Pipeline(settings)
        outs = [pipeline.process(r.values[lo:hi], now_ms=now)
                for lo, hi, now in r.batches(size)]
        outs.append(pipeline.finish())
        assert sum(len(o.rejected) for o in outs) == 0
        runs.append((np.concatenate([o.event_ts_ms for o in outs]),
                     np.concatenate([o.losses for o in outs])))
    assert len(runs[0][0]) == n
    assert np.array_equal(runs[0][0], runs[1][0])
    assert np.array_equal(runs[0][1], runs[1][1])


def test_rows_of_refuses_times_no_row_has() -> None:
    r = replay(clicks_table(20))
    unclicked = int(np.flatnonzero(r.table.label == 0)[0])
    at = int(r.row_ts_ms[unclicked])
    assert r.rows_of(np.array([at, at + 1000, -5]), np.array([0.0, 1.0, 0.0])).tolist() == [
        unclicked, -1, -1]


def test_a_pair_clicked_on_its_second_impression_is_one_example_for_everyone() -> None:
    # u1 sees a1 twice inside the attribution window and clicks the second time: the
    # labeler merges the two impressions into one positive at the first one's time.
    t = Interactions.build(
        "clicks", user=["u0", "u1", "u2", "u1", "u3"], item=["a0", "a1", "a2", "a1", "a3"],
        ts_ms=T0 + np.array([0, 10_000, 20_000, 30_000, 40_000]),
        label=[0.0, 0.0, 1.0, 1.0, 0.0])
    settings = bench_settings("clicks", {"preprocess": {"holdout_fraction": 0}})
    out = run_pipeline("freshrec-per-event", replay(t), settings, 1000, warm_up=False)
    assert out.unmapped == 0 and out.label_mismatches == 0 and out.merged_positives == 1
    # Row 1 (the first impression, unclicked in the file) is learned as a positive by every
    # contender; row 3 gave no example of its own.
    by_row = dict(zip(out.sequence.rows.tolist(), out.sequence.y.tolist(), strict=True))
    assert by_row == {0: 0.0, 1: 1.0, 2: 1.0, 4: 0.0}
    # freshrec is scored on exactly the examples the others learn.
    assert len(out.run) == len(out.sequence)
    assert np.array_equal(out.run.y, out.sequence.y.astype(np.float64))


def test_freshrec_is_scored_only_on_examples_that_trace_back_to_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    t = clicks_table(300)
    r = replay(t)
    real = type(r).rows_of

    def lose_the_first_two(self: object, ts: np.ndarray, y: np.ndarray) -> np.ndarray:
        rows = real(r, ts, y)
        rows[:2] = -1
        return rows

    monkeypatch.setattr(type(r), "rows_of", lose_the_first_two)
    settings = bench_settings("clicks", {"preprocess": {"holdout_fraction": 0}})
    out = run_pipeline("freshrec-per-event", r, settings, 1000, warm_up=False)
    assert out.unmapped == 2
    assert len(out.run) == len(out.sequence) == len(t) - 2
