"""Labels: one example per impression as shown, the attribution window, out-of-order events,
late clicks and the pending bound; and, through the whole pipeline, no label leak."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.evaluation.binary import BinaryMetrics, auc_from_scores
from service.preprocess.config import PreprocessConfig
from service.preprocess.labels import (
    ADD_TO_CART,
    CLICK,
    IMPRESSION,
    PURCHASE,
    BinaryLabels,
    Labeler,
)
from service.runtime.pipeline import Pipeline
from tests.streams import auc_noise, random_clicks

WINDOW = 100
TICK_USER = 99


@dataclass
class Ev:
    code: int
    ts: int
    user: int
    item: int
    feats: tuple[int, ...] = ()
    hold: bool = False
    row: int | None = None  # the user row the encoder gave this event (default: user)


def run(lab: Labeler, events: list[Ev]) -> BinaryLabels:
    n = len(events)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(e.feats) for e in events], out=indptr[1:])
    fidx = np.array([f for e in events for f in e.feats], dtype=np.int64)
    user_key = np.array([1000 + e.user for e in events], dtype=np.uint64)
    item_key = np.array([2000 + e.item for e in events], dtype=np.uint64)
    return lab.binary(
        codes=np.array([e.code for e in events], dtype=np.int8),
        ts=np.array([e.ts for e in events], dtype=np.int64),
        pair=user_key * np.uint64(1_000_003) + item_key,
        user_row=np.array([e.user if e.row is None else e.row for e in events],
                          dtype=np.int64),
        item_row=np.array([e.item for e in events], dtype=np.int64),
        user_key=user_key, item_key=item_key,
        holdout=np.array([e.hold for e in events], dtype=np.bool_), indptr=indptr, fidx=fidx,
        fval=np.ones(len(fidx), dtype=np.float32),
    )


def labeler(**kw: object) -> Labeler:
    cfg = {"task": "binary", "attribution_window_ms": WINDOW, "max_pending": 16, **kw}
    return Labeler(PreprocessConfig(**cfg))  # type: ignore[arg-type]


def tick(lab: Labeler, ts: int) -> BinaryLabels:
    """Advance event time with an impression of an unrelated pair."""
    return run(lab, [Ev(IMPRESSION, ts, TICK_USER, TICK_USER)])


@dataclass
class Example:
    ts: int
    y: float
    weight: float
    user: int
    features: list[int]
    holdout: bool


def examples(out: BinaryLabels) -> list[Example]:
    """The resolved examples, those of the tick pair left out."""
    return [Example(int(out.ts[k]), float(out.y[k]), float(out.weight[k]), int(out.user[k]),
                    out.fidx[k, : out.nf[k]].tolist(), bool(out.holdout[k]))
            for k in range(len(out.ts)) if out.user_key[k] != 1000 + TICK_USER]


def test_a_positive_is_its_impression_as_shown_when_its_window_closes() -> None:
    lab = labeler()
    # The click has its own features, holdout draw and row (as if its sighting had
    # admitted the user): none of it may reach the example.
    out = run(lab, [Ev(IMPRESSION, 0, 1, 2, feats=(7, 9), hold=True, row=0),
                    Ev(CLICK, 60, 1, 2, feats=(3,), hold=False, row=5)])
    assert examples(out) == [] and examples(tick(lab, WINDOW)) == []  # window still open
    assert examples(tick(lab, WINDOW + 1)) == [
        Example(ts=0, y=1.0, weight=1.0, user=0, features=[7, 9], holdout=True)]
    assert examples(tick(lab, 10_000)) == []  # and nothing else: no negative
    assert lab.counters()["impressions_converted"] == 1


def test_unclicked_impression_becomes_a_negative_when_the_window_closes() -> None:
    lab = labeler()
    out = run(lab, [Ev(IMPRESSION, 0, 1, 2, feats=(7, 9))])
    assert len(out.ts) == 0 and lab.pending == 1
    assert examples(tick(lab, WINDOW)) == []  # window still open at exactly its end
    out = tick(lab, WINDOW + 1)
    assert examples(out) == [Example(0, 0.0, 1.0, 1, [7, 9], False)]
    assert out.item.tolist() == [2]
    assert lab.pending == 1 and lab.counters()["negatives_emitted"] == 1  # the tick waits


def test_the_label_does_not_decide_when_an_example_comes_out() -> None:
    # Clicked or not, an impression comes out when its window closes, in arrival order:
    # a click emitted at once would be learned (and scored) a window before its negatives.
    lab = labeler()
    run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(IMPRESSION, 10, 2, 1), Ev(IMPRESSION, 20, 3, 1),
              Ev(CLICK, 25, 3, 1), Ev(CLICK, 30, 1, 1)])
    assert [e.ts for e in examples(tick(lab, WINDOW + 5))] == [0]
    assert [(e.ts, e.y) for e in examples(tick(lab, WINDOW + 25))] == [(10, 0.0), (20, 1.0)]


def test_click_arriving_before_its_impression_takes_the_impression() -> None:
    lab = labeler()
    run(lab, [Ev(CLICK, 50, 1, 1, feats=(3,)), Ev(IMPRESSION, 10, 1, 1, feats=(7, 9),
                                                   hold=True)])
    assert examples(tick(lab, 10_000)) == [Example(10, 1.0, 1.0, 1, [7, 9], True)]
    c = lab.counters()
    assert c["impressions_absorbed"] == 1 and c["clicks_without_impression"] == 1


def test_click_without_impression_is_counted_not_learned() -> None:
    # An example made of the click's own event would carry the click's maps, a shape no
    # impression has: a click model would learn the label from the shape.
    lab = labeler()
    run(lab, [Ev(CLICK, 0, 1, 1, feats=(3,), hold=True)])
    assert examples(tick(lab, WINDOW)) == []  # an impression may still arrive late
    assert examples(tick(lab, WINDOW + 1)) == []
    assert lab.counters()["clicks_without_impression"] == 1
    assert lab.counters()["positives_without_impression"] == 1
    # The pair starts afresh: a later impression is an exposure of its own.
    run(lab, [Ev(IMPRESSION, 5_000, 1, 1)])
    assert [(e.ts, e.y) for e in examples(tick(lab, 10_000))] == [(5_000, 0.0)]


def test_click_without_impression_is_its_own_example_a_window_later_when_asked() -> None:
    lab = labeler(learn_positives_without_impression=True)
    run(lab, [Ev(CLICK, 0, 1, 1, feats=(3,), hold=True)])
    assert examples(tick(lab, WINDOW)) == []  # an impression may still arrive late
    assert examples(tick(lab, WINDOW + 1)) == [Example(0, 1.0, 1.0, 1, [3], True)]
    assert lab.counters()["clicks_without_impression"] == 1
    assert lab.counters()["positives_without_impression"] == 0


def test_click_before_the_impression_time_does_not_convert_it() -> None:
    for alone, expected in ((False, [(500, 0.0)]), (True, [(500, 0.0), (400, 1.0)])):
        lab = labeler(learn_positives_without_impression=alone)
        run(lab, [Ev(IMPRESSION, 500, 1, 1), Ev(CLICK, 400, 1, 1)])
        assert [(e.ts, e.y) for e in examples(tick(lab, 10_000))] == expected


def test_impression_after_the_click_is_a_new_exposure() -> None:
    lab = labeler()
    run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(CLICK, 10, 1, 1), Ev(IMPRESSION, 5, 1, 1),
              Ev(IMPRESSION, 50, 1, 1, feats=(4,))])
    # The one at 5 has the click in its window too (absorbed); the one at 50 was seen
    # again after the click: a negative of its own.
    got = [(e.ts, e.y, e.features) for e in examples(tick(lab, 10_000))]
    assert got == [(0, 1.0, []), (50, 0.0, [4])]
    assert lab.counters()["impressions_absorbed"] == 1


def test_late_click_is_counted_and_its_own_example_when_asked() -> None:
    lab = labeler(learn_positives_without_impression=True)
    run(lab, [Ev(IMPRESSION, 0, 1, 1)])
    assert [e.y for e in examples(tick(lab, 150))] == [0.0]
    run(lab, [Ev(CLICK, 160, 1, 1, feats=(3,))])  # negative already out: not taken back
    assert examples(tick(lab, 10_000)) == [Example(160, 1.0, 1.0, 1, [3], False)]
    assert lab.counters()["late_clicks"] == 1
    # Resolved negatives are remembered for one more window only.
    run(lab, [Ev(IMPRESSION, 20_000, 2, 2)])
    tick(lab, 21_000)
    run(lab, [Ev(CLICK, 21_000, 2, 2)])
    assert lab.counters()["late_clicks"] == 1


def test_late_click_while_still_pending_in_the_same_batch() -> None:
    for alone in (False, True):
        lab = labeler(learn_positives_without_impression=alone)
        out = run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(CLICK, WINDOW + 50, 1, 1)])
        assert [(e.ts, e.y) for e in examples(out)] == [(0, 0.0)]
        later = [(e.ts, e.y) for e in examples(tick(lab, 10_000))]
        assert later == ([(WINDOW + 50, 1.0)] if alone else [])
        assert lab.counters()["late_clicks"] == 1
        assert lab.counters()["positives_without_impression"] == (0 if alone else 1)


def test_repeated_impression_of_a_pending_pair_is_merged() -> None:
    lab = labeler()
    run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(IMPRESSION, 5, 1, 1)])
    assert [e.ts for e in examples(tick(lab, 1000))] == [0]
    assert lab.counters()["impressions_merged"] == 1


def test_positives_of_one_impression_make_one_example_of_the_strongest_weight() -> None:
    # A second positive scored after the model just learned the first, same features,
    # would be an easy positive: one example, the purchase's weight.
    lab = labeler()
    run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(ADD_TO_CART, 10, 1, 1), Ev(PURCHASE, 20, 1, 1),
              Ev(CLICK, 5, 1, 1)])
    assert lab.weights[ADD_TO_CART] == 2.0 and lab.weights[PURCHASE] == 4.0
    assert [(e.y, e.weight) for e in examples(tick(lab, 1000))] == [(1.0, 4.0)]
    assert lab.counters()["clicks_merged"] == 2


def test_pending_is_bounded_oldest_resolved_early_as_it_stands() -> None:
    lab = labeler(max_pending=16)
    out = run(lab, [Ev(IMPRESSION, 0, 0, 1), Ev(CLICK, 1, 0, 1)]
              + [Ev(IMPRESSION, t, t, 1) for t in range(1, 20)])
    assert [(e.ts, e.y) for e in examples(out)] == [(0, 1.0), (1, 0.0), (2, 0.0), (3, 0.0)]
    assert lab.pending == 16 and lab.counters()["pending_evicted"] == 4


def test_features_beyond_the_limit_are_truncated_and_counted() -> None:
    lab = labeler(max_pending_features=2)
    run(lab, [Ev(IMPRESSION, 0, 1, 1, feats=(1, 2, 3))])
    out = tick(lab, 1000)
    assert out.nf.tolist() == [2] and lab.counters()["features_truncated"] == 1


kinds = st.sampled_from([IMPRESSION, IMPRESSION, CLICK, ADD_TO_CART])
streams = st.lists(
    st.builds(Ev, kinds, st.integers(0, 400), st.integers(1, 3), st.integers(1, 3)),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(streams, st.integers(1, 20), st.integers(16, 20))
def test_every_event_is_accounted_for(events: list[Ev], batch: int, cap: int) -> None:
    lab = labeler(max_pending=cap)
    y: list[float] = []
    for start in range(0, len(events), batch):
        y += run(lab, events[start:start + batch]).y.tolist()
    y += tick(lab, 10_000).y.tolist()  # every window closed: only the tick waits
    c = lab.counters()
    impressions = sum(e.code == IMPRESSION for e in events) + 1
    positives = len(events) + 1 - impressions
    assert y.count(0.0) == c["negatives_emitted"] and len(y) == y.count(0.0) + y.count(1.0)
    assert impressions == (c["negatives_emitted"] + c["impressions_converted"]
                           + c["impressions_absorbed"] + c["impressions_merged"] + lab.pending)
    assert positives == (c["impressions_converted"] + c["clicks_merged"]
                         + c["clicks_without_impression"])
    # One example per converted impression and per positive that opened its own and was
    # claimed by an impression (absorbed); the others are counted, not learned.
    assert y.count(1.0) == (c["impressions_converted"] + c["clicks_without_impression"]
                            - c["positives_without_impression"])


@settings(max_examples=60, deadline=None)
@given(streams, streams)
def test_state_round_trip(first: list[Ev], second: list[Ev]) -> None:
    a = labeler()
    run(a, first)
    b = labeler()
    b.set_state(*a.get_state())
    oa, ob = run(a, second), run(b, second)
    for name in BinaryLabels.__slots__:
        assert np.array_equal(getattr(oa, name), getattr(ob, name)), name
    assert a.counters() == b.counters() and a.pending == b.pending


# -- no leak through the pipeline ---------------------------------------------------------

NOW = 1_795_802_400_000


def through_pipeline(model: str, n_keys: int, seed: int) -> Pipeline:
    settings = Settings(
        learner={"model": model, "eval_window": 20_000},  # type: ignore[arg-type]
        preprocess={"task": "binary", "user_capacity": 1024, "item_capacity": 1024,  # type: ignore[arg-type]
                    "feature_bits": 14, "max_pending": 4096, "holdout_fraction": 0.2},
        snapshot={"holdout_window": 20_000},  # type: ignore[arg-type]
    )
    pipeline = Pipeline(settings)
    values = random_clicks(8000, n_keys, seed, start_ms=NOW - 3_600_000)
    for lo in range(0, len(values), 500):
        pipeline.process(values[lo:lo + 500], now_ms=NOW)
    return pipeline


@pytest.mark.parametrize(("model", "n_keys"), [("ftrl", 0), ("ftrl", 8), ("fm", 8)])
def test_random_clicks_give_a_progressive_auc_within_noise_of_one_half(
    model: str, n_keys: int
) -> None:
    # Before positives were their impressions as shown, held as long as negatives, this
    # measured 0.62 with ids only (timing) and 0.99 with context (features).
    pipeline = through_pipeline(model, n_keys, seed=n_keys)
    metrics = pipeline.evaluator.metrics
    assert isinstance(metrics, BinaryMetrics)
    y = metrics.window.values()[:, 2]
    n_pos = int((y > 0.5).sum())
    assert 0.1 < n_pos / len(y) < 0.25 and len(y) > 5000  # every window but the last closed
    auc = pipeline.evaluator.result()["auc_window"]  # exact: the window holds them all
    assert abs(auc - 0.5) < 4 * auc_noise(n_pos, len(y) - n_pos), auc


@pytest.mark.parametrize(("model", "n_keys"), [("ftrl", 8), ("fm", 8)])
def test_random_clicks_give_the_gate_nothing_to_learn_from_on_the_holdout(
    model: str, n_keys: int
) -> None:
    pipeline = through_pipeline(model, n_keys, seed=100 + n_keys)
    holdout = pipeline.gate.window.batch()
    y = holdout.y.astype(np.float64)
    n_pos = int(y.sum())
    assert len(y) > 1000 and 0.1 < n_pos / len(y) < 0.25
    p = np.clip(pipeline.learner.predict(holdout).astype(np.float64), 1e-7, 1 - 1e-7)
    assert abs(auc_from_scores(y, p) - 0.5) < 4 * auc_noise(n_pos, len(y) - n_pos)
    # The gate's metric, log loss, must not beat the best constant (the holdout's own
    # click rate, which even flatters the constant) beyond noise.
    rate = n_pos / len(y)
    gain = (-(y * np.log(rate) + (1 - y) * np.log1p(-rate))
            + (y * np.log(p) + (1 - y) * np.log1p(-p)))
    assert gain.mean() < 4 * gain.std() / math.sqrt(len(y)), gain.mean()
