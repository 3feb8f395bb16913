"""Scale-out: several active instances (shards) on one multi-partition topic.

    config.py    ScaleConfig: shards, shard, merge interval
    shards.py    which partitions a shard owns; the names that keep shards apart
    layout.py    which rows of a learner's arrays are shared (items, hashed, scalars)
    delta.py     the merge arithmetic: blocks of deltas, folding, item id mapping
    shared.py    SharedParameters: a shard's baseline, outbox and fold bookkeeping
    exchange.py  BlockExchange: blocks in the object store, written and read in the background

See ``docs/scaling.md``.
"""

from service.scaleout.config import ScaleConfig
from service.scaleout.layout import NotShardable, SharedLayout, check_shardable
from service.scaleout.shared import SharedParameters

__all__ = ["NotShardable", "ScaleConfig", "SharedLayout", "SharedParameters", "check_shardable"]
