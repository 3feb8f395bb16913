"""The processing pipeline of one batch: decode → preprocess → predict-then-learn.

Pure: it takes raw message values and returns what happened to each, with no Kafka and
no Prometheus. The job (``service.runtime.job``) does the I/O around it. Keeping the two
apart is what lets the same pipeline run in the service, in the benchmarks and in tests.

Under scale-out (``scale.shards > 1``) the pipeline also owns the shard's
:class:`~service.scaleout.SharedParameters`: it tells them which item rows the learner is
about to touch (so the baseline of the shared rows stays exact) and checkpoints their
bookkeeping with the model. Folding other shards' blocks is the job's, between batches.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from service.checkpoint.manager import namespaced, split_namespaced
from service.config import Settings
from service.drift import DriftMonitor
from service.drift.detection import DriftDetection
from service.drift.monitor import DriftState
from service.evaluation import ProgressiveEvaluator, sampled_ranks
from service.events.decode import decode_batch
from service.events.watermark import Watermarks
from service.examples import ExampleBatch
from service.learners import learner_from_state, make_learner
from service.learners.base import Learner, ModelState
from service.learners.optim import Optimizer
from service.preprocess import Preprocessor
from service.scaleout import SharedParameters, check_shardable
from service.snapshots.gate import PromotionGate

log = logging.getLogger(__name__)

# Drift reactions take effect at multiples of this many learned examples (see process).
REACTION_CHUNK = 4096

# Progressive ranking metrics (BPR): positives ranked per batch, among how many candidates.
RANKED_PER_BATCH = 500
RANK_CANDIDATES = 100


@dataclass(slots=True)
class Rejected:
    """One message the pipeline refused, by its position in the batch."""

    index: int
    reason: str
    detail: str


@dataclass(slots=True)
class BatchOutcome:
    """What the pipeline did with one batch."""

    n_input: int
    rejected: list[Rejected]
    n_accepted: int
    n_examples: int
    n_trained: int
    n_holdout: int
    n_skipped_nonfinite: int
    losses: npt.NDArray[np.float64]
    event_ts_ms: npt.NDArray[np.int64]
    learn_seconds: float
    drift: list[Any] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    reset_requested: bool = False

    @classmethod
    def rejected_only(cls, rejected: list[Rejected]) -> BatchOutcome:
        """A batch of ``len(rejected)`` messages, every one refused before the pipeline."""
        return cls(n_input=len(rejected), rejected=rejected, n_accepted=0, n_examples=0,
                   n_trained=0, n_holdout=0, n_skipped_nonfinite=0,
                   losses=np.zeros(0, np.float64), event_ts_ms=np.zeros(0, np.int64),
                   learn_seconds=0.0)


# Per-batch counts among BatchOutcome.stats (the others describe the state after it).
_SUMMED_STATS = frozenset({"accepted", "duplicates", "examples", "positives", "negatives",
                           "holdout", "recycled_users", "recycled_items"})


def combine_outcomes(parts: Sequence[tuple[list[int], BatchOutcome]], n_input: int
                     ) -> BatchOutcome:
    """One outcome for a batch processed in parts, in stream order.

    ``parts`` pairs the batch indices each part covered with its outcome; together they
    must cover ``range(n_input)`` once. Rejections are indexed into the whole batch again.
    """
    covered = sorted(i for indices, _ in parts for i in indices)
    if covered != list(range(n_input)):
        raise ValueError(f"the parts cover {len(covered)} positions of a {n_input}-message "
                         "batch, not each one once")
    rejected = [Rejected(indices[r.index], r.reason, r.detail)
                for indices, part in parts for r in part.rejected]
    outcomes = [part for _, part in parts]
    stats: dict[str, float] = {}
    for part in outcomes:
        for key, value in part.stats.items():
            stats[key] = stats.get(key, 0) + value if key in _SUMMED_STATS else value
    return BatchOutcome(
        n_input=n_input,
        rejected=rejected,
        n_accepted=n_input - len(rejected),
        n_examples=sum(p.n_examples for p in outcomes),
        n_trained=sum(p.n_trained for p in outcomes),
        n_holdout=sum(p.n_holdout for p in outcomes),
        n_skipped_nonfinite=sum(p.n_skipped_nonfinite for p in outcomes),
        losses=np.concatenate([p.losses for p in outcomes]) if outcomes else np.zeros(0),
        event_ts_ms=(np.concatenate([p.event_ts_ms for p in outcomes]) if outcomes
                     else np.zeros(0, np.int64)),
        learn_seconds=sum(p.learn_seconds for p in outcomes),
        drift=[d for p in outcomes for d in p.drift],
        stats=stats,
        reset_requested=any(p.reset_requested for p in outcomes),
    )


class Pipeline:
    """Owns every piece of learned state: preprocessor, learner, evaluator, drift, gate.

    Everything a checkpoint must save lives here, so ``get_state``/``set_state`` are the
    whole story of recovery. ``extra_state`` carries small JSON-able values that the job
    wants checkpointed with it (per-partition applied counts).
    """

    def __init__(self, settings: Settings, learner: Learner | None = None) -> None:
        self.settings = settings
        self.preprocessor = Preprocessor(settings.preprocess)
        self.learner: Learner = learner or make_learner(
            settings.learner,
            n_users=settings.preprocess.user_capacity,
            n_items=settings.preprocess.item_capacity,
            feature_bits=settings.preprocess.feature_bits,
        )
        self.evaluator = ProgressiveEvaluator.for_task(
            self.learner.task, window=settings.learner.eval_window
        )
        self.drift = DriftMonitor(settings.drift)
        self.gate = PromotionGate(settings.snapshot)
        self.examples_trained = 0
        self.watermarks = Watermarks()
        self.extra_state: dict[str, Any] = {}
        # Drift reaction "adapt": the learning rate is multiplied until this many more
        # examples have been learned; ``_base_optimizer`` is the one to go back to.
        self._adapt_remaining = 0
        self._base_optimizer: Any = None
        # Detections since the last reaction boundary, applied when it is reached.
        self._pending_reactions: list[DriftDetection] = []
        self._fault_in(self.learner)
        # Scale-out: this shard's shared rows (None with one shard: nothing changes).
        self.shared: SharedParameters | None = None
        scale = settings.scale
        if scale.shards > 1:
            pre = settings.preprocess
            check_shardable(settings.learner.model, pre.user_encoding, pre.item_encoding)
            self.shared = SharedParameters(
                scale.shard, scale.shards,
                "id" if pre.item_encoding == "vocabulary" else "row")
            self.shared.attach(self.learner, self.preprocessor.items)

    # -- state: everything a checkpoint saves ------------------------------------------

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Copies of every component's state, namespaced ``component.array``."""
        model = self.learner.get_state()
        drift = self.drift.get_state()
        parts: dict[str, tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]] = {}
        if self.shared is not None:
            parts["scaleout"] = self.shared.get_state()
        return namespaced(
            parts | {
                "learner": (model.arrays, {
                    "model_type": model.model_type,
                    "config": model.config,
                    "format_version": model.format_version,
                    "counters": model.counters,
                }),
                "preprocess": self.preprocessor.get_state(),
                "evaluator": self.evaluator.get_state(),
                "drift": (drift.arrays, drift.meta),
                "gate": _batch_arrays(self.gate.window.batch()),
                "pipeline": ({}, {
                    "examples_trained": self.examples_trained,
                    "watermarks": self.watermarks.get_state(),
                    "adapt_remaining": self._adapt_remaining,
                    "pending_reactions": [_plain(dataclasses.asdict(d))
                                          for d in self._pending_reactions],
                    "base_optimizer": (None if self._base_optimizer is None
                                       else self._base_optimizer.to_dict()),
                    # A copy: the checkpoint is serialised later, on another thread.
                    "extra": copy.deepcopy(self.extra_state),
                }),
            }
        )

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned (the inverse, exactly)."""
        learner_meta = meta["learner"]
        self.learner = learner_from_state(
            ModelState(
                model_type=learner_meta["model_type"],
                config=learner_meta["config"],
                arrays=split_namespaced(arrays, "learner"),
                format_version=learner_meta["format_version"],
                counters=learner_meta.get("counters", {}),
            )
        )
        self._fault_in(self.learner)
        self.preprocessor.set_state(split_namespaced(arrays, "preprocess"), meta["preprocess"])
        self.evaluator.set_state(split_namespaced(arrays, "evaluator"), meta["evaluator"])
        self.drift.set_state(DriftState(split_namespaced(arrays, "drift"), meta["drift"]))
        self.gate = PromotionGate(self.settings.snapshot)
        holdout = _batch_from_arrays(split_namespaced(arrays, "gate"))
        if holdout is not None:
            self.gate.observe(holdout)
        own = meta["pipeline"]
        self.examples_trained = int(own["examples_trained"])
        self.watermarks.set_state(own.get("watermarks", {}))
        self._adapt_remaining = int(own.get("adapt_remaining", 0))
        self._pending_reactions = [DriftDetection(**d) for d in own.get("pending_reactions", [])]
        base = own.get("base_optimizer")
        self._base_optimizer = None if base is None else Optimizer.from_dict(base)
        self.extra_state = dict(own.get("extra", {}))
        if self.shared is not None:
            # The restored shared rows are the baseline: nothing in them is unsent learning
            # (the checkpoint cut a block of everything before it).
            self.shared.attach(self.learner, self.preprocessor.items)
            if "scaleout" in meta:
                self.shared.set_state(split_namespaced(arrays, "scaleout"), meta["scaleout"])

    def _fault_in(self, learner: Learner) -> None:
        # preprocess.preallocate promises memory taken at startup, not as ids arrive: the
        # learner's zero-initialised per-user tables fault in lazily otherwise (the 10M
        # soak's steady RSS rose 11% after warm-up while a million users were admitted).
        fault_in = getattr(learner, "fault_in", None)
        if self.settings.preprocess.preallocate and fault_in is not None:
            fault_in()

    def replace_learner(self, learner: Learner) -> None:
        """Continue learning from ``learner`` (the drift reaction 'reset')."""
        self.learner = learner
        self._fault_in(learner)
        self._adapt_remaining = 0
        self._base_optimizer = None
        self._pending_reactions = []
        if self.shared is not None:
            self.shared.attach(learner, self.preprocessor.items)  # the jump is not learning

    # -- processing --------------------------------------------------------------------

    def process(self, values: Sequence[bytes | None], now_ms: int | None = None,
                partitions: npt.NDArray[np.int64] | None = None) -> BatchOutcome:
        """Run one batch of raw message values through every stage.

        ``now_ms`` (the wall clock by default) only bounds how far in the future an event
        may be; lateness is judged against the stream's own watermarks, per partition
        (``partitions``: each message's, ``None`` for one partition), kept here.
        """
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        decoded = decode_batch(values, now_ms, self.settings.preprocess,
                               watermarks=self.watermarks, partitions=partitions)
        rejected = [Rejected(r.index, str(r.reason), r.detail) for r in decoded.rejections]
        pre = self.preprocessor.transform(decoded, now_ms)
        rejected.extend(Rejected(r.index, str(r.reason), r.detail) for r in pre.rejections)
        examples = pre.examples

        started = time.perf_counter()
        if len(examples.recycled_users) or len(examples.recycled_items):
            if self.shared is not None:
                self.shared.track(examples.recycled_items)
            self.learner.reset_rows(examples.recycled_users, examples.recycled_items)
            if self.shared is not None:
                self.shared.reset_items(examples.recycled_items)
        holdout_mask = examples.holdout
        n_holdout = int(holdout_mask.sum())
        train = examples.select(~holdout_mask) if n_holdout else examples
        # Drift reactions take effect only when the number of examples learned since the
        # start crosses a multiple of REACTION_CHUNK, so the batch is cut there: then the
        # model is a function of the events alone, however Kafka polls happen to split
        # them (recovery replays from a checkpoint with other batch boundaries).
        parts_loss: list[npt.NDArray[np.float64]] = []
        detections: list[DriftDetection] = []
        skipped = 0
        reset = False
        for lo, hi in _aligned_chunks(self.examples_trained, len(train), REACTION_CHUNK):
            chunk = train.slice(lo, hi) if (lo, hi) != (0, len(train)) else train
            if self.evaluator.task == "ranking":
                self._rank_positives(chunk)
            if self.shared is not None:
                self.shared.track(chunk.item)
            predictions, learn_stats = self.learner.learn(chunk)
            skipped += learn_stats.n_skipped_nonfinite
            chunk_losses = self.evaluator.update(chunk.y, predictions, chunk.weight)
            chunk_detections = self.drift.update(chunk_losses, predictions, chunk)
            self.examples_trained += len(chunk)
            self._pending_reactions.extend(chunk_detections)
            if self.examples_trained % REACTION_CHUNK == 0:
                reset = self._react(self._pending_reactions, REACTION_CHUNK) or reset
                self._pending_reactions = []
            parts_loss.append(chunk_losses)
            detections.extend(chunk_detections)
        learn_seconds = time.perf_counter() - started
        if n_holdout or len(examples.recycled_users) or len(examples.recycled_items):
            self.gate.observe(examples)  # keeps only the held-out rows
        losses = (parts_loss[0] if len(parts_loss) == 1 else
                  np.concatenate(parts_loss) if parts_loss else np.zeros(0, np.float64))
        return BatchOutcome(
            n_input=len(values),
            rejected=rejected,
            n_accepted=len(values) - len(rejected),
            n_examples=len(examples),
            n_trained=len(train),
            n_holdout=n_holdout,
            n_skipped_nonfinite=skipped,
            losses=losses,
            event_ts_ms=train.ts_ms,
            learn_seconds=learn_seconds,
            drift=list(detections),
            stats=dict(pre.stats),
            reset_requested=reset,
        )

    def _rank_positives(self, batch: ExampleBatch) -> None:
        """Sampled rank of each positive among random items, before the model learns it.

        At most ``RANKED_PER_BATCH`` positives per batch, evenly spread, so ranking costs
        a bounded share of the batch. The candidates' RNG is seeded from the stream
        position, so the metric is reproducible and no state is needed for it.
        """
        positives = np.flatnonzero(batch.y > 0)
        if len(positives) == 0:
            return
        if len(positives) > RANKED_PER_BATCH:
            positives = positives[:: len(positives) // RANKED_PER_BATCH][:RANKED_PER_BATCH]
        learner: Any = self.learner
        n_items = max(2, int(getattr(learner, "used_items", learner.n_items)))
        rng = np.random.default_rng((self.settings.learner.seed, self.examples_trained))
        ranks = sampled_ranks(learner.score_pairs, batch.user[positives],
                              batch.item[positives], n_items, RANK_CANDIDATES, rng)
        self.evaluator.update_ranks(ranks)

    def _react(self, detections: Sequence[DriftDetection], n_learned: int) -> bool:
        """Apply 'adapt' reactions here; report whether a 'reset' was asked for."""
        learner: Any = self.learner
        if self._adapt_remaining:
            self._adapt_remaining = max(0, self._adapt_remaining - n_learned)
            if not self._adapt_remaining and self._base_optimizer is not None:
                learner.optimizer = self._base_optimizer
                self._base_optimizer = None
                log.info("drift adaptation over: learning rate back to %g",
                         learner.optimizer.learning_rate)
        reset = False
        for d in detections:
            if d.reaction == "reset":
                reset = True
            elif d.reaction == "adapt" and hasattr(learner, "optimizer"):
                base = self._base_optimizer or learner.optimizer
                self._base_optimizer = base
                learner.optimizer = replace(base, learning_rate=base.learning_rate * d.lr_factor)
                self._adapt_remaining = d.duration_events
                log.info("drift (%s on %s): learning rate x%g for %d examples",
                         d.detector, d.signal, d.lr_factor, d.duration_events)
        return reset


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars as Python numbers, for JSON."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in record.items()}


def _aligned_chunks(position: int, n: int, size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``n`` items that start at stream ``position``, cut
    wherever ``position + i`` is a multiple of ``size``.

    >>> _aligned_chunks(4090, 10, 4096)
    [(0, 6), (6, 10)]
    >>> _aligned_chunks(0, 3, 4096)
    [(0, 3)]
    """
    cuts = [0]
    first = (-position) % size
    cuts.extend(range(first if first else size, n, size))
    cuts.append(n)
    return [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]


_BATCH_FIELDS = ("user", "item", "y", "weight", "ts_ms", "feat_indptr", "feat_idx", "feat_val")


def _batch_arrays(batch: ExampleBatch) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """An example batch as arrays (for the gate's hold-out window in checkpoints)."""
    return {name: np.ascontiguousarray(getattr(batch, name)) for name in _BATCH_FIELDS}, {
        "n": len(batch)
    }


def _batch_from_arrays(arrays: dict[str, npt.NDArray[Any]]) -> ExampleBatch | None:
    if not arrays or len(arrays["user"]) == 0:
        return None
    batch = ExampleBatch(**{name: arrays[name] for name in _BATCH_FIELDS})
    batch.holdout = np.ones(len(batch), dtype=np.bool_)
    return batch
