"""Scale-out settings: which shard of the event topic this instance serves."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ScaleConfig(BaseModel):
    """Several active instances on one multi-partition topic (see ``docs/scaling.md``).

    With ``shards=1`` (the default) one active instance reads every partition, exactly as
    before: no name, path or behaviour changes. With ``shards=N`` the instances started
    with ``shard=i`` own the partitions ``p`` with ``p % N == i``; each shard is its own
    service group (lease, standbys, checkpoints, snapshots) and the shards exchange their
    shared parameters (item rows, hashed features, global statistics) through the object
    store every ``merge_interval_s``.
    """

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    shards: int = Field(
        default=1, ge=1, le=1024,
        description="Active instances sharing the topic's partitions (1: one instance reads "
        "every partition).",
    )
    shard: int = Field(
        default=0, ge=0,
        description="Which shard this instance serves: partitions p with p % shards == shard.",
    )
    merge_interval_s: float = Field(
        default=5.0, gt=0,
        description="Seconds between two exchanges of shared parameters with the other "
        "shards (each exchange is cut at a checkpoint, so checkpoints are at least this "
        "frequent when shards > 1).",
    )
    keep_blocks: int = Field(
        default=1000, ge=1,
        description="Shared-parameter blocks each shard keeps in the object store for the "
        "others to fold (a shard further behind skips to the oldest kept).",
    )

    @model_validator(mode="after")
    def _shard_in_range(self) -> ScaleConfig:
        if self.shard >= self.shards:
            raise ValueError(
                f"scale.shard={self.shard} but scale.shards={self.shards}: shards are "
                f"numbered 0..{self.shards - 1}; set FRESHREC_SCALE__SHARD to one of them"
            )
        return self
