"""Labels: the attribution window, out-of-order events, late clicks and the pending bound."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.preprocess.config import PreprocessConfig
from service.preprocess.labels import (
    ADD_TO_CART,
    CLICK,
    IMPRESSION,
    PURCHASE,
    BinaryLabels,
    Labeler,
)

WINDOW = 100


@dataclass
class Ev:
    code: int
    ts: int
    user: int
    item: int
    feats: tuple[int, ...] = ()


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
        user_row=np.array([e.user for e in events], dtype=np.int64),
        item_row=np.array([e.item for e in events], dtype=np.int64),
        user_key=user_key, item_key=item_key,
        holdout=np.zeros(n, dtype=np.bool_), indptr=indptr, fidx=fidx,
        fval=np.ones(len(fidx), dtype=np.float32),
    )


def labeler(**kw: object) -> Labeler:
    cfg = {"task": "binary", "attribution_window_ms": WINDOW, "max_pending": 16, **kw}
    return Labeler(PreprocessConfig(**cfg))  # type: ignore[arg-type]


def tick(lab: Labeler, ts: int) -> BinaryLabels:
    """Advance event time with an unrelated click."""
    return run(lab, [Ev(CLICK, ts, 99, 99)])


def test_click_inside_window_makes_one_positive_and_no_negative() -> None:
    lab = labeler()
    out = run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(CLICK, 60, 1, 1)])
    assert out.positives.tolist() == [1] and len(out.neg_ts) == 0
    assert len(tick(lab, 1000).neg_ts) == 0
    assert lab.counters()["impressions_converted"] == 1


def test_unclicked_impression_becomes_a_negative_when_the_window_closes() -> None:
    lab = labeler()
    out = run(lab, [Ev(IMPRESSION, 0, 1, 2, feats=(7, 9))])
    assert len(out.neg_ts) == 0 and lab.pending == 1
    assert len(tick(lab, WINDOW).neg_ts) == 0  # window still open at exactly its end
    out = tick(lab, WINDOW + 1)
    assert out.neg_ts.tolist() == [0] and out.neg_user.tolist() == [1]
    assert out.neg_item.tolist() == [2]
    assert out.neg_fidx[0, : out.neg_nf[0]].tolist() == [7, 9]  # features as shown
    assert lab.pending == 0 and lab.counters()["negatives_emitted"] == 1


def test_click_arriving_before_its_impression_absorbs_it() -> None:
    lab = labeler()
    out = run(lab, [Ev(CLICK, 50, 1, 1), Ev(IMPRESSION, 10, 1, 1)])
    assert out.positives.tolist() == [0]
    assert len(tick(lab, 10_000).neg_ts) == 0
    assert lab.counters()["impressions_absorbed"] == 1


def test_click_before_the_impression_time_does_not_convert_it() -> None:
    lab = labeler()
    run(lab, [Ev(IMPRESSION, 500, 1, 1), Ev(CLICK, 400, 1, 1)])
    assert tick(lab, 10_000).neg_ts.tolist() == [500]


def test_late_click_is_counted_not_applied() -> None:
    lab = labeler()
    run(lab, [Ev(IMPRESSION, 0, 1, 1)])
    assert tick(lab, 150).neg_ts.tolist() == [0]
    out = run(lab, [Ev(CLICK, 160, 1, 1)])  # negative already out: late, still a positive
    assert out.positives.tolist() == [0] and len(out.neg_ts) == 0
    assert lab.counters()["late_clicks"] == 1
    # Resolved negatives are remembered for one more window only.
    run(lab, [Ev(IMPRESSION, 200, 2, 2)])
    tick(lab, 1000)
    run(lab, [Ev(CLICK, 1000, 2, 2)])
    assert lab.counters()["late_clicks"] == 1


def test_late_click_while_still_pending_in_the_same_batch() -> None:
    lab = labeler()
    out = run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(CLICK, WINDOW + 50, 1, 1)])
    assert out.positives.tolist() == [1] and out.neg_ts.tolist() == [0]
    assert lab.counters()["late_clicks"] == 1


def test_repeated_impression_of_a_pending_pair_is_merged() -> None:
    lab = labeler()
    run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(IMPRESSION, 5, 1, 1)])
    assert tick(lab, 1000).neg_ts.tolist() == [0]
    assert lab.counters()["impressions_merged"] == 1


def test_add_to_cart_and_purchase_are_weighted_positives_that_convert() -> None:
    lab = labeler()
    out = run(lab, [Ev(IMPRESSION, 0, 1, 1), Ev(ADD_TO_CART, 10, 1, 1), Ev(PURCHASE, 20, 1, 1)])
    assert out.positives.tolist() == [1, 2]
    assert lab.weights[ADD_TO_CART] == 2.0 and lab.weights[PURCHASE] == 4.0
    assert len(tick(lab, 1000).neg_ts) == 0


def test_pending_is_bounded_oldest_resolved_early() -> None:
    lab = labeler(max_pending=16)
    out = run(lab, [Ev(IMPRESSION, t, t, 1) for t in range(20)])
    assert out.neg_ts.tolist() == [0, 1, 2, 3]
    assert lab.pending == 16 and lab.counters()["pending_evicted"] == 4


def test_features_beyond_the_limit_are_truncated_and_counted() -> None:
    lab = labeler(max_pending_features=2)
    run(lab, [Ev(IMPRESSION, 0, 1, 1, feats=(1, 2, 3))])
    out = tick(lab, 1000)
    assert out.neg_nf.tolist() == [2] and lab.counters()["features_truncated"] == 1


kinds = st.sampled_from([IMPRESSION, IMPRESSION, CLICK, ADD_TO_CART])
streams = st.lists(
    st.builds(Ev, kinds, st.integers(0, 400), st.integers(1, 3), st.integers(1, 3)),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(streams, st.integers(1, 20), st.integers(16, 20))
def test_every_impression_is_accounted_for(events: list[Ev], batch: int, cap: int) -> None:
    lab = labeler(max_pending=cap)
    negatives = positives = 0
    for start in range(0, len(events), batch):
        out = run(lab, events[start:start + batch])
        negatives += len(out.neg_ts)
        positives += len(out.positives)
    c = lab.counters()
    impressions = sum(e.code == IMPRESSION for e in events)
    assert positives == len(events) - impressions
    assert negatives == c["negatives_emitted"]
    assert impressions == (negatives + c["impressions_converted"] + c["impressions_absorbed"]
                           + c["impressions_merged"] + lab.pending)


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
