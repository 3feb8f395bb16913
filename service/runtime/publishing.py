"""Snapshot publication off the main thread.

Gating and publishing a model means scoring it and its champion on the hold-out window,
hashing and uploading its arrays: hundreds of milliseconds to seconds. Doing that between
two batches would stall consumption, so the main thread only copies what it needs (the
candidate's state, the hold-out window, the encoding) and a background thread does the
rest. At most one publication runs at a time; a due one is skipped while another runs.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from service.learners.base import ModelState, Task
from service.snapshots.gate import PromotionGate
from service.snapshots.publisher import PublishOutcome, SnapshotPublisher

log = logging.getLogger(__name__)


class FrozenCandidate:
    """A learner's published state, copied on the main thread, posing as the candidate."""

    def __init__(self, state: ModelState, task: Task) -> None:
        self._state = state
        self.task = task

    def published_state(self) -> ModelState:
        return self._state


def frozen_gate(gate: PromotionGate) -> PromotionGate:
    """A copy of ``gate`` whose hold-out window no longer changes with the stream.

    The window's chunks are never modified in place (trimming replaces them), so a copy of
    the chunk list is a consistent snapshot.
    """
    copy = PromotionGate(gate.config)
    copy.window._chunks = deque(gate.window._chunks)
    copy.window._n = gate.window._n
    return copy


@dataclass(slots=True)
class PublicationResult:
    outcome: PublishOutcome | None
    error: BaseException | None


class BackgroundPublisher:
    """Runs :meth:`SnapshotPublisher.consider` on a worker thread, one at a time."""

    def __init__(self, publisher: SnapshotPublisher) -> None:
        self.publisher = publisher
        self._thread: threading.Thread | None = None
        self._results: queue.Queue[PublicationResult] = queue.Queue()
        self.lock = threading.Lock()  # held while the publisher is in use

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(
        self,
        candidate: FrozenCandidate,
        gate: PromotionGate,
        *,
        events_since_last: int,
        encoding: Mapping[str, Any],
        encoding_arrays: Mapping[str, npt.NDArray[Any]],
        offsets: Mapping[str, Mapping[int, int]],
        counts: Mapping[str, int],
    ) -> bool:
        """Start gating and publishing; False if a publication is still running."""
        if self.busy:
            return False

        def work() -> None:
            try:
                with self.lock:
                    outcome = self.publisher.consider(
                        candidate,  # type: ignore[arg-type]
                        gate,
                        events_since_last=events_since_last,
                        encoding=encoding,
                        offsets=offsets,
                        counts=counts,
                        encoding_arrays=encoding_arrays,
                    )
                self._results.put(PublicationResult(outcome, None))
            except BaseException as exc:
                self._results.put(PublicationResult(None, exc))

        self._thread = threading.Thread(target=work, name="freshrec-publish", daemon=True)
        self._thread.start()
        return True

    def results(self) -> list[PublicationResult]:
        """Finished publications, delivered on the calling (main) thread."""
        out: list[PublicationResult] = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)
