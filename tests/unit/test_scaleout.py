"""Scale-out, pure logic: partition ownership, shared layout, merge arithmetic, bookkeeping."""

from __future__ import annotations

import time

import numpy as np
import pytest

from service.config import Settings
from service.demo.generator import StreamSpec, SyntheticStream
from service.examples import ExampleBatch
from service.learners.biased_mf import BiasedMF
from service.learners.fm import FM
from service.preprocess.config import PreprocessConfig
from service.preprocess.vocabulary import Vocabulary
from service.runtime.pipeline import Pipeline
from service.scaleout import NotShardable, ScaleConfig, SharedLayout, SharedParameters
from service.scaleout.delta import Block, map_keys
from service.scaleout.layout import check_shardable
from service.scaleout.shards import owned_partitions


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_every_partition_is_owned_by_exactly_one_shard(shards: int) -> None:
    partitions = list(range(12))
    owned = [owned_partitions(partitions, ScaleConfig(shards=shards, shard=i))
             for i in range(shards)]
    assert sorted(p for o in owned for p in o) == partitions


def test_shard_out_of_range_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="FRESHREC_SCALE__SHARD"):
        ScaleConfig(shards=2, shard=2)


def test_models_that_cannot_be_sharded_are_refused() -> None:
    with pytest.raises(NotShardable, match="sklearn"):
        check_shardable("sklearn", "vocabulary", "vocabulary")
    with pytest.raises(NotShardable, match="ITEM_ENCODING=hashing"):
        check_shardable("ftrl", "vocabulary", "hashing")
    check_shardable("ftrl", "hashing", "hashing")
    check_shardable("biased_mf", "vocabulary", "vocabulary")


def test_joint_table_shares_items_and_hashed_rows_not_users() -> None:
    fm = FM(n_users=10, n_items=6, feature_bits=3)
    shared = SharedLayout.of(fm).arrays["factors"]
    assert shared.item_offset == 10  # item rows follow the user rows
    assert shared.fixed == [(16, 16 + 8)]  # the hashed features; user rows 0-9 are local


def test_map_keys_finds_own_rows_and_misses() -> None:
    own = np.array([0, 11, 22, 0, 33], dtype=np.uint64)
    rows = map_keys(own, np.array([33, 44, 11, 0], dtype=np.uint64))
    assert rows.tolist() == [4, -1, 1, -1]


def _shard(shard: int, keys: list[int]) -> tuple[BiasedMF, SharedParameters, np.ndarray]:
    items = Vocabulary(capacity=16, admit_after=1, evict_after_ms=10**12)
    rows, _ = items.encode(np.array(keys, dtype=np.uint64), np.arange(len(keys)))
    mf = BiasedMF(n_users=8, n_items=16, n_factors=3, seed=7)
    shared = SharedParameters(shard, 2, "id")
    shared.attach(mf, items)
    return mf, shared, rows


def _learn(mf: BiasedMF, shared: SharedParameters, users: list[int], rows: np.ndarray,
           y: list[float]) -> None:
    batch = ExampleBatch.from_arrays(users, rows, y)
    shared.track(batch.item)
    mf.learn(batch)


def test_after_an_exchange_each_item_holds_both_shards_learning() -> None:
    # The same three items, admitted in a different order by each shard.
    a, sa, rows_a = _shard(0, [5, 6, 7])
    b, sb, rows_b = _shard(1, [7, 5, 6])
    init_a = a.arrays["item_factors"][rows_a].copy()
    init_b = b.arrays["item_factors"][rows_b].copy()
    _learn(a, sa, [1, 2, 1], rows_a, [5.0, 1.0, 4.0])
    _learn(b, sb, [3, 3, 4], rows_b, [2.0, 5.0, 3.0])
    learned_a = a.arrays["item_factors"][rows_a] - init_a
    learned_b = b.arrays["item_factors"][rows_b] - init_b  # rows_b[k] is key [7, 5, 6][k]
    block_a, block_b = sa.cut(now=1.0), sb.cut(now=2.0)
    assert block_a is not None and block_b is not None
    assert sa.fold(block_b) and sb.fold(block_a)
    by_key_b = {7: 0, 5: 1, 6: 2}
    for k, key in enumerate([5, 6, 7]):
        j = by_key_b[key]
        expected = learned_a[k] + learned_b[j]
        np.testing.assert_allclose(a.arrays["item_factors"][rows_a[k]] - init_a[k], expected,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.arrays["item_factors"][rows_b[j]] - init_b[j], expected,
                                   rtol=1e-5, atol=1e-6)
        assert a.arrays["item_bias"][rows_a[k]] == pytest.approx(
            b.arrays["item_bias"][rows_b[j]], abs=1e-6)
    # User rows stay local.
    assert np.all(a.arrays["user_factors"][3:5] == BiasedMF(8, 16, n_factors=3, seed=7)
                  .arrays["user_factors"][3:5])
    # Global statistics: sums add (6 ratings in both), the range widens.
    for mf in (a, b):
        assert mf.arrays["stats"][0] == pytest.approx(6.0)
        assert mf.arrays["stats"][2:].tolist() == [1.0, 5.0]


