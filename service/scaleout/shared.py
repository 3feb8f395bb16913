"""A shard's shared parameters: baseline, exchange bookkeeping, cutting and folding blocks.

How shards merge, and why this way
----------------------------------
Every shard learns item rows, hashed-feature rows and global scalars from its own users'
events. At each exchange a shard publishes its **own learning since the previous
exchange** as a block of deltas (:mod:`service.scaleout.delta`) and **adds** the deltas
of every other shard's new blocks to its own rows. This is the asynchronous parameter
server of Li et al. (2014) and Hogwild-style delayed updates (Recht et al. 2011) with the
object store as the server: with ``N`` shards each shared row is, up to the merge lag,
the sum of the updates every shard made to it, i.e. what a single model would have
learned from all the events with updates arriving up to one exchange late (bounded
staleness, Ho et al. 2013).

We chose delta summation over count-weighted parameter averaging (McDonald et al. 2010):

* averaging divides each shard's step on an item by the number of shards that touched
  it, so items learn more slowly than in one instance; summed deltas keep every update;
* the models' sufficient statistics (AdaGrad accumulators, FTRL's ``z`` and ``n``, the
  target sums) are sums already, so deltas merge them exactly;
* deltas are exactly-once friendly (below), where repeated averaging is not idempotent.

Exactly once, for merges too
----------------------------
Blocks are cut *at checkpoints*: the job cuts one just before copying the state, the block
waits in an *outbox* that is part of that checkpoint, and it is written to the object
store only once the checkpoint is durable (a transactional outbox). After a crash the
shard restores the checkpoint: an outbox block not yet written is written then (from the
checkpoint, so with the same content), and events replayed after it are new learning,
sent in later blocks. The number of the last block folded from each shard is checkpointed
with the model it was folded into, so a restore folds each block exactly once too. Since
every checkpoint cuts a block, the baseline equals the checkpointed shared rows and is not
stored: it is rebuilt from the restored model.

What is not shared: user rows (partition-local), the learners' interaction history
(popularity fallbacks are per shard), the moving average of parameters (``ema_decay``),
and an item's deltas that reach a shard before that shard has a row in use for the item
(they are dropped: the shard learns the item alone until it first sees it).

References
----------
McDonald, Hall, Mann (2010). Distributed training strategies for the structured
perceptron. NAACL.
Recht, Re, Wright, Niu (2011). Hogwild!: a lock-free approach to parallelizing SGD. NIPS.
Ho et al. (2013). More effective distributed ML via a stale synchronous parallel
parameter server. NIPS.
Li et al. (2014). Scaling distributed machine learning with the parameter server. OSDI.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from service.preprocess.vocabulary import Vocabulary
from service.scaleout.delta import Block, BlockPart, Keyed, add_rows, changed_rows, map_keys
from service.scaleout.layout import SharedLayout

log = logging.getLogger(__name__)

STATE_FORMAT = 1


class SharedParameters:
    """The scale-out state of one shard, kept beside its learner.

    Parameters
    ----------
    shard, shards
        Which shard this is, of how many.
    keyed
        ``"id"`` when items are encoded by a vocabulary (rows differ between shards: item
        rows travel by id key), ``"row"`` when items are hashed (rows agree everywhere).

    Example
    -------
    Two shards of a tiny matrix factorisation both rate items ``i7`` and ``i9`` (keys 7
    and 9), which their vocabularies admitted in opposite orders, then exchange a block
    each; the item rows agree afterwards:

    >>> import numpy as np
    >>> from service.examples import ExampleBatch
    >>> from service.learners.biased_mf import BiasedMF
    >>> from service.preprocess.vocabulary import Vocabulary
    >>> shards = []
    >>> for shard, keys in ((0, [7, 9]), (1, [9, 7])):
    ...     items = Vocabulary(capacity=8, admit_after=1, evict_after_ms=10**9)
    ...     rows, _ = items.encode(np.array(keys, dtype=np.uint64), np.array([0, 1]))
    ...     mf = BiasedMF(n_users=4, n_items=8, n_factors=2)
    ...     shared = SharedParameters(shard, 2, "id")
    ...     shared.attach(mf, items)
    ...     batch = ExampleBatch.from_arrays([1 + shard] * 2, rows, [5.0, 1.0 + shard])
    ...     shared.track(batch.item)
    ...     _ = mf.learn(batch)
    ...     shards.append((mf, shared, rows))
    >>> (a, sa, rows_a), (b, sb, rows_b) = shards
    >>> block_a, block_b = sa.cut(now=1.0), sb.cut(now=1.0)
    >>> sa.fold(block_b) and sb.fold(block_a)
    True
    >>> bias_a = a.arrays["item_bias"][rows_a]        # i7, i9 in shard 0
    >>> bias_b = b.arrays["item_bias"][rows_b[::-1]]  # i7, i9 in shard 1
    >>> bool(np.allclose(bias_a, bias_b)), sa.folded, sb.folded
    (True, {1: 1}, {0: 1})
    """

    def __init__(self, shard: int, shards: int, keyed: Keyed) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in [0, {shards}), got {shard}")
        self.shard = int(shard)
        self.shards = int(shards)
        self.keyed: Keyed = keyed
        self.next_seq = 1
        self.folded: dict[int, int] = {}  # shard -> sequence of the last block folded
        self.folded_created_at: dict[int, float] = {}
        self.outbox: list[Block] = []  # cut, checkpointed, not yet known to be written
        self._learner: Any = None
        self._items: Any = None
        self.layout = SharedLayout("", {})
        self._base_items: dict[str, npt.NDArray[Any]] = {}
        self._base_fixed: dict[str, npt.NDArray[Any]] = {}
        self._fixed_idx: dict[str, npt.NDArray[np.int64]] = {}
        self._tracked = 0

    # -- binding to the learner ----------------------------------------------------------

    def attach(self, learner: Any, items: Any) -> None:
        """Bind to ``learner`` (and the item encoder); the baseline becomes its state.

        Called at start, after a restore and after the learner is replaced: whatever the
        learner holds then is not this shard's own learning to send.
        """
        self._learner = learner
        self._items = items
        self.layout = SharedLayout.of(learner)
        self._fixed_idx = {
            name: np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in sa.fixed])
            for name, sa in self.layout.arrays.items() if sa.fixed
        }
        self._base_items = {}
        self._tracked = 0
        for name, sa in self.layout.arrays.items():
            if sa.item_offset is not None:
                self._base_items[name] = np.empty((0, *sa.row_shape), dtype=sa.dtype)
        self.track_upto(int(learner.used_items))
        self._base_fixed = {name: learner.arrays[name][idx].copy()
                            for name, idx in self._fixed_idx.items()}

    def fingerprint(self) -> dict[str, Any]:
        return {**self.layout.fingerprint(), "keyed": self.keyed}

    def track(self, items: npt.NDArray[np.int64]) -> None:
        """Call before the learner touches item rows ``items`` (a batch, recycled rows).

        Rows the learner has never used still hold their seeded initial values; the
        baseline takes them now, so that what the learner then does to them counts as
        this shard's learning.
        """
        upto = int(items.max()) + 1 if len(items) else 0
        # BPR samples negatives among rows below its mark, which is at least 3.
        self.track_upto(max(upto, int(self._learner.used_items), 3))

    def track_upto(self, upto: int) -> None:
        upto = min(upto, int(self._learner.n_items))
        if upto <= self._tracked:
            return
        for name, base in self._base_items.items():
            off = self.layout.arrays[name].item_offset
            assert off is not None
            new = self._learner.arrays[name][off + self._tracked: off + upto]
            self._base_items[name] = np.concatenate([base, new])
        self._tracked = upto

    def reset_items(self, rows: npt.NDArray[np.int64]) -> None:
        """Recycled item rows now belong to new items: their reset is not learning."""
        rows = rows[(rows >= 0) & (rows < self._tracked)]
        for name, base in self._base_items.items():
            off = self.layout.arrays[name].item_offset
            assert off is not None
            base[rows] = self._learner.arrays[name][off + rows]

    def _item_keys(self, n: int) -> npt.NDArray[np.uint64]:
        rows = np.arange(n, dtype=np.int64)
        if self.keyed == "id":
            if not isinstance(self._items, Vocabulary):
                raise TypeError("keyed='id' needs the item Vocabulary")
            return self._items.owner(rows)
        return rows.astype(np.uint64)

    # -- the exchange ------------------------------------------------------------------

    def cut(self, now: float) -> Block | None:
        """This shard's learning on shared rows since the last cut, as the next block.

        The baseline moves up to the current values and the block joins the outbox.
        Returns None (and uses no sequence number) when nothing changed.
        """
        learner = self._learner
        keys = self._item_keys(self._tracked) if self._base_items else None
        parts: dict[str, BlockPart] = {}
        for name, sa in self.layout.arrays.items():
            array = learner.arrays[name]
            empty_keys = np.zeros(0, dtype=np.uint64)
            part = BlockPart(empty_keys, np.zeros((0, *sa.row_shape), dtype=sa.dtype),
                             np.zeros(0, dtype=np.int64),
                             np.zeros((0, *sa.row_shape), dtype=sa.dtype))
            if sa.item_offset is not None:
                cur = array[sa.item_offset: sa.item_offset + self._tracked]
                rows, delta = changed_rows(cur, self._base_items[name])
                assert keys is not None
                row_keys = keys[rows]
                keep = row_keys != 0 if self.keyed == "id" else rows != 0
                part.keys, part.item_delta = row_keys[keep], delta[keep]
                self._base_items[name][:] = cur
            if sa.fixed:
                idx = self._fixed_idx[name]
                cur = array[idx]
                base = self._base_fixed[name]
                if sa.rule == "target_stats":
                    # [weight sum, weighted sum, min, max]: the sums are deltas, the range
                    # travels as values (it widens, it does not add).
                    rows, delta = changed_rows(cur[:2], base[:2])
                    if len(rows):
                        part.value_range = np.array(cur[2:4], dtype=np.float64)
                else:
                    rows, delta = changed_rows(cur, base)
                part.rows, part.fixed_delta = idx[rows], delta
                base[:] = cur
            if len(part):
                parts[name] = part
        if not parts:
            return None
        block = Block(self.shard, self.next_seq, now, self.keyed, self.fingerprint(), parts)
        self.next_seq += 1
        self.outbox.append(block)
        return block

    def written(self, seq: int) -> None:
        """Block ``seq`` is in the object store: drop it (and older ones) from the outbox."""
        self.outbox = [b for b in self.outbox if b.seq > seq]

    def fold(self, block: Block) -> bool:
        """Add another shard's block to the shared rows; False if it was folded already.

        Raises ``ValueError`` for a block this shard cannot fold (another model or
        encoding, non-finite values): the shards are misconfigured.
        """
        if block.shard == self.shard:
            raise ValueError(f"shard {self.shard} was given its own block {block.seq}")
        if block.seq <= self.folded.get(block.shard, 0):
            return False
        if block.fingerprint != self.fingerprint():
            raise ValueError(
                f"block {block.seq} of shard {block.shard} was written for "
                f"{block.fingerprint}, but this shard has {self.fingerprint()}: every shard "
                "must run the same model, hyperparameters and item encoding"
            )
        if not block.is_finite():
            raise ValueError(f"block {block.seq} of shard {block.shard} has non-finite deltas")
        learner = self._learner
        bound = min(self._tracked, int(learner.used_items))
        own_keys: npt.NDArray[np.uint64] | None = None
        for name, part in block.parts.items():
            sa = self.layout.arrays[name]
            array = learner.arrays[name]
            if len(part.keys) and sa.item_offset is not None:
                if self.keyed == "id":
                    if own_keys is None:
                        own_keys = self._item_keys(bound)
                    rows = map_keys(own_keys, part.keys)
                else:
                    rows = part.keys.astype(np.int64)
                ok = (rows >= 1) & (rows < bound)
                view = array[sa.item_offset: sa.item_offset + bound]
                add_rows(view, self._base_items[name][:bound], rows[ok], part.item_delta[ok])
            if len(part.rows):
                idx = self._fixed_idx.get(name)
                if idx is None:
                    continue
                pos = np.searchsorted(idx, part.rows)
                pos_c = np.minimum(pos, len(idx) - 1)
                ok = idx[pos_c] == part.rows
                d = part.fixed_delta[ok].astype(array.dtype, copy=False)
                np.add.at(array, part.rows[ok], d)
                np.add.at(self._base_fixed[name], pos_c[ok], d)
            if part.value_range is not None and sa.rule == "target_stats":
                for target in (array, self._base_fixed[name]):
                    target[2] = min(target[2], part.value_range[0])
                    target[3] = max(target[3], part.value_range[1])
        self.folded[block.shard] = block.seq
        self.folded_created_at[block.shard] = block.created_at
        return True

    # -- state ------------------------------------------------------------------------

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Bookkeeping and the outbox (the baseline is the checkpointed model itself)."""
        arrays: dict[str, npt.NDArray[Any]] = {}
        outbox = []
        for block in self.outbox:
            block_arrays, block_meta = block.to_arrays()
            arrays |= {f"outbox.{block.seq}.{k}": v for k, v in block_arrays.items()}
            outbox.append(block_meta)
        return arrays, {
            "format": STATE_FORMAT, "shard": self.shard, "shards": self.shards,
            "next_seq": self.next_seq,
            "folded": {str(k): v for k, v in self.folded.items()},
            "folded_created_at": {str(k): v for k, v in self.folded_created_at.items()},
            "outbox": outbox,
        }

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore :meth:`get_state`; call :meth:`attach` first (it rebuilds the baseline)."""
        if (meta.get("shard"), meta.get("shards")) != (self.shard, self.shards):
            raise ValueError(
                f"the checkpoint was written by shard {meta.get('shard')} of "
                f"{meta.get('shards')}, this instance is shard {self.shard} of {self.shards}: "
                "changing the number of shards moves partitions (and their users) between "
                "shards; start the new layout under a new group id"
            )
        self.next_seq = int(meta["next_seq"])
        self.folded = {int(k): int(v) for k, v in meta["folded"].items()}
        self.folded_created_at = {int(k): float(v)
                                  for k, v in meta.get("folded_created_at", {}).items()}
        self.outbox = []
        for block_meta in meta["outbox"]:
            prefix = f"outbox.{block_meta['seq']}."
            block_arrays = {k[len(prefix):]: v for k, v in arrays.items()
                            if k.startswith(prefix)}
            self.outbox.append(Block.from_arrays(block_arrays, block_meta))
