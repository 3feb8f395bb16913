"""Side features: deterministic hashing, one-hot vs scaled numbers, missing values, crosses."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.events.maps import PackedMaps
from service.preprocess.config import PreprocessConfig
from service.preprocess.features import FeatureHasher
from service.preprocess.hashing import hash_strings
from service.preprocess.labels import ADD_TO_CART, CLICK, IMPRESSION, PURCHASE, RATING


def features(f: FeatureHasher, context: list, items: list | None = None,
             types: list[int] | None = None) -> list[dict]:
    """Each event's features as ``{slot: value}``; impressions unless ``types`` says."""
    n = len(context)
    indptr, idx, val = f.transform(
        context, [None] * n, items or [None] * n,
        user_key=np.arange(1, n + 1, dtype=np.uint64),
        item_key=np.full(n, 7, dtype=np.uint64),
        event_type=np.array(types or [IMPRESSION] * n, dtype=np.int8),
    )
    assert indptr[0] == 0 and np.all(np.diff(indptr) >= 0) and indptr[-1] == len(idx)
    assert idx.min(initial=0) >= 0 and idx.max(initial=0) < 2**f.bits
    return [dict(zip(idx[a:b].tolist(), val[a:b].tolist(), strict=True))
            for a, b in pairwise(indptr.tolist())]


def test_hashes_do_not_depend_on_the_process() -> None:
    # Fixed values: Python's salted hash() would change these on every run.
    assert hash_strings(["u42"], 0)[0] == hash_strings(["u42"], 0)[0]
    assert int(hash_strings(["u42"], 0)[0]) == int(hash_strings(["u42"], 0)[0])
    a = features(FeatureHasher(PreprocessConfig(feature_bits=10)), [{"device": "ios"}])
    b = features(FeatureHasher(PreprocessConfig(feature_bits=10)), [{"device": "ios"}])
    assert a == b


def test_categories_are_one_hot_and_distinct() -> None:
    f = FeatureHasher(PreprocessConfig(feature_bits=16, missing_features={}))
    rows = features(f, [{"device": "ios"}, {"device": "web"}, {"page": "ios"}, {"device": True}])
    assert all(list(r.values()) == [1.0] for r in rows)
    slots = [next(iter(r)) for r in rows]
    assert len(set(slots)) == 4  # value, key and type all matter


def test_numbers_are_standardised_online_and_clipped() -> None:
    f = FeatureHasher(PreprocessConfig(feature_bits=16, numeric_clip=3.0, missing_features={}))
    rows = features(f, [{"position": float(p)} for p in [1, 2, 3, 4, 5, 1000]])
    values = [next(iter(r.values())) for r in rows]
    slots = {next(iter(r)) for r in rows}
    assert len(slots) == 1  # one slot per numeric key
    assert values[:2] == [0.0, 0.0]  # no variance yet
    assert values[2] > 0 and values[-1] == 3.0
    mean, std = f.scaler.mean_std(int(hash_strings(["position"], f._map_seed["context"])[0]
                                      % np.uint64(4096)))
    assert abs(mean - np.mean([1, 2, 3, 4, 5, 1000])) < 1e-9 and std > 0


def test_missing_indicator_for_absent_or_null_expected_key() -> None:
    f = FeatureHasher(PreprocessConfig(feature_bits=16,
                                       missing_features={"context.device": "indicator"}))
    rows = features(f, [{"device": "ios"}, None, {"device": None}, {"page": "home"}])
    assert len(rows[0]) == 1
    assert rows[1] == rows[2] and len(rows[1]) == 1  # the same "device is missing" slot
    assert len(rows[3]) == 2 and set(rows[1]) <= set(rows[3])
    skip = FeatureHasher(PreprocessConfig(feature_bits=16,
                                          missing_features={"context.device": "skip"}))
    assert features(skip, [None, {"device": None}]) == [{}, {}]


def test_an_action_gets_the_features_of_an_impression_with_its_entries_and_no_more() -> None:
    # A click standing for an impression nobody saw must not be told apart by its features:
    # no "device is missing" slot because a tracker left the context out, and an event
    # type in a cross is that of the impression.
    cfg = PreprocessConfig(feature_bits=20, crosses=["item*event_type"],
                           missing_features={"context.device": "indicator"})
    stated = {"device": "ios", "page": "home"}
    maps = [stated, stated, stated, stated, None, None, None]
    types = [IMPRESSION, CLICK, ADD_TO_CART, PURCHASE, IMPRESSION, CLICK, RATING]
    rows = features(FeatureHasher(cfg), maps, types=types)
    assert rows[1] == rows[2] == rows[3] == rows[0] and len(rows[0]) == 3
    assert rows[5] == {k: v for k, v in rows[4].items() if k in rows[0]}  # the cross only
    assert len(rows[4]) == 2 and len(rows[6]) == 2  # exposures: the indicator too
    assert rows[6] != rows[4]  # a rating is its own event type


