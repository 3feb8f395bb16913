"""Checkpoints: the full learned state bound to the Kafka offsets it reflects.

A checkpoint is what makes "applied exactly once" true across crashes. It stores the
model, every piece of preprocessing state, the evaluator, the drift detectors and the gate's
hold-out window, together with the next offset of every assigned partition. Recovery loads
the newest complete checkpoint and seeks each partition to its stored offset, so an event
is applied after a crash if and only if it was not applied before it.

Writing protocol (one checkpoint):

1. On the main thread, between two batches, copy the state (``get_state`` returns copies)
   and the offsets. This is the only part that stalls consumption.
2. On a background thread, write the array files, then the manifest. The manifest is the
   commit point: a checkpoint without one is invisible to recovery.
3. Still on the background thread, prune old checkpoints, keeping the newest ``keep``.
   Pruning is housekeeping: a store that fails it (it may have gone down right after the
   manifest landed) leaves extra folders for the next prune, and never fails the
   checkpoint or the service.
4. Back on the main thread (``poll_background``), report the checkpoint durable: the job
   then commits its offsets to Kafka, for lag monitoring and for tools that read them.

Names are ``<epoch>-<sequence>``. The epoch goes up by one each time an instance becomes
the active one (``begin_epoch``), and recovery takes the newest checkpoint by epoch first:
a former leader that has not yet noticed it lost the lease may still finish a write, but
that write can never be preferred to the new leader's. Every checkpoint is
self-consistent (state and offsets copied together), so whichever is loaded, each event is
applied exactly once from there on.

At most one checkpoint is written at a time. While one is in flight, ``save`` with
``wait=False`` returns False and the job tries again later; the job pauses consumption if
the work not yet checkpointed grows past its bound, so memory stays bounded when the
object store is slow or down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.checkpoint.config import CheckpointConfig
from service.storage import ObjectStore
from service.storage.bundle import (
    BundleIntegrityError,
    BundleManifest,
    BundleNotFound,
    UnsupportedFormatError,
    read_bundle,
    write_bundle,
)

log = logging.getLogger(__name__)

FORMAT = "freshrec.checkpoint"
FORMAT_VERSION = 1

Arrays = dict[str, npt.NDArray[Any]]
OnDurable = Callable[[dict[int, int], float], None]


class Stateful(Protocol):
    """Something whose whole state is arrays plus JSON-able metadata."""

    def get_state(self) -> tuple[Arrays, dict[str, Any]]: ...

    def set_state(self, arrays: Arrays, meta: dict[str, Any]) -> None: ...


class CheckpointedPipeline(Protocol):
    """What the checkpoint manager needs from the pipeline."""

    def get_state(self) -> tuple[Arrays, dict[str, Any]]: ...

    def set_state(self, arrays: Arrays, meta: dict[str, Any]) -> None: ...


CheckpointId = tuple[int, int]  # (epoch, sequence): compares newest-last


@dataclass(frozen=True, slots=True)
class RestoredCheckpoint:
    """Which checkpoint recovery loaded."""

    name: str
    sequence: CheckpointId
    offsets: dict[int, int]
    created_at: float


@dataclass(slots=True)
class _Done:
    sequence: CheckpointId
    offsets: dict[int, int]
    seconds: float
    error: BaseException | None
    on_durable: OnDurable | None


class CheckpointManager:
    """Writes checkpoints in the background and restores the newest complete one.

    Parameters
    ----------
    store
        The object store (S3 or a local folder).
    config
        How often and how many to keep.
    group_id, topic
        Checkpoints live under ``checkpoints/<group_id>/<topic>/`` so that two services
        on different topics or groups never read each other's state.
    folder
        A sub-folder of that prefix (``shard-<i>`` for a shard under scale-out, see
        ``service.scaleout.shards``); empty for the whole topic.
    """

    def __init__(
        self, store: ObjectStore, config: CheckpointConfig, *, group_id: str, topic: str,
        folder: str = "",
    ) -> None:
        self.store = store
        self.config = config
        self.prefix = f"checkpoints/{group_id}/{topic}/" + (f"{folder}/" if folder else "")
        self._epoch = 0
        self._sequence = 0
        self._offsets: dict[int, int] = {}
        self._thread: threading.Thread | None = None
        self._done: queue.Queue[_Done] = queue.Queue()
        self.failures = 0
        self.restored: CheckpointId | None = None

    # -- names -----------------------------------------------------------------------

    def _name(self, cid: CheckpointId) -> str:
        return f"{self.prefix}{cid[0]:08d}-{cid[1]:012d}"

    def _ids(self) -> list[CheckpointId]:
        """Ids of checkpoints present, complete or not, newest first."""
        seen: set[CheckpointId] = set()
        for key in self.store.list(self.prefix):
            head = key[len(self.prefix):].split("/", 1)[0]
            epoch, _, sequence = head.partition("-")
            if epoch.isdigit() and sequence.isdigit():
                seen.add((int(epoch), int(sequence)))
        return sorted(seen, reverse=True)

    def begin_epoch(self) -> int:
        """Start a new leader epoch, above every epoch in the store; returns it."""
        self._epoch = max((e for e, _ in self._ids()), default=0) + 1
        self._sequence = 0
        return self._epoch

    def latest_id(self) -> CheckpointId | None:
        """Id of the newest checkpoint folder (complete or not), or None."""
        ids = self._ids()
        return ids[0] if ids else None

    # -- recovery --------------------------------------------------------------------

    def offsets(self) -> dict[int, int]:
        """Next offset per partition in the newest checkpoint written or restored."""
        return dict(self._offsets)

    def restore_latest(self, pipeline: CheckpointedPipeline) -> RestoredCheckpoint | None:
        """Load the newest complete, verified checkpoint into ``pipeline``.

        A checkpoint that is incomplete (no manifest) or fails verification is skipped
        with a warning and the next older one is tried: a crash in the middle of a write
        costs the work since the previous checkpoint, never correctness. A store that
        cannot be read raises ``StorageError``: the caller must retry, not start afresh.
        """
        ids = self._ids()
        # New checkpoints are numbered past every folder present, complete or not, so
        # a write never lands on top of the leftovers of an interrupted one.
        self.begin_epoch()
        for cid in ids:
            name = self._name(cid)
            try:
                arrays, manifest = read_bundle(
                    self.store, name, verify=True, model=BundleManifest, expected_kind="checkpoint"
                )
            except BundleNotFound:
                continue  # no manifest: the write never completed
            except (BundleIntegrityError, UnsupportedFormatError) as exc:
                log.warning("skipping checkpoint %s: %s", name, exc)
                continue
            # Any other error (the store is down, credentials are wrong) propagates: starting
            # from an older checkpoint, or from none, would apply events a second time.
            meta = manifest.meta
            if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
                log.warning("skipping checkpoint %s: unknown format %s v%s", name,
                            meta.get("format"), meta.get("format_version"))
                continue
            pipeline.set_state(arrays, meta["pipeline"])
            offsets = {int(p): int(o) for p, o in meta["offsets"].items()}
            self._offsets = offsets
            self.restored = cid
            return RestoredCheckpoint(name, cid, offsets, float(meta["created_at"]))
        return None

    # -- writing ---------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def save(
        self,
        pipeline: CheckpointedPipeline,
        offsets: dict[int, int],
        *,
        wait: bool = False,
        on_durable: OnDurable | None = None,
        extra_meta: dict[str, Any] | None = None,
    ) -> bool:
        """Checkpoint ``pipeline`` at ``offsets``; False if one is still being written.

        With ``wait=True`` (shutdown, rebalance) the call waits for any write in flight,
        then writes this one and waits for it too, and raises if it failed.
        """
        if self.in_flight:
            if not wait:
                return False
            self._join()
        # Step 1: copy the state while no batch is being processed.
        arrays, pipeline_meta = pipeline.get_state()
        if self._epoch == 0:
            self.begin_epoch()
        self._sequence += 1
        cid = (self._epoch, self._sequence)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "epoch": cid[0],
            "sequence": cid[1],
            "created_at": time.time(),
            "offsets": {str(p): int(o) for p, o in offsets.items()},
            "pipeline": pipeline_meta,
            **(extra_meta or {}),
        }
        frozen_offsets = dict(offsets)
        self._thread = threading.Thread(
            target=self._write,
            args=(cid, arrays, meta, frozen_offsets, on_durable),
            name=f"freshrec-checkpoint-{cid[0]}-{cid[1]}",
            daemon=True,
        )
        self._thread.start()
        if wait:
            self._join()
            error = self.poll_background()
            if error is not None:
                raise error
        return True

    def _write(
        self,
        sequence: CheckpointId,
        arrays: Arrays,
        meta: dict[str, Any],
        offsets: dict[int, int],
        on_durable: OnDurable | None,
    ) -> None:
        started = time.perf_counter()
        try:
            # Step 2: data files first, the manifest last (write_bundle's contract).
            write_bundle(self.store, self._name(sequence), arrays, meta)
            error: BaseException | None = None
        except BaseException as exc:
            error = exc
        seconds = time.perf_counter() - started
        if error is None:
            # Step 3: prune, here rather than on the main thread, so that listing a slow
            # or dead store never stalls consumption.
            try:
                self._prune(sequence)
            except Exception as exc:
                log.warning("could not prune checkpoints older than %s (kept for the next "
                            "prune): %s", sequence, exc)
        self._done.put(_Done(sequence, offsets, seconds, error, on_durable))

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def poll_background(self) -> BaseException | None:
        """Deliver finished writes on the calling (main) thread; returns the last error."""
        last_error: BaseException | None = None
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return last_error
            if done.error is not None:
                self.failures += 1
                last_error = done.error
                log.error("checkpoint %s failed: %s", done.sequence, done.error)
                continue
            # Step 4: durable (and pruned). Only now may the offsets be committed.
            self._offsets = done.offsets
            log.debug("checkpoint %s durable in %.3fs", done.sequence, done.seconds)
            if done.on_durable is not None:
                done.on_durable(done.offsets, done.seconds)

    def _prune(self, newest: CheckpointId) -> None:
        # Keep the newest ``keep`` complete-or-not folders at or below the one just made
        # durable; never touch anything newer (another writer's, or one in flight).
        older = [cid for cid in self._ids() if cid <= newest]
        for cid in older[self.config.keep:]:
            name = self._name(cid)
            for key in self.store.list(name + "/"):
                try:
                    self.store.delete(key)
                except Exception as exc:
                    log.warning("could not delete old checkpoint file %s: %s", key, exc)


def namespaced(parts: dict[str, tuple[Arrays, dict[str, Any]]]) -> tuple[Arrays, dict[str, Any]]:
    """Merge the states of several components under ``component.array`` names."""
    arrays: Arrays = {}
    meta: dict[str, Any] = {}
    for component, (component_arrays, component_meta) in parts.items():
        for name, array in component_arrays.items():
            arrays[f"{component}.{name}"] = np.ascontiguousarray(array)
        meta[component] = component_meta
    return arrays, meta


def split_namespaced(arrays: Arrays, component: str) -> Arrays:
    """The arrays of one component, with the ``component.`` prefix removed."""
    prefix = component + "."
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
