"""The preprocessing stage as the runtime sees it: decoded events in, examples out.

:class:`Preprocessor` chains, for one decoded batch:

1. **dedup** of ``event_id`` (:class:`~service.preprocess.dedup.Deduplicator`); repeats
   are returned as ``duplicate`` rejections so the runtime dead-letters them;
2. **id encoding** of users and items (:class:`~service.preprocess.vocabulary.Vocabulary`
   or :class:`~service.preprocess.vocabulary.HashingEncoder`, per field);
3. **side features** (:class:`~service.preprocess.features.FeatureHasher`);
4. **labels** (:class:`~service.preprocess.labels.Labeler`); in the binary task an
   example is an impression with the rows, features and holdout flag it had when shown;
5. the **holdout** flag: a fixed ``holdout_fraction`` of events, chosen by a hash of
   ``event_id`` so a replay holds out the same events (a binary example takes its
   impression's).

Events that are valid but make no example for the task (a click in a regression task) are
accepted: they are neither rejected nor examples. Only events relevant to the task touch
the vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.events.decode import DecodedBatch
from service.events.gc_pause import gc_paused
from service.events.reasons import Rejection, RejectReason
from service.examples import ExampleBatch
from service.preprocess.config import PreprocessConfig
from service.preprocess.dedup import Deduplicator
from service.preprocess.features import FeatureHasher
from service.preprocess.hashing import combine_arrays, hash_packed, seed_for
from service.preprocess.labels import BinaryLabels, Labeler
from service.preprocess.vocabulary import HashingEncoder, Vocabulary

# 3: pending entries hold positives with their impression's state (labels.py). Format 2
# is still read: its clicked entries were emitted already and are dropped on load.
STATE_FORMAT = 3
_READABLE_FORMATS = (2, STATE_FORMAT)
_HOLDOUT_SCALE = float(1 << 53)
# Settings that change what a row or slot means: state saved under others is refused.
_FINGERPRINT_FIELDS = (
    "dedup_window_events", "user_capacity", "item_capacity", "user_encoding", "item_encoding",
    "user_hash_bits", "item_hash_bits", "feature_bits", "hash_seed", "task", "max_pending",
)  # (max_pending_features may grow: the labeler checks it)


@dataclass(slots=True)
class PreprocessResult:
    """One batch through preprocessing.

    Parameters
    ----------
    examples
        Training examples for the learner (holdout flag set; recycled rows listed).
    rejections
        Events refused here (``duplicate``), indexed into the original message batch.
    stats
        Counts for metrics: see :meth:`Preprocessor.transform`.
    """

    examples: ExampleBatch
    rejections: list[Rejection] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


class Preprocessor:
    """Dedup, encode, featurise and label decoded events.

    Parameters
    ----------
    config
        The ``preprocess`` settings.

    Example
    -------
    >>> from service.events.decode import decode_batch
    >>> msg = (b'{"schema_version":1,"event_id":"e%d","event_type":"rating","user_id":"u1",'
    ...        b'"item_id":"i1","timestamp":1700000000000,"value":4.5}')
    >>> pre = Preprocessor(PreprocessConfig(user_admit_after=1, item_admit_after=1))
    >>> out = pre.transform(decode_batch([msg % 1, msg % 1, msg % 2], 1_700_000_000_000),
    ...                     1_700_000_000_000)
    >>> out.examples.user.tolist(), out.examples.y.tolist(), [r.index for r in out.rejections]
    ([1, 1], [4.5, 4.5], [1])
    """

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        cfg = config if config is not None else PreprocessConfig()
        self.config = cfg
        self.dedup = Deduplicator(cfg.dedup_window_events, cfg.dedup_window_ms)
        self.users = self._encoder("user", cfg)
        self.items = self._encoder("item", cfg)
        self.features = FeatureHasher(cfg)
        self.labels = Labeler(cfg)
        seed = cfg.hash_seed
        self._seed = {name: seed_for(name, seed) for name in ("event_id", "user", "item",
                                                                "holdout")}
        self._totals = {"events": 0, "duplicates": 0, "examples": 0}
        if cfg.preallocate:
            self.preallocate()

    def preallocate(self) -> None:
        """Allocate every bounded structure at its bound now, instead of growing it."""
        self.dedup.preallocate()
        self.labels.preallocate()
        for encoder in (self.users, self.items):
            if isinstance(encoder, Vocabulary):
                encoder.preallocate()

    @staticmethod
    def _encoder(name: str, cfg: PreprocessConfig) -> Vocabulary | HashingEncoder:
        capacity = getattr(cfg, f"{name}_capacity")
        if getattr(cfg, f"{name}_encoding") == "hashing":
            bits = getattr(cfg, f"{name}_hash_bits") or capacity.bit_length() - 1
            return HashingEncoder(bits)
        return Vocabulary(capacity, getattr(cfg, f"{name}_admit_after"),
                          getattr(cfg, f"{name}_evict_after_ms"))

    # -- the hot path ---------------------------------------------------------------------

    def transform(self, decoded: DecodedBatch, now_ms: int) -> PreprocessResult:
        """Preprocess one decoded batch.

        ``stats`` holds this batch's ``accepted`` (events kept after dedup),
        ``duplicates``, ``examples``, ``positives``, ``negatives``, ``holdout``,
        ``recycled_users``/``recycled_items``, and current gauges ``users``, ``items``,
        ``pending_impressions``, ``dedup_ids`` and the labeler's running totals
        (``late_clicks``, ``pending_evicted``...).
        """
        del now_ms  # windows run on event time, so replays give the same examples
        with gc_paused():
            return self._transform(decoded)

    def _transform(self, decoded: DecodedBatch) -> PreprocessResult:
        eid_key = hash_packed(decoded.packed_ids("event_id"), self._seed["event_id"])
        dup = self.dedup.observe(eid_key, decoded.ts_ms)
        n_dup = int(dup.sum())
        rejections = []
        if n_dup:
            event_ids = decoded.packed_ids("event_id")
            for k in np.flatnonzero(dup).tolist():
                rejections.append(Rejection(
                    int(decoded.index[k]), RejectReason.DUPLICATE,
                    f"event_id {event_ids[k]!r:.80} was already accepted within the "
                    "dedup window; producers must not reuse event ids"))
        codes = decoded.event_type
        sel = np.flatnonzero(~dup & self.labels.relevant(codes))
        everything = len(sel) == len(codes)
        codes, ts = codes[sel], decoded.ts_ms[sel]
        user_ids, item_ids = (decoded.packed_ids(name) if everything
                              else decoded.packed_ids(name).take(sel)
                              for name in ("user_id", "item_id"))
        context, user_features, item_features = (
            decoded.maps[name] if everything else decoded.maps[name].take(sel)
            for name in ("context", "user_features", "item_features"))
        # Hashing every accepted id and keeping the selected ones is cheaper than packing
        # the selection again: the decoder packed them already.
        user_key = hash_packed(decoded.packed_ids("user_id"), self._seed["user"])[sel]
        item_key = hash_packed(decoded.packed_ids("item_id"), self._seed["item"])[sel]
        holdout = (eid_key[sel] >> np.uint64(11)).astype(np.float64) < (
            self.config.holdout_fraction * _HOLDOUT_SCALE
        )
        user_row, _ = self.users.encode(user_key, ts, user_ids)
        item_row, _ = self.items.encode(item_key, ts, item_ids)
        indptr, fidx, fval = self.features.transform(
            context, user_features, item_features, user_key, item_key, codes)
        if self.labels.task == "regression":
            examples = ExampleBatch(
                user=user_row, item=item_row,
                y=decoded.value[sel].astype(np.float32),
                weight=np.full(len(sel), self.labels.weights[4], dtype=np.float32),
                ts_ms=ts, feat_indptr=indptr, feat_idx=fidx, feat_val=fval, holdout=holdout,
            )
            n_pos = n_neg = 0
        else:
            lab = self.labels.binary(codes, ts, combine_arrays(user_key, item_key), user_row,
                                     item_row, user_key, item_key, holdout, indptr, fidx, fval)
            examples = self._binary_examples(lab)
            n_pos = int(np.count_nonzero(lab.y))
            n_neg = len(lab.y) - n_pos
        # Where each row changed owner, as the position of the first example that may be
        # the new owner's: the learner resets the row right there. Eviction itself runs
        # inside encode, event by event, never here at the end of the batch: the batch is
        # whatever one fetch delivered, and the state must not depend on it.
        for side, encoder in (("users", self.users), ("items", self.items)):
            if isinstance(encoder, Vocabulary) and len(encoder.last_recycled):
                at = encoder.last_recycled_at
                if self.labels.task != "regression":
                    # Binary examples are impressions emitted when their window closes,
                    # each on the row its impression had if that row still has the same
                    # owner (row 0 otherwise): no example of this batch is the old
                    # owner's, so the reset goes first. (Which examples fall back to
                    # row 0 still follows the batch's end: see README, exactly once.)
                    at = np.zeros(len(encoder.last_recycled), dtype=np.int64)
                setattr(examples, f"recycled_{side}", encoder.last_recycled)
                setattr(examples, f"recycled_{side}_at", at)
        self._totals["events"] += len(decoded)
        self._totals["duplicates"] += n_dup
        self._totals["examples"] += len(examples)
        stats: dict[str, float] = {
            "accepted": len(decoded) - n_dup,
            "duplicates": n_dup,
            "examples": len(examples),
            "positives": n_pos,
            "negatives": n_neg,
            "holdout": int(examples.holdout.sum()),
            "recycled_users": len(examples.recycled_users),
            "recycled_items": len(examples.recycled_items),
            "users": len(self.users),
            "items": len(self.items),
            "dedup_ids": len(self.dedup),
            "pending_impressions": self.labels.pending if self.labels.task == "binary" else 0,
        }
        stats.update(self.labels.counters())
        return PreprocessResult(examples, rejections, stats)

    def _binary_examples(self, lab: BinaryLabels) -> ExampleBatch:
        """The resolved examples, each with the rows its impression had when shown.

        A row may have changed owner while its example waited (evicted and given to
        another id): then it is no longer that user's (item's) row, and the example goes
        to row 0. Positives and negatives are checked alike, so the check cannot tell
        them apart.
        """
        user, item = lab.user, lab.item
        if isinstance(self.users, Vocabulary):
            user = np.where(self.users.owner(user) == lab.user_key, user, 0)
        if isinstance(self.items, Vocabulary):
            item = np.where(self.items.owner(item) == lab.item_key, item, 0)
        width = lab.fidx.shape[1] if lab.fidx.ndim == 2 else 0
        keep = np.arange(width)[None, :] < lab.nf[:, None]
        indptr = np.zeros(len(lab.nf) + 1, dtype=np.int64)
        np.cumsum(lab.nf, out=indptr[1:])
        return ExampleBatch(
            user=user, item=item, y=lab.y, weight=lab.weight, ts_ms=lab.ts,
            feat_indptr=indptr, feat_idx=lab.fidx[keep].astype(np.int64),
            feat_val=lab.fval[keep], holdout=lab.holdout,
        )

    # -- serving ----------------------------------------------------------------------------

    def encoding(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """How ids and features map to model rows and slots, for a snapshot's manifest.

        Returns the manifest's ``encoding`` dict and its arrays. A vocabulary side is
        ``{"kind": "vocabulary", "utf8": ..., "offsets": ...}`` naming the arrays that hold
        each row's current id (see :mod:`service.snapshots.encoding`); a hashing side is
        ``{"kind": "hash", "seed": ..., "bits": ...}`` and needs
        :class:`~service.preprocess.id_encoder.HashedIdEncoder` on the client.
        """
        encoding: dict[str, Any] = {
            "feature_bits": self.config.feature_bits,
            "hash_seed": self.config.hash_seed,
            "crosses": list(self.config.crosses),
            "task": self.config.task,
        }
        arrays: dict[str, npt.NDArray[Any]] = {}
        for side, encoder in (("user", self.users), ("item", self.items)):
            if isinstance(encoder, Vocabulary):
                utf8, offsets = encoder.packed_row_ids()
                arrays[f"{side}_ids_utf8"], arrays[f"{side}_ids_offsets"] = utf8, offsets
                encoding[side] = {"kind": "vocabulary", "utf8": f"{side}_ids_utf8",
                                  "offsets": f"{side}_ids_offsets"}
            else:
                encoding[side] = {"kind": "hash", "seed": self._seed[side],
                                  "bits": encoder.bits}
        return encoding, arrays

    # -- state ----------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {name: getattr(self.config, name) for name in _FINGERPRINT_FIELDS}

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Everything learned, as named arrays plus JSON-able metadata (no pickle).

        ``set_state`` on a preprocessor built with the same settings continues exactly
        where this one stopped.
        """
        arrays: dict[str, npt.NDArray[Any]] = {}
        meta: dict[str, Any] = {"format": STATE_FORMAT, "config": self._fingerprint(),
                                "totals": dict(self._totals)}
        parts: dict[str, Any] = {"dedup": self.dedup, "features": self.features,
                                 "labels": self.labels}
        if isinstance(self.users, Vocabulary):
            parts["users"] = self.users
        if isinstance(self.items, Vocabulary):
            parts["items"] = self.items
        for name, part in parts.items():
            part_arrays, part_meta = part.get_state()
            arrays |= {f"{name}.{k}": v for k, v in part_arrays.items()}
            meta[name] = part_meta
        return arrays, meta

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s output; refuses state saved under other settings."""
        if meta.get("format") not in _READABLE_FORMATS:
            raise ValueError(
                f"preprocessor state format {meta.get('format')!r} is not one of "
                f"{_READABLE_FORMATS}: the checkpoint was written by another version of "
                "freshrec; start without it"
            )
        saved, current = meta.get("config", {}), self._fingerprint()
        changed = sorted(k for k in current if saved.get(k) != current[k])
        if changed:
            raise ValueError(
                "the checkpoint was written with other preprocessing settings: "
                + ", ".join(f"FRESHREC_PREPROCESS__{k.upper()}={saved.get(k)!r} (now "
                            f"{current[k]!r})" for k in changed)
                + ". These shape the vocabularies and the model's tables, so a checkpoint "
                "cannot take new values: put them back, or start a new model under another "
                "FRESHREC_KAFKA__GROUP_ID or storage prefix (and `freshrec backfill` it from "
                "history)"
            )
        parts: dict[str, Any] = {"dedup": self.dedup, "features": self.features,
                                 "labels": self.labels}
        if isinstance(self.users, Vocabulary):
            parts["users"] = self.users
        if isinstance(self.items, Vocabulary):
            parts["items"] = self.items
        for name, part in parts.items():
            prefix = f"{name}."
            part_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            part.set_state(part_arrays, meta[name])
        self._totals = {k: int(v) for k, v in meta.get("totals", {}).items()}
        if self.config.preallocate:  # restored at the size of the state: grow back
            self.preallocate()