def test_folded_learning_is_not_sent_back_and_a_block_folds_once() -> None:
    a, sa, rows_a = _shard(0, [5, 6])
    b, sb, rows_b = _shard(1, [5, 6])
    _learn(a, sa, [2], rows_a[1:], [3.0])  # A has rows in use for both items
    assert sa.cut(now=0.5) is not None
    _learn(b, sb, [1], rows_b[:1], [5.0])
    block = sb.cut(now=1.0)
    assert block is not None
    before = a.arrays["item_factors"].copy()
    assert sa.fold(block)
    assert not sa.fold(block)  # the same block again: nothing happens
    assert not np.array_equal(before, a.arrays["item_factors"])
    after_once = a.arrays["item_factors"].copy()
    assert sa.fold(block) is False and np.array_equal(after_once, a.arrays["item_factors"])
    assert sa.cut(now=2.0) is None  # no echo: A learned nothing itself
    assert (sa.next_seq, sb.next_seq) == (2, 2)


def test_recycled_rows_are_not_sent_as_learning() -> None:
    a, sa, rows = _shard(0, [5, 6])
    sa.track(rows[:1])  # what the pipeline does before a reset
    a.reset_rows(np.zeros(0, dtype=np.int64), rows[:1])
    sa.reset_items(rows[:1])
    assert sa.cut(now=1.0) is None


def test_a_block_for_another_model_is_refused() -> None:
    a, sa, rows = _shard(0, [5])
    _learn(a, sa, [1], rows, [4.0])
    block = sa.cut(now=1.0)
    assert block is not None
    other = SharedParameters(1, 2, "row")  # hashed items: rows, not ids
    other.attach(BiasedMF(n_users=8, n_items=16, n_factors=3), None)
    with pytest.raises(ValueError, match="same model"):
        other.fold(block)


def test_block_round_trips_through_arrays() -> None:
    a, sa, rows = _shard(0, [5, 6])
    _learn(a, sa, [1, 2], rows, [4.0, 2.0])
    block = sa.cut(now=3.0)
    assert block is not None
    arrays, meta = block.to_arrays()
    again = Block.from_arrays(arrays, meta)
    assert (again.shard, again.seq, again.created_at, len(again)) == (0, 1, 3.0, len(block))
    for name, part in block.parts.items():
        np.testing.assert_array_equal(again.parts[name].item_delta, part.item_delta)
        np.testing.assert_array_equal(again.parts[name].keys, part.keys)


def _settings(shard: int) -> Settings:
    return Settings(scale=ScaleConfig(shards=2, shard=shard),
                    preprocess=PreprocessConfig(user_capacity=512, item_capacity=128))


def test_restore_keeps_the_bookkeeping_so_no_block_is_folded_twice() -> None:
    stream = SyntheticStream(StreamSpec(n_users=50, n_items=20, seed=3))
    values = stream.encoded_events(2000, start_ms=int(time.time() * 1000) - 10_000)
    a, b = Pipeline(_settings(0)), Pipeline(_settings(1))
    a.process(values[:1000])
    b.process(values[1000:])
    assert a.shared is not None and b.shared is not None
    block_b = b.shared.cut(time.time())
    assert block_b is not None
    assert a.shared.fold(block_b)
    block_a = a.shared.cut(time.time())  # A's own learning: the outbox, not yet written
    assert block_a is not None
    arrays, meta = a.get_state()

    restored = Pipeline(_settings(0))
    restored.set_state(arrays, meta)
    assert restored.shared is not None
    assert restored.shared.folded == {1: block_b.seq}
    assert restored.shared.next_seq == block_a.seq + 1
    assert [blk.seq for blk in restored.shared.outbox] == [block_a.seq]
    np.testing.assert_array_equal(restored.shared.outbox[0].parts["item_bias"].item_delta,
                                  block_a.parts["item_bias"].item_delta)
    item_bias = restored.learner.arrays["item_bias"].copy()  # type: ignore[attr-defined]
    assert not restored.shared.fold(block_b)  # already in the restored model
    np.testing.assert_array_equal(item_bias, restored.learner.arrays["item_bias"])  # type: ignore[attr-defined]
    assert restored.shared.cut(time.time()) is None  # the baseline is the restored model


def test_a_checkpoint_of_another_shard_is_refused() -> None:
    arrays, meta = Pipeline(_settings(0)).get_state()
    with pytest.raises(ValueError, match="new group id"):
        Pipeline(_settings(1)).set_state(arrays, meta)


def test_one_shard_checkpoints_nothing_new() -> None:
    pipeline = Pipeline(Settings(preprocess=PreprocessConfig(user_capacity=64,
                                                             item_capacity=32)))
    arrays, meta = pipeline.get_state()
    assert pipeline.shared is None and "scaleout" not in meta
    assert not any(k.startswith("scaleout.") for k in arrays)
