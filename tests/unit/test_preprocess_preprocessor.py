"""The Preprocessor facade: totality, duplicates, holdout, recycling and exact state round-trip."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.events.decode import decode_batch
from service.events.reasons import RejectReason
from service.examples import ExampleBatch
from service.preprocess import PreprocessConfig, Preprocessor

NOW = 1_795_802_400_000
SMALL = {"user_capacity": 64, "item_capacity": 32, "dedup_window_events": 500,
         "max_pending": 64, "feature_bits": 12}


def ev(i: int, kind: str = "rating", user: int = 1, item: int = 1, ts: int = NOW,
       **extra: Any) -> bytes:
    event = {"schema_version": 1, "event_id": f"e{i}", "event_type": kind,
             "user_id": f"u{user}", "item_id": f"i{item}", "timestamp": ts, **extra}
    if kind == "rating" and "value" not in extra:
        event["value"] = 3.0
    return json.dumps(event).encode()


def run(pre: Preprocessor, values: list[bytes | None], now: int = NOW) -> tuple[Any, Any]:
    decoded = decode_batch(values, now, pre.config)
    return decoded, pre.transform(decoded, now)


def test_duplicates_within_and_across_batches_are_rejected_with_their_index() -> None:
    pre = Preprocessor(PreprocessConfig(**SMALL))
    _, out = run(pre, [ev(1), ev(2), ev(1), b"junk"])
    assert [(r.index, r.reason) for r in out.rejections] == [(2, RejectReason.DUPLICATE)]
    _, out = run(pre, [ev(3), ev(2)])
    assert [(r.index, r.reason) for r in out.rejections] == [(1, RejectReason.DUPLICATE)]
    assert "e2" in out.rejections[0].detail
    assert out.stats["duplicates"] == 1 and out.stats["accepted"] == 1


def test_regression_examples_and_events_outside_the_task() -> None:
    pre = Preprocessor(PreprocessConfig(**SMALL, user_admit_after=1, item_admit_after=1))
    _, out = run(pre, [ev(1, value=4.5, user=1, item=2), ev(2, "click"),
                       ev(3, value=1.0, user=2, item=2, context={"device": "ios"})])
    x = out.examples
    assert x.y.tolist() == [4.5, 1.0] and x.ts_ms.tolist() == [NOW, NOW]
    assert x.user.tolist() == [1, 2] and x.item.tolist() == [1, 1]
    assert out.stats["accepted"] == 3 and out.stats["examples"] == 2
    assert x.feat_indptr.tolist()[0] == 0 and len(x.feat_indptr) == 3


def test_binary_task_end_to_end() -> None:
    cfg = PreprocessConfig(**SMALL, task="binary", attribution_window_ms=1000,
                           user_admit_after=1, item_admit_after=1)
    pre = Preprocessor(cfg)
    _, out = run(pre, [ev(1, "impression", 1, 1, NOW - 5000, context={"position": 1}),
                       ev(2, "impression", 2, 1, NOW - 5000),
                       ev(3, "click", 1, 1, NOW - 4500), ev(4, "rating")])
    assert len(out.examples) == 0  # both windows are still open
    _, out = run(pre, [ev(5, "purchase", 3, 2, NOW - 100, value=9.5)])
    x = out.examples
    assert x.y.tolist() == [1.0, 0.0]  # the clicked impression, then the unclicked one
    assert x.weight.tolist() == [1.0, 1.0] and x.ts_ms.tolist() == [NOW - 5000, NOW - 5000]
    assert x.user.tolist() == [1, 2] and x.feat_indptr.tolist()[1] > 0
    assert out.stats["positives"] == 1 and out.stats["negatives"] == 1
    assert out.stats["pending_impressions"] == 0  # the purchase waits for its impression


def test_a_positive_is_its_impression_as_shown() -> None:
    # Each click comes without context, with its own event id (its own holdout draw), and
    # is its user's second sighting, which admits the user: none of it may show. The
    # examples must be those the same impressions make without any click, but the label.
    cfg = PreprocessConfig(**SMALL, task="binary", attribution_window_ms=1000,
                           holdout_fraction=0.5, crosses=["item*context.device"])
    shown = [ev(i, "impression", i, 1, NOW - 9000 + i,
                context={"device": "ios", "position": i}) for i in range(1, 13)]
    clicks = [ev(100 + i, "click", i, 1, NOW - 8000 + i) for i in range(1, 13)]
    closing = [ev(999, "impression", 50, 2, NOW)]  # past every window

    def resolved(events: list[bytes]) -> tuple[ExampleBatch, float]:
        out = run(Preprocessor(cfg), events + closing)[1]
        return out.examples, out.stats["users"]

    (positives, admitted), (negatives, _) = resolved(shown + clicks), resolved(shown)
    assert positives.y.tolist() == [1.0] * 12 and negatives.y.tolist() == [0.0] * 12
    for name in ("user", "item", "ts_ms", "feat_indptr", "feat_idx", "feat_val", "holdout"):
        assert np.array_equal(getattr(positives, name), getattr(negatives, name)), name
    # The comparison means something: the clicks admitted their users, but the examples
    # keep row 0, as shown; and the clicks' own draws and (absent) features differ.
    assert admitted == 12 and (positives.user == 0).all()
    # Clicks alone are not learned by default (their shape would give the label away);
    # learned when asked, they carry their own draws and (absent) features.
    assert len(resolved(clicks)[0]) == 0
    cfg = cfg.model_copy(update={"learn_positives_without_impression": True})
    clicks_alone, _ = resolved(clicks)
    assert len(clicks_alone) == 12 and len(clicks_alone.feat_idx) == 0
    assert not np.array_equal(clicks_alone.holdout, negatives.holdout)


def test_holdout_is_a_deterministic_share_of_event_ids() -> None:
    values = [ev(i, user=i % 7, item=i % 5) for i in range(4000)]
    cfg = PreprocessConfig(**SMALL, holdout_fraction=0.1)
    a = run(Preprocessor(cfg), values)[1].examples.holdout
    b = run(Preprocessor(cfg), values)[1].examples.holdout
    assert np.array_equal(a, b)
    assert 0.08 < a.mean() < 0.12
    none = run(Preprocessor(PreprocessConfig(**SMALL, holdout_fraction=0.0)), values)[1]
    assert not none.examples.holdout.any()


def test_recycled_rows_reach_the_example_batch() -> None:
    cfg = PreprocessConfig(**{**SMALL, "user_capacity": 3}, user_admit_after=1,
                           item_admit_after=1, user_evict_after_ms=1000,
                           allowed_lateness_ms=10**9)
    pre = Preprocessor(cfg)
    run(pre, [ev(1, user=1, ts=NOW - 10_000), ev(2, user=2, ts=NOW - 10_000)])
    _, out = run(pre, [ev(3, user=3, ts=NOW)])
    assert out.examples.recycled_users.tolist() == [out.examples.user[0]]
    assert out.examples.user[0] in (1, 2)


def test_state_saved_under_other_settings_is_refused() -> None:
    pre = Preprocessor(PreprocessConfig(**SMALL))
    arrays, meta = pre.get_state()
    other = Preprocessor(PreprocessConfig(**{**SMALL, "feature_bits": 13}))
    with pytest.raises(ValueError, match="FRESHREC_PREPROCESS__FEATURE_BITS=12 \\(now 13\\)"):
        other.set_state(arrays, meta)


# -- properties ---------------------------------------------------------------------------

kinds = st.sampled_from(["impression", "impression", "click", "purchase", "rating"])
event_specs = st.tuples(
    st.integers(0, 40), kinds, st.integers(0, 12), st.integers(0, 6),
    st.integers(-20_000, 0), st.sampled_from([None, {"device": "ios", "position": 2}, {}]),
)


def encode(spec: tuple[int, str, int, int, int, Any]) -> bytes:
    i, kind, user, item, dt, context = spec
    return ev(i, kind, user, item, NOW + dt, **({"context": context} if context else {}))


junk = st.one_of(st.none(), st.binary(max_size=30))
batches = st.lists(st.lists(st.one_of(event_specs.map(encode), junk), max_size=15), max_size=5)


@settings(max_examples=60, deadline=None)
@given(batches, st.sampled_from(["regression", "binary"]))
def test_every_message_is_applied_or_rejected_exactly_once(
    stream: list[list[bytes | None]], task: str
) -> None:
    pre = Preprocessor(PreprocessConfig(**SMALL, task=task, attribution_window_ms=5000))  # type: ignore[arg-type]
    for values in stream:
        decoded, out = run(pre, values)
        rejected = [r.index for r in decoded.rejections + out.rejections]
        assert len(rejected) == len(set(rejected))
        assert len(rejected) + int(out.stats["accepted"]) == len(values)
        assert set(rejected) | set(decoded.index.tolist()) == set(range(len(values)))
        x = out.examples
        assert isinstance(x, ExampleBatch)
        assert x.user.max(initial=0) < 64 and x.item.max(initial=0) < 32
        assert x.feat_idx.max(initial=0) < 2**12 and x.feat_indptr[-1] == len(x.feat_idx)
        assert np.isfinite(x.y).all() and (x.weight >= 0).all()


def _roundtrip_storage(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> tuple[Any, Any]:
    """Through npz (no pickle allowed) and JSON, as a checkpoint would store them."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    return loaded, json.loads(json.dumps(meta))