def test_an_actions_numbers_are_scaled_but_not_learned() -> None:
    cfg = PreprocessConfig(feature_bits=16, missing_features={})
    values = [1.0, 2.0, 3.0, 4.0]
    alone = features(FeatureHasher(cfg), [{"price": v} for v in values])
    # The same impressions, each followed by a click restating a far larger price.
    f = FeatureHasher(cfg)
    rows = features(f, [{"price": v + 1000 * (k % 2)} for v in values for k in range(2)],
                    types=[IMPRESSION, CLICK] * len(values))
    assert rows[::2] == alone
    assert f.scaler.mean_std(next(iter(alone[0])) % 4096)[0] == np.mean(values)


def test_cross_of_item_and_device() -> None:
    f = FeatureHasher(PreprocessConfig(feature_bits=20, missing_features={},
                                       crosses=["item*context.device"]))
    rows = features(f, [{"device": "ios"}, {"device": "ios"}, {"device": "web"}, {}])
    assert len(rows[0]) == 2 and rows[0] == rows[1]  # same item, same device
    assert rows[0].keys() != rows[2].keys() and len(rows[2]) == 2
    assert rows[3] == {}  # no device: no cross


def test_state_round_trip_keeps_scaling() -> None:
    cfg = PreprocessConfig(feature_bits=12, missing_features={})
    a = FeatureHasher(cfg)
    features(a, [{"x": float(v)} for v in range(10)])
    b = FeatureHasher(cfg)
    b.set_state(*a.get_state())
    probe = [{"x": 3.5}, {"x": 20.0}]
    assert features(a, probe) == features(b, probe)


# -- the compiled path against a per-entry reference -------------------------------------------

def reference(f: FeatureHasher, fields: list[list[dict | None]]) -> list[dict]:
    """Each entry hashed on its own in Python: what the kernels must compute (no
    indicators, no crosses). Numbers are scaled field by field, in event order."""
    from service.preprocess.hashing import combine_arrays
    from service.preprocess.scaling import RunningStandardizer

    def pair(a: int, b: int) -> int:
        return int(combine_arrays(np.array([a], np.uint64), np.array([b], np.uint64))[0])

    scaler = RunningStandardizer(4096, f.scaler.clip)
    mask = (1 << f.bits) - 1
    n = len(fields[0])
    rows: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for name, column in zip(("context", "user_features", "item_features"), fields,
                            strict=True):
        for i, m in enumerate(column):
            for key, value in (m or {}).items():
                hk = int(hash_strings([key], f._map_seed[name])[0])
                if value is None:
                    continue
                if isinstance(value, bool):
                    rows[i].append((pair(hk, f._true if value else f._false) & mask, 1.0))
                elif isinstance(value, int | float):
                    z = scaler.transform(np.array([hk % 4096]), np.array([float(value)]))
                    rows[i].append((hk & mask, float(z[0])))
                else:
                    th = int(hash_strings([value], f._text_seed)[0])
                    rows[i].append((pair(hk, th) & mask, 1.0))
    return [dict(r) for r in rows]


map_values = (st.none() | st.booleans() | st.integers(-(10**15), 10**15)
              | st.floats(-1e15, 1e15) | st.text(max_size=4))
feature_maps = st.none() | st.dictionaries(st.sampled_from(["device", "x", "é", "n"]),
                                           map_values, max_size=3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(feature_maps, feature_maps, feature_maps), min_size=1, max_size=6))
def test_packed_maps_hash_like_the_per_entry_reference(events: list[tuple]) -> None:
    fields = [list(column) for column in zip(*events, strict=True)]
    cfg = PreprocessConfig(feature_bits=12, missing_features={})
    f = FeatureHasher(cfg)
    n = len(events)
    indptr, idx, val = f.transform(
        *(PackedMaps.from_dicts(column) for column in fields),
        user_key=np.arange(1, n + 1, dtype=np.uint64), item_key=np.full(n, 7, np.uint64),
        event_type=np.full(n, IMPRESSION, dtype=np.int8))
    got = [dict(zip(idx[a:b].tolist(), val[a:b].tolist(), strict=True))
           for a, b in pairwise(indptr.tolist())]
    expected = reference(FeatureHasher(cfg), fields)
    assert got == [
        {k: float(np.float32(v)) for k, v in row.items()} for row in expected]


def test_maps_from_the_decoder_hash_like_their_dicts() -> None:
    from service.events.decode import decode_batch

    events = [{"schema_version": 1, "event_id": f"e{i}", "event_type": "click",
               "user_id": f"u{i}", "item_id": "i", "timestamp": 1_800_000_000_000 + i,
               "context": {"device": ["ios", "web"][i % 2], "position": i, "ok": i % 3 == 0},
               "item_features": {"price": 0.5 * i, "tag": None}} for i in range(40)]
    values = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    decoded = decode_batch(values, 1_800_000_100_000)
    assert len(decoded) == 40
    cfg = PreprocessConfig(feature_bits=14, crosses=["item*context.device"])
    keys = dict(user_key=np.arange(40, dtype=np.uint64), item_key=np.ones(40, np.uint64),
                event_type=np.ones(40, dtype=np.int8))
    packed = FeatureHasher(cfg).transform(*(decoded.maps[name] for name in (
        "context", "user_features", "item_features")), **keys)
    dicts = FeatureHasher(cfg).transform(decoded.context, decoded.user_features,
                                         decoded.item_features, **keys)
    for a, b in zip(packed, dicts, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
