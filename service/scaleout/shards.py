"""Which partitions a shard owns, and the names that keep shards apart.

Shard ``i`` of ``N`` owns the event partitions ``p`` with ``p % N == i``. Producers key
events by user id, so Kafka's partitioner puts all of one user's events in one partition,
hence in one shard: everything keyed by user (user rows, the user vocabulary, dedup,
pending impressions) is partition-local and needs no coordination.

Each shard is its own service group: it has its own lease (so it keeps hot standbys and
kill -9 recovery), its own checkpoints and its own published snapshots. With ``shards=1``
every name below is the one freshrec used before scale-out existed.

Example
-------
>>> from service.scaleout.config import ScaleConfig
>>> scale = ScaleConfig(shards=2, shard=1)
>>> owned_partitions([0, 1, 2, 3], scale)
[1, 3]
>>> shard_group("recs", scale), checkpoint_folder(scale), shard_model_name("default", scale)
('recs.shard-1', 'shard-1', 'default.shard-1')
>>> one = ScaleConfig()
>>> shard_group("recs", one), checkpoint_folder(one), shard_model_name("default", one)
('recs', '', 'default')
"""

from __future__ import annotations

from collections.abc import Iterable

from service.scaleout.config import ScaleConfig


def owned_partitions(partitions: Iterable[int], scale: ScaleConfig) -> list[int]:
    """The partitions of ``partitions`` that shard ``scale.shard`` reads, ascending."""
    return sorted(p for p in partitions if p % scale.shards == scale.shard)


def shard_name(shard: int) -> str:
    return f"shard-{shard}"


def shard_group(group_id: str, scale: ScaleConfig) -> str:
    """The group whose lease decides which instance of this shard is active."""
    return group_id if scale.shards == 1 else f"{group_id}.{shard_name(scale.shard)}"


def checkpoint_folder(scale: ScaleConfig) -> str:
    """Sub-folder of the service's checkpoint prefix for this shard ('' when unsharded)."""
    return "" if scale.shards == 1 else shard_name(scale.shard)


def shard_model_name(model_name: str, scale: ScaleConfig) -> str:
    """Registry name of this shard's snapshots.

    The registry keeps one model per name (``models/<name>/``, no ``/`` inside a name), so
    a shard publishes under ``<name>.shard-<i>``: a client serving a user loads the
    snapshot of the user's shard; item rows agree across shards up to the merge lag.
    """
    return model_name if scale.shards == 1 else f"{model_name}.{shard_name(scale.shard)}"


def blocks_prefix(group_id: str, topic: str, shard: int) -> str:
    """Where shard ``shard`` writes its shared-parameter blocks."""
    return f"shared/{group_id}/{topic}/{shard_name(shard)}"
