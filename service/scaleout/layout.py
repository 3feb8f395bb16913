"""Which parts of a learner's arrays are shared between shards, read from ``row_spans()``.

A learner declares, per array, which rows are user rows and which are item rows
(:class:`~service.learners.layout.RowSpan`). Under scale-out:

* **user rows are partition-local**: a user's events all land in one shard, so its rows
  are learned there and nowhere else; they are never exchanged;
* **item rows are shared**, matched between shards by item *id* (each shard's vocabulary
  hands out rows in its own order of admission) or by row when items are hashed (the same
  row everywhere);
* **rows outside every span are shared by row**: hashed side features and scalars such
  as the global bias. The running target statistics (``stats``: weight sum, weighted sum,
  min, max) are merged by their own rule: sums add, the range widens.

Arrays that are not floating point (the learner's RNG state) are local.

Example
-------
>>> from service.learners.biased_mf import BiasedMF
>>> layout = SharedLayout.of(BiasedMF(n_users=10, n_items=5, n_factors=2))
>>> sorted(name for name, a in layout.arrays.items() if a.item_offset is not None)
['acc_item_bias', 'acc_item_factors', 'item_bias', 'item_factors']
>>> layout.arrays["item_factors"].item_offset, layout.arrays["item_factors"].fixed
(0, [])
>>> layout.arrays["user_factors"].item_offset, layout.arrays["user_factors"].fixed
(None, [])
>>> layout.arrays["stats"].rule
'target_stats'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.learners.array_learner import ArrayLearner

Rule = Literal["add", "target_stats"]

# Models whose every coordinate is addressed by the hashed *row* of a user or an item
# (``hash(field, row)``): rows must then mean the same id in every shard.
_HASHES_ROWS = frozenset({"ftrl"})


class NotShardable(ValueError):
    """The configured model or encoding cannot be split into shards."""


@dataclass(frozen=True, slots=True)
class SharedArray:
    """The shared part of one learner array.

    Parameters
    ----------
    item_offset
        First row of the item span (``None``: the array has no item rows).
    fixed
        ``[start, stop)`` row ranges outside every span: shared by row index.
    rule
        ``"add"``: deltas add. ``"target_stats"``: the four running target statistics.
    """

    name: str
    item_offset: int | None
    fixed: list[tuple[int, int]]
    rule: Rule
    dtype: str
    row_shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SharedLayout:
    """The shared parts of every array of a learner (arrays absent here are local)."""

    model_type: str
    arrays: dict[str, SharedArray]

    @classmethod
    def of(cls, learner: Any) -> SharedLayout:
        """Read the layout of ``learner``; :class:`NotShardable` if it has none."""
        if not isinstance(learner, ArrayLearner):
            raise NotShardable(
                f"learner {getattr(learner, 'model_type', type(learner).__name__)!r} does "
                "not declare which rows are user and item rows, so it cannot be sharded; "
                "use biased_mf, bpr, fm or ftrl, or set FRESHREC_SCALE__SHARDS=1"
            )
        spans = learner.row_spans()
        sizes = {"users": learner.n_users, "items": learner.n_items}
        out: dict[str, SharedArray] = {}
        for name, array in learner.arrays.items():
            if array.ndim == 0 or not np.issubdtype(array.dtype, np.floating):
                continue
            covered = sorted((s.offset, s.offset + sizes[s.axis]) for s in spans.get(name, ()))
            fixed: list[tuple[int, int]] = []
            pos = 0
            for start, stop in covered:
                if start > pos:
                    fixed.append((pos, start))
                pos = max(pos, stop)
            if pos < len(array):
                fixed.append((pos, len(array)))
            items = [s.offset for s in spans.get(name, ()) if s.axis == "items"]
            rule: Rule = "target_stats" if name == "stats" else "add"
            out[name] = SharedArray(name, items[0] if items else None, fixed, rule,
                                    array.dtype.str, tuple(array.shape[1:]))
        return cls(learner.model_type, out)

    def fingerprint(self) -> dict[str, Any]:
        """What two shards must agree on to exchange blocks (JSON-able)."""
        return {
            "model_type": self.model_type,
            "arrays": {n: [a.rule, a.dtype, list(a.row_shape), a.item_offset is not None]
                       for n, a in sorted(self.arrays.items())},
        }


def check_shardable(model: str, user_encoding: str, item_encoding: str,
                    shadows: int = 0) -> None:
    """Refuse, with what to change, a configuration whose shards could not agree on rows."""
    if shadows:
        raise NotShardable(
            "shadow learners are not sharded yet (each shard would need every member's "
            "shared rows): set FRESHREC_LEARNER__SHADOWS=0 to shard, or run one shard"
        )
    if model == "sklearn":
        raise NotShardable(
            "learner.model='sklearn' keeps its parameters inside scikit-learn, where "
            "freshrec cannot tell user from item parameters: it cannot be sharded; use "
            "biased_mf, bpr, fm or ftrl, or set FRESHREC_SCALE__SHARDS=1"
        )
    if model in _HASHES_ROWS and "vocabulary" in (user_encoding, item_encoding):
        raise NotShardable(
            f"learner.model={model!r} hashes user and item *rows* into shared coordinates, "
            "and vocabulary rows mean different ids in different shards: set "
            "FRESHREC_PREPROCESS__USER_ENCODING=hashing and "
            "FRESHREC_PREPROCESS__ITEM_ENCODING=hashing to shard it"
        )
