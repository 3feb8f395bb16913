"""Shared-parameter blocks in the object store, written and read off the main thread.

Layout: shard ``i`` writes block ``s`` as a bundle (``service.storage.bundle``: one
``.npy`` file per array, sha256 in a manifest written last, no pickle) at
``shared/<group>/<topic>/shard-<i>/<s:012d>``. Sequence numbers of one shard are
consecutive and written in order, so a reader fetches ``last folded + 1``, ``+ 2``, ...
until one is missing. A writer keeps its newest ``keep_blocks`` blocks; a reader that
fell further behind (or a shard started long after the others) starts at the oldest one
kept and logs how many it skipped.

The main thread only enqueues work and collects results (:meth:`BlockExchange.results`);
folding happens there, between batches, so the model is never read half-merged.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

from service.scaleout.delta import Block
from service.scaleout.shards import blocks_prefix
from service.storage import ObjectStore
from service.storage.bundle import (
    MANIFEST_NAME,
    BundleManifest,
    BundleNotFound,
    bundle_exists,
    delete_bundle,
    read_bundle,
    write_bundle,
)

log = logging.getLogger(__name__)

FORMAT = "freshrec.shared"
FORMAT_VERSION = 1
MAX_BLOCKS_PER_FETCH = 64


@dataclass(slots=True)
class Written:
    seq: int


@dataclass(slots=True)
class Fetched:
    block: Block


@dataclass(slots=True)
class Failed:
    what: str
    error: BaseException


Result = Written | Fetched | Failed


def block_name(prefix: str, seq: int) -> str:
    return f"{prefix}/{seq:012d}"


class BlockExchange:
    """Writes this shard's blocks and fetches the other shards' new ones, in the background.

    Parameters
    ----------
    store
        The object store shared by every shard.
    group_id, topic
        The service's (unsharded) group and topic: every shard uses the same ones here.
    shard, shards
        This shard, of how many.
    keep_blocks
        Own blocks kept in the store.
    """

    def __init__(self, store: ObjectStore, group_id: str, topic: str, *, shard: int,
                 shards: int, keep_blocks: int) -> None:
        self.store = store
        self.shard = shard
        self.prefixes = {j: blocks_prefix(group_id, topic, j) for j in range(shards)}
        self.keep_blocks = keep_blocks
        self._tasks: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._results: queue.Queue[Result] = queue.Queue()
        self._fetching = threading.Event()
        self._listed: set[int] = set()  # shards whose folder was listed since (re)start
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="freshrec-exchange",
                                            daemon=True)
            self._thread.start()

    # -- main thread --------------------------------------------------------------------

    def write(self, blocks: list[Block]) -> None:
        """Write ``blocks`` (in order; those already in the store are skipped)."""
        if blocks:
            self._ensure_thread()
            self._tasks.put(("write", list(blocks)))

    def fetch(self, wanted: dict[int, int]) -> bool:
        """Fetch, per shard, the blocks from sequence ``wanted[shard]`` on; False if a
        fetch is still running."""
        if self._fetching.is_set():
            return False
        self._fetching.set()
        self._ensure_thread()
        self._tasks.put(("fetch", dict(wanted)))
        return True

    def restart(self) -> None:
        """After a restore: look for retention gaps again before the next fetch."""
        self._listed.clear()

    def results(self) -> list[Result]:
        out: list[Result] = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def close(self, timeout_s: float) -> None:
        """Finish the queued work (writes of the final checkpoint's block), then stop."""
        if self._thread is not None and self._thread.is_alive():
            self._tasks.put(None)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("shared-parameter blocks still being written at exit; the "
                            "next start writes them from the checkpoint's outbox")

    # -- worker thread ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            kind, payload = task
            if kind == "write":
                self._write(payload)
            else:
                try:
                    self._fetch(payload)
                finally:
                    self._fetching.clear()

    def _write(self, blocks: list[Block]) -> None:
        prefix = self.prefixes[self.shard]
        for block in blocks:
            name = block_name(prefix, block.seq)
            try:
                if not bundle_exists(self.store, name):
                    arrays, meta = block.to_arrays()
                    write_bundle(self.store, name, arrays,
                                 {"format": FORMAT, "format_version": FORMAT_VERSION, **meta},
                                 kind="shared")
                self._results.put(Written(block.seq))
            except Exception as exc:
                # The block stays in the outbox: the next checkpoint carries it and the
                # write is tried again once that checkpoint is durable.
                self._results.put(Failed(f"write shared block {block.seq}", exc))
                return
            old = block.seq - self.keep_blocks
            if old >= 1:
                try:
                    delete_bundle(self.store, block_name(prefix, old))
                except Exception as exc:
                    log.warning("could not delete old shared block %s: %s", old, exc)

    def _oldest(self, shard: int) -> int | None:
        prefix = self.prefixes[shard] + "/"
        seqs = []
        for key in self.store.list(prefix):
            head, _, rest = key[len(prefix):].partition("/")
            if head.isdigit() and rest == MANIFEST_NAME:
                seqs.append(int(head))
        return min(seqs) if seqs else None

    def _fetch(self, wanted: dict[int, int]) -> None:
        for shard, seq in wanted.items():
            try:
                if shard not in self._listed:
                    oldest = self._oldest(shard)
                    self._listed.add(shard)
                    if oldest is not None and oldest > seq:
                        log.warning("shard %d kept blocks from %d on: blocks %d-%d of its "
                                    "shared parameters are no longer available", shard,
                                    oldest, seq, oldest - 1)
                        seq = oldest
                for _ in range(MAX_BLOCKS_PER_FETCH):
                    try:
                        arrays, manifest = read_bundle(
                            self.store, block_name(self.prefixes[shard], seq), verify=True,
                            model=BundleManifest, expected_kind="shared")
                    except BundleNotFound:
                        break
                    meta = manifest.meta
                    if (meta.get("format"), meta.get("format_version")) != (FORMAT,
                                                                            FORMAT_VERSION):
                        raise ValueError(f"shared block {seq} of shard {shard} has format "
                                         f"{meta.get('format')} v{meta.get('format_version')}")
                    self._results.put(Fetched(Block.from_arrays(arrays, meta)))
                    seq += 1
            except Exception as exc:
                self._results.put(Failed(f"fetch shared blocks of shard {shard}", exc))
