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

import bisect
import copy
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
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
from service.learners.registry import n_shadows
from service.learners.strategies import MicroBatch
from service.preprocess import Preprocessor
from service.scaleout import SharedParameters, check_shardable
from service.snapshots.gate import PromotionGate
from service.snapshots.holdout import concat

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
    # Examples of an open mini-batch kept for the next batch (micro_batch only).
    n_held: int = 0

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

    **Determinism.** The state after a stream is a function of the stream's events and
    the settings alone: not of how the broker cut it into batches, not of restarts (a
    checkpoint restores it exactly), not of the wall clock. Nothing happens "at the end of
    a batch"; every state change happens at a point defined by the events:

    1. the vocabularies admit and evict ids event by event, as event time passes;
    2. a recycled row is reset right before the first example that may belong to its new
       owner (the batch is split there when an earlier example of the batch touches it),
       or with ``micro_batch`` at the start of that example's mini-batch;
    3. drift reactions take effect when the count of learned examples crosses a multiple
       of ``REACTION_CHUNK``, and a 'reset' continues from the reset point, a copy of the
       model taken at such a boundary (``drift.reset_point_events``), never from what
       happens to be published;
    4. with the ``micro_batch`` strategy the mini-batches are cut by the stream (their
       size, their event-time span, the boundaries above), and the examples of a
       mini-batch that is still open at the end of a batch wait in the state for the
       rest of it;
    5. running sums add example after example, and the gate's window forgets a held-out
       example exactly when its row changes owner.

    What depends on the wall clock (when checkpoints and snapshots are written, the
    decoder's lateness rule, scale-out merges) feeds nothing back into this state, except
    that the decoder's rule decides which events are accepted at all.
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
        # Sees every learned part of the queue, resets in place (a backfill records pass
        # 1 with it, to learn the same examples again). Not state: nothing restores it.
        self.recorder: Callable[[ExampleBatch], None] | None = None
        # Drift reaction "adapt": the learning rate is multiplied until this many more
        # examples have been learned; ``_base_optimizer`` is the one to go back to.
        self._adapt_remaining = 0
        self._base_optimizer: Any = None
        # Detections since the last reaction boundary, applied when it is reached.
        self._pending_reactions: list[DriftDetection] = []
        # Micro-batch: examples of the mini-batch still open, learned when it closes.
        self._held: ExampleBatch | None = None
        self._finishing = False  # finish(): the open mini-batch is learned as it is
        # Drift reaction "reset": the reset point (a copy of the model at a reaction
        # boundary) and the rows recycled since, which the copy still holds for their
        # previous owners. Kept only while some detector's reaction is "reset".
        drift = settings.drift
        self._keeps_reset_point = drift.enabled and "reset" in (
            drift.adwin.reaction, drift.page_hinkley.reaction, drift.psi.reaction)
        self._reset_point: ModelState | None = None
        self._reset_point_at = 0
        self._recycled_since_point = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._fault_in(self.learner)
        # Scale-out: this shard's shared rows (None with one shard: nothing changes).
        self.shared: SharedParameters | None = None
        scale = settings.scale
        if scale.shards > 1:
            pre = settings.preprocess
            check_shardable(settings.learner.model, pre.user_encoding, pre.item_encoding,
                            n_shadows(settings.learner))
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
        if self._held is not None:
            parts["held"] = _batch_arrays(self._held, recycles=True)
        if self._reset_point is not None:
            point = self._reset_point
            users, items = self._recycled_since_point
            parts["reset_point"] = (
                point.arrays | {"recycled_users": users, "recycled_items": items},
                {"model_type": point.model_type, "config": point.config,
                 "format_version": point.format_version, "counters": point.counters,
                 "at": self._reset_point_at})
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
        """Restore what ``get_state`` returned (the inverse, exactly).

        Settings that changed since the state was saved are handled so that a restart
        with edited settings never fails: the model keeps the settings it was built with
        (its shape and optimiser cannot change mid-stream; a WARNING lists what differs
        and how to apply it), and drift detectors whose settings changed start afresh
        (their windows are soft state, relearnt from the next events; a WARNING says
        so). Metric windows of another size keep their newest values.
        """
        learner_meta = meta["learner"]
        _warn_if_learner_settings_differ(self.learner, learner_meta)
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
        why = self.drift.restore_or_restart(
            DriftState(split_namespaced(arrays, "drift"), meta["drift"]))
        if why is not None:
            log.warning("the drift detectors start afresh: the saved ones do not fit the "
                        "current drift settings (%s); the model and every other state are "
                        "restored", why)
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
        self._held = (_batch_from_arrays(split_namespaced(arrays, "held"), recycles=True)
                      if "held" in meta else None)
        self._reset_point, self._reset_point_at = None, 0
        self._recycled_since_point = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if "reset_point" in meta:
            point, point_arrays = meta["reset_point"], split_namespaced(arrays, "reset_point")
            self._recycled_since_point = (
                np.asarray(point_arrays.pop("recycled_users"), dtype=np.int64),
                np.asarray(point_arrays.pop("recycled_items"), dtype=np.int64))
            self._reset_point = ModelState(
                model_type=point["model_type"], config=point["config"], arrays=point_arrays,
                format_version=point["format_version"], counters=point["counters"])
            self._reset_point_at = int(point["at"])
        if not self._keeps_reset_point:  # no 'reset' reaction any more: no use for it
            self._reset_point = None
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

    def learn_again(self, batch: ExampleBatch) -> npt.NDArray[np.float32]:
        """Learn examples that were learned before once more (a backfill's later passes);
        returns the predictions made before each step.

        Only the model changes: the evaluator, drift detectors, gate, counters and the
        reaction boundaries stay as the stream left them, so what the live stream does
        next does not depend on how many passes were made. The rows must still belong to
        the examples' ids (the caller's part). While a drift 'adapt' boost is running the
        examples are learned at the base rate: the boost is for the stream's new events.
        """
        learner: Any = self.learner
        boosted = self._base_optimizer is not None and hasattr(learner, "optimizer")
        if boosted:
            learner.optimizer, boost = self._base_optimizer, learner.optimizer
        try:
            if self.shared is not None:
                self.shared.track(batch.item)
            predictions, _ = self.learner.learn(batch)
        finally:
            if boosted:
                learner.optimizer = boost
        return predictions

    # -- processing --------------------------------------------------------------------

    def process(self, values: Sequence[bytes | None], now_ms: int | None = None,
                partitions: npt.NDArray[np.int64] | None = None) -> BatchOutcome:
        """Run one batch of raw message values through every stage.

        Steps:

        1. decode: ``now_ms`` (the wall clock by default) only bounds how far in the future
           an event may be; lateness is judged against the stream's own watermarks, per
           partition (``partitions``: each message's, ``None`` for one partition), kept
           here;
        2. preprocess: dedup, vocabularies (admission, eviction, recycling), features,
           labels, the hold-out flag;
        3. queue the training examples behind those of a mini-batch still open;
        4. learn the part of the queue that can be learned now, in segments cut at every
           multiple of ``REACTION_CHUNK`` learned examples and wherever a recycled row
           must be reset between two examples: per segment, reset the rows recycled in
           it, score then learn, feed the evaluator and the drift detectors, and at a
           reaction boundary apply the reactions (and maybe take a reset point);
        5. keep the rest of the queue (an open mini-batch) for the next batch;
        6. hand the held-out examples to the gate's window.
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
        holdout_mask = examples.holdout
        n_holdout = int(holdout_mask.sum())
        # select() moves each reset to the first training example at or after it.
        train = examples.select(~holdout_mask) if n_holdout else examples
        queue = train if self._held is None else _concat_with_recycles(self._held, train)
        segments, n_learn = self._plan(queue)
        parts_loss: list[npt.NDArray[np.float64]] = []
        detections: list[DriftDetection] = []
        skipped = 0
        reset = False
        for lo, hi, users, items in segments:
            if len(users) or len(items):
                self._reset_rows(users, items)
            if hi == lo:
                continue
            chunk = queue.slice(lo, hi) if (lo, hi) != (0, len(queue)) else queue
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
                quiet = not self._pending_reactions
                reset = self._react(self._pending_reactions, REACTION_CHUNK) or reset
                self._maybe_take_reset_point(quiet=quiet)
                self._pending_reactions = []
            parts_loss.append(chunk_losses)
            detections.extend(chunk_detections)
        self._held = queue.slice(n_learn, len(queue)) if n_learn < len(queue) else None
        learned = queue.slice(0, n_learn) if n_learn < len(queue) else queue
        if self.recorder is not None:
            self.recorder(learned)
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
            n_trained=n_learn,
            n_holdout=n_holdout,
            n_skipped_nonfinite=skipped,
            losses=losses,
            event_ts_ms=learned.ts_ms,
            learn_seconds=learn_seconds,
            drift=list(detections),
            stats=dict(pre.stats),
            reset_requested=reset,
            n_held=len(queue) - n_learn,
        )

    def finish(self) -> BatchOutcome:
        """The stream has ended: learn the mini-batch still open, as it is.

        For replays of a finite data set (benchmarks). The service never calls it: a live
        stream has no end, and learning a mini-batch before it is closed would make the
        model depend on where a run happened to stop.
        """
        self._finishing = True
        try:
            return self.process([])
        finally:
            self._finishing = False

    def _plan(self, queue: ExampleBatch
              ) -> tuple[list[tuple[int, int, npt.NDArray[np.int64], npt.NDArray[np.int64]]],
                         int]:
        """How to learn ``queue`` now: segments ``(lo, hi, users, items)`` (reset those
        rows, then learn ``[lo, hi)``), and how many examples that learns.

        Segments are cut where the count of learned examples crosses a multiple of
        ``REACTION_CHUNK``, and for the resets of recycled rows:

        * per event, where a row is recycled after an example of the same segment used
          it for its previous owner. Any other reset is done at the start of its segment:
          nothing between there and its own position reads the row, so that is the same
          as doing it at its position. The ranking task reads item rows that are not its
          examples' (sampled negatives, the metric's candidates): there every item reset
          cuts;
        * with ``micro_batch``, at the start of the mini-batch that holds the reset: a
          mini-batch is scored with the parameters from before it and stepped at its end,
          so that is where a new owner's row can start afresh. Mini-batches are cut by
          the stream (size, event-time span, the boundaries above) and so are these cuts.
          The learned part ends where the last closed mini-batch ends; the rest, and the
          resets inside it, wait for the next batch.
        """
        n = len(queue)
        first = (-self.examples_trained) % REACTION_CHUNK
        starts = [0, *range(first if first else REACTION_CHUNK, n, REACTION_CHUNK)]
        strategy = getattr(self.learner, "strategy", None)
        micro = isinstance(strategy, MicroBatch)
        if micro:
            assert isinstance(strategy, MicroBatch)
            # Mini-batches start afresh at every boundary (the learner is called there).
            batch_starts = sorted(
                lo + int(b) for lo, hi in itertools.pairwise([*starts, n])
                for b in strategy.bounds(queue.ts_ms[lo:hi], queue.user[lo:hi])[:-1])
        users, users_at, items, items_at = queue.recycles()
        any_item = self.evaluator.task == "ranking"
        resets = sorted(  # (position, side, row, previous use of the row, always cut)
            [(a, 0, r, p, False) for r, a, p in zip(
                users.tolist(), users_at.tolist(),
                _previous_use(queue.user, users, users_at).tolist(), strict=True)]
            + [(a, 1, r, p, any_item) for r, a, p in zip(
                items.tolist(), items_at.tolist(),
                _previous_use(queue.item, items, items_at).tolist(), strict=True)])
        placed: list[tuple[int, int, int, int]] = []  # (segment start, side, row, position)
        for at, side, row, previous, always in resets:
            if at >= n:  # after the last example: it happens after it anyway
                placed.append((n, side, row, at))
                continue
            start = starts[bisect.bisect_right(starts, at) - 1]
            if micro:
                cut = batch_starts[bisect.bisect_right(batch_starts, at) - 1]
            else:
                cut = at if always or previous >= start else start
            if cut > start:
                bisect.insort(starts, cut)
            placed.append((max(start, cut), side, row, at))
        bounds = [*starts, n]
        n_learn = self._closed(queue, bounds)
        segments = [(lo, min(hi, n_learn)) for lo, hi in itertools.pairwise(bounds)
                    if lo < n_learn]
        if n_learn == n:
            segments.append((n, n))  # resets placed after the last example
        # Paranoid: the segments tile [0, n_learn) in order.
        assert not segments or segments[0][0] == 0, segments
        assert all(a[1] == b[0] for a, b in itertools.pairwise(segments)), segments
        assert not segments or segments[-1][1] == n_learn, (segments, n_learn)
        # Resets at or past n_learn stay with the open mini-batch (queue.slice keeps them).
        out = []
        for lo, hi in segments:
            mine = [(side, row) for start, side, row, at in placed
                    if start == lo and (at < n_learn or n_learn == n)]
            out.append((lo, hi,
                        np.asarray([r for side, r in mine if side == 0], dtype=np.int64),
                        np.asarray([r for side, r in mine if side == 1], dtype=np.int64)))
        return out, n_learn

    def _closed(self, queue: ExampleBatch, bounds: list[int]) -> int:
        """How many examples of ``queue`` can be learned now: all of them, except with
        ``micro_batch`` the last mini-batch while it may still grow (fewer than ``size``
        examples and not ended by a reaction boundary; its event-time span is only known
        to be over when a later example arrives)."""
        strategy = getattr(self.learner, "strategy", None)
        n = len(queue)
        if not isinstance(strategy, MicroBatch) or n == 0 or self._finishing:
            return n
        lo = bounds[-2]  # the learner starts mini-batches afresh at every segment
        # The last one starts here.
        last = lo + int(strategy.bounds(queue.ts_ms[lo:], queue.user[lo:])[-2])
        if n - last >= strategy.size or (self.examples_trained + n) % REACTION_CHUNK == 0:
            return n
        return last

    def _reset_rows(self, users: npt.NDArray[np.int64], items: npt.NDArray[np.int64]) -> None:
        """Reinitialise recycled rows now (their new owner's first example is next)."""
        if self.shared is not None:
            self.shared.track(items)
        self.learner.reset_rows(users, items)
        if self.shared is not None:
            self.shared.reset_items(items)
        if self._reset_point is not None:
            # The reset point still holds these rows for their previous owners.
            since_u, since_i = self._recycled_since_point
            self._recycled_since_point = (np.union1d(since_u, users),
                                          np.union1d(since_i, items))

    def _maybe_take_reset_point(self, *, quiet: bool) -> None:
        """At a reaction boundary: copy the model as the reset point once a multiple of
        ``drift.reset_point_events`` has been crossed since the last copy, at the first
        boundary with no detection since the one before (a copy taken while a drift is
        being detected would already hold it) and a finite model."""
        if not self._keeps_reset_point:
            return
        every = self.settings.drift.reset_point_events
        now = self.examples_trained
        due = self._reset_point is None or now // every > self._reset_point_at // every
        if not due or not quiet or not self.learner.is_finite():
            return
        if self._base_optimizer is not None:
            # Taken while an 'adapt' boost runs: the copy learns at the base rate (set
            # through the learner, which knows where its optimisers live).
            learner: Any = self.learner
            boosted = learner.optimizer
            learner.optimizer = self._base_optimizer
            point = learner.get_state()
            learner.optimizer = boosted
        else:
            point = self.learner.get_state()
        self._reset_point, self._reset_point_at = point, now
        self._recycled_since_point = (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def _reset_to_point(self) -> bool:
        """Drift reaction 'reset': continue from the reset point; False if there is none."""
        point = self._reset_point
        if point is None:
            log.warning("drift reset requested but no reset point was taken yet")
            return False
        learner = learner_from_state(ModelState(
            model_type=point.model_type, config=point.config,
            arrays={k: v.copy() for k, v in point.arrays.items()},
            format_version=point.format_version, counters=dict(point.counters)))
        self.replace_learner(learner)
        users, items = self._recycled_since_point
        if len(users) or len(items):
            # Those rows belong to other ids now: the copy's values are not theirs.
            learner.reset_rows(users, items)
            if self.shared is not None:
                self.shared.reset_items(items)
        log.warning("drift reset at example %d: continuing from the reset point taken at "
                    "example %d", self.examples_trained, self._reset_point_at)
        return True

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
        """Apply the reactions of the detections since the last boundary: a 'reset'
        first (it replaces the learner), then 'adapt'; True if a reset happened."""
        learner: Any = self.learner
        if self._adapt_remaining:
            self._adapt_remaining = max(0, self._adapt_remaining - n_learned)
            if not self._adapt_remaining and self._base_optimizer is not None:
                learner.optimizer = self._base_optimizer
                self._base_optimizer = None
                log.info("drift adaptation over: learning rate back to %g",
                         learner.optimizer.learning_rate)
        reset = False
        if any(d.reaction == "reset" for d in detections):
            reset = self._reset_to_point()
            learner = self.learner
        for d in detections:
            if d.reaction == "adapt" and hasattr(learner, "optimizer"):
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


def _previous_use(col: npt.NDArray[np.int64], rows: npt.NDArray[np.int64],
                  at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each reset of ``rows[k]`` before example ``at[k]``: the last position before
    ``at[k]`` whose example uses that row (``col``), or -1."""
    out = np.full(len(rows), -1, dtype=np.int64)
    if not len(rows) or not len(col):
        return out
    used = np.flatnonzero(np.isin(col, rows))
    if not len(used):
        return out
    stride = np.int64(len(col) + 1)
    keys = np.sort(col[used] * stride + used)  # by row, then position
    k = np.searchsorted(keys, rows * stride + at) - 1
    found = (k >= 0) & (keys[np.maximum(k, 0)] // stride == rows)
    out[found] = keys[k[found]] % stride
    return out


def _concat_with_recycles(first: ExampleBatch, second: ExampleBatch) -> ExampleBatch:
    """``first`` then ``second`` as one batch, with both batches' resets in place."""
    out = concat([first, second])
    fu, fua, fi, fia = first.recycles()
    su, sua, si, sia = second.recycles()
    out.recycled_users = np.concatenate([fu, su])
    out.recycled_users_at = np.concatenate([fua, sua + len(first)])
    out.recycled_items = np.concatenate([fi, si])
    out.recycled_items_at = np.concatenate([fia, sia + len(first)])
    return out


_BATCH_FIELDS = ("user", "item", "y", "weight", "ts_ms", "feat_indptr", "feat_idx", "feat_val")
_RECYCLE_FIELDS = ("recycled_users", "recycled_users_at", "recycled_items",
                   "recycled_items_at")


def _batch_arrays(batch: ExampleBatch, recycles: bool = False
                  ) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """An example batch as arrays (the gate's hold-out window, an open mini-batch)."""
    arrays = {name: np.ascontiguousarray(getattr(batch, name)) for name in _BATCH_FIELDS}
    if recycles:
        arrays |= dict(zip(_RECYCLE_FIELDS, map(np.ascontiguousarray, batch.recycles()),
                           strict=True))
    return arrays, {"n": len(batch)}


def _batch_from_arrays(arrays: dict[str, npt.NDArray[Any]], recycles: bool = False
                       ) -> ExampleBatch | None:
    if not arrays or len(arrays["user"]) == 0:
        return None
    batch = ExampleBatch(**{name: arrays[name] for name in _BATCH_FIELDS})
    if recycles:
        for name in _RECYCLE_FIELDS:
            setattr(batch, name, np.asarray(arrays[name], dtype=np.int64))
    else:
        batch.holdout = np.ones(len(batch), dtype=np.bool_)
    return batch


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}`` (lists by position), to name differences;
    state format versions are left out (they are not settings)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if key != "format_version"
                for k, v in _flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value)
                for k, v in _flat(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def _warn_if_learner_settings_differ(configured: Learner, saved: dict[str, Any]) -> None:
    """Log which learner settings of the running configuration the restored model does
    not follow (it keeps those it was built with)."""
    get_config = getattr(configured, "get_config", None)
    if get_config is None:
        return
    if configured.model_type != saved["model_type"]:
        shown = f"model {saved['model_type']!r} -> {configured.model_type!r}"
    else:
        a, b = _flat(saved["config"]), _flat(get_config())
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if not differ:
            return
        shown = ", ".join(f"{k}: {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
                          for k in differ[:8]) + (f" and {len(differ) - 8} more"
                                                  if len(differ) > 8 else "")
    log.warning("the restored model keeps the learner settings it was built with, not the "
                "current ones (checkpoint -> settings: %s). To learn with the new settings, "
                "start a new model: another FRESHREC_KAFKA__GROUP_ID or storage prefix, "
                "then `freshrec backfill` from history if needed", shown)