@settings(max_examples=40, deadline=None)
@given(batches, batches, st.sampled_from(["regression", "binary"]))
def test_state_round_trip_is_exact(
    first: list[list[bytes | None]], second: list[list[bytes | None]], task: str
) -> None:
    cfg = PreprocessConfig(**SMALL, task=task, attribution_window_ms=5000)  # type: ignore[arg-type]
    a = Preprocessor(cfg)
    for values in first:
        run(a, values)
    b = Preprocessor(cfg)
    b.set_state(*_roundtrip_storage(*a.get_state()))
    for values in second:
        (_, oa), (_, ob) = run(a, values), run(b, values)
        assert oa.stats == ob.stats
        assert [(r.index, r.reason) for r in oa.rejections] == [
            (r.index, r.reason) for r in ob.rejections]
        for name in ExampleBatch.__slots__:
            assert np.array_equal(getattr(oa.examples, name), getattr(ob.examples, name)), name
    (sa, ma), (sb, mb) = a.get_state(), b.get_state()
    assert ma == mb and sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k


def test_encoding_maps_ids_to_the_rows_the_learner_saw() -> None:
    from service.snapshots.encoding import encoder_from_snapshot

    pre = Preprocessor(PreprocessConfig(**SMALL, user_admit_after=1, item_admit_after=1))
    _, out = run(pre, [ev(1, user=5, item=3), ev(2, user=9, item=4), ev(3, user=5, item=4)])
    encoding, arrays = pre.encoding()
    enc = encoder_from_snapshot(encoding, arrays)
    assert enc.user_rows(["u5", "u9", "nobody"]).tolist() == [*out.examples.user[:2], 0]
    assert enc.item_ids(out.examples.item).tolist() == ["i3", "i4", "i4"]


def test_hashed_encoding_needs_the_hashed_id_encoder() -> None:
    from service.preprocess.id_encoder import HashedIdEncoder

    cfg = PreprocessConfig(**SMALL, user_encoding="hashing", item_encoding="hashing",
                           user_hash_bits=5, item_hash_bits=4)
    pre = Preprocessor(cfg)
    _, out = run(pre, [ev(1, user=5, item=3), ev(2, user=9, item=4)])
    encoding, arrays = pre.encoding()
    assert arrays == {} and encoding["user"]["kind"] == "hash"
    enc = HashedIdEncoder(encoding)
    assert enc.user_rows(["u5", "u9"]).tolist() == out.examples.user.tolist()
    assert enc.item_rows(["i3", "i4"]).tolist() == out.examples.item.tolist()
    with pytest.raises(LookupError):
        enc.item_ids(out.examples.item)
