"""The protocol between the end-to-end benchmark driver and one contender process.

A run has two phases on one topic that holds ``backlog_end`` messages when the contender
starts (one partition, so offsets are positions):

1. **Backlog**: the contender reads from the beginning as fast as it can. Throughput,
   CPU seconds and the progressive error are measured over the first ``measure_events``
   offsets (the events every contender sees). When it has learned everything up to
   ``backlog_end`` it reports ``caught_up``.
2. **Live**: the driver publishes at a steady rate to the same topic. For every
   ``sample_every``-th offset at or after ``backlog_end`` the contender records how long
   after the message's Kafka timestamp the model had learned from it (freshness). The
   driver then writes ``{"stop_at": OFFSET}`` on the contender's stdin; the contender
   stops once it has learned up to there and reports ``done``.

Contenders print one JSON object per report on stdout, after :data:`PREFIX`, so that other
output (a library's banner, logs) cannot be mistaken for a report.

Example
-------
>>> spec = WorkerSpec("127.0.0.1:19092", "t", "g", measure_events=3, backlog_end=3)
>>> WorkerSpec.from_json(spec.to_json()) == spec
True
>>> reports: list[dict] = []
>>> p = Progress(spec, emit=lambda event, fields: reports.append({"event": event, **fields}))
>>> p.started()
>>> p.advance(3, sq_err=3.0, n_scored=3)
>>> [r["event"] for r in reports], reports[0]["rmse"]
(['backlog_done', 'caught_up'], 1.0)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import orjson

from service.bench.measure import peak_rss_bytes, rss_bytes

PREFIX = "@@bench "

Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one contender process is asked to do.

    Parameters
    ----------
    bootstrap, topic, group_id
        Where to read; each contender gets its own consumer group.
    measure_events
        Offsets ``[0, measure_events)`` are the measured backlog (same for everyone).
    backlog_end
        Messages in the topic when the contender starts; ``caught_up`` is reported once
        every one of them has been learned.
    sample_every
        Freshness is sampled on live offsets divisible by this (the same offsets for
        every contender, so the samples are comparable).
    """

    bootstrap: str
    topic: str
    group_id: str
    measure_events: int
    backlog_end: int
    sample_every: int = 10

    def __post_init__(self) -> None:
        if self.measure_events < 1:
            raise ValueError(f"measure_events must be at least 1, got {self.measure_events}")
        if self.backlog_end < self.measure_events:
            raise ValueError(
                f"backlog_end ({self.backlog_end}) must be at least measure_events "
                f"({self.measure_events}): the measured events must already be in the topic"
            )
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be at least 1, got {self.sample_every}")

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**orjson.loads(text))


def emit_stdout(event: str, fields: dict[str, Any]) -> None:
    """Print one report line for the driver."""
    sys.stdout.write(PREFIX + orjson.dumps({"event": event, **fields}).decode() + "\n")
    sys.stdout.flush()


def parse_report(line: str) -> dict[str, Any] | None:
    """The report in one line of a contender's stdout, or ``None`` for other output."""
    if not line.startswith(PREFIX):
        return None
    report: dict[str, Any] = orjson.loads(line[len(PREFIX):])
    return report


class Progress:
    """A contender's position in the two phases, and the reports it owes the driver.

    Loops call :meth:`started` when the first message arrives, :meth:`advance` after the
    model has learned up to an offset, :meth:`sample` with the Kafka timestamp of each
    sampled live message right after learning it, and stop when :meth:`done` is true.
    """

    def __init__(self, spec: WorkerSpec, emit: Emit = emit_stdout) -> None:
        self.spec = spec
        self.emit = emit
        self.position = 0  # next offset to learn
        self.stop_at: int | None = None
        self._t_first: float | None = None
        self._cpu_first = 0.0
        self._backlog_reported = False
        self._caught_up_reported = False
        #: (Kafka timestamp ms, freshness ms) of each sampled live message.
        self.fresh: list[tuple[int, float]] = []

    def started(self) -> None:
        """Mark the first message (idempotent): the backlog clock starts here."""
        if self._t_first is None:
            self._t_first = time.perf_counter()
            self._cpu_first = time.process_time()

    def sample(self, kafka_ts_ms: int, now_s: float | None = None) -> None:
        """Record that the message produced at ``kafka_ts_ms`` has just been learned."""
        now = time.time() if now_s is None else now_s
        self.fresh.append((kafka_ts_ms, now * 1000.0 - kafka_ts_ms))

    def wants_sample(self, offset: int) -> bool:
        return offset >= self.spec.backlog_end and offset % self.spec.sample_every == 0

    def advance(self, position: int, *, sq_err: float = 0.0, n_scored: int = 0) -> None:
        """The model has learned every offset below ``position``.

        ``sq_err`` / ``n_scored`` are the running progressive squared error and count over
        the measured backlog; they are read once, when ``position`` first covers it.
        """
        self.position = position
        if not self._backlog_reported and position >= self.spec.measure_events:
            self._backlog_reported = True
            elapsed = time.perf_counter() - (self._t_first or time.perf_counter())
            cpu = time.process_time() - self._cpu_first
            self.emit("backlog_done", {
                "events": position,
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "rmse": (sq_err / n_scored) ** 0.5 if n_scored else float("nan"),
                "n_scored": n_scored,
                "rss_bytes": rss_bytes(),
            })
        if not self._caught_up_reported and position >= self.spec.backlog_end:
            self._caught_up_reported = True
            self.emit("caught_up", {"position": position, "rss_bytes": rss_bytes()})

    def done(self) -> bool:
        return self.stop_at is not None and self.position >= self.stop_at

    def finish(self, **extra: Any) -> None:
        """Report the end of the run with every freshness sample."""
        self.emit("done", {
            "position": self.position,
            "fresh": self.fresh,
            "rss_bytes": rss_bytes(),
            "peak_rss_bytes": peak_rss_bytes(),
            "cpu_seconds_total": time.process_time(),
            **extra,
        })

    def listen(self, stream: TextIO | None = None) -> threading.Thread:
        """Read ``{"stop_at": N}`` lines from ``stream`` (stdin) on a daemon thread."""
        source = sys.stdin if stream is None else stream

        def run() -> None:
            for line in source:
                line = line.strip()
                if line:
                    self.stop_at = int(orjson.loads(line)["stop_at"])

        thread = threading.Thread(target=run, name="bench-control", daemon=True)
        thread.start()
        return thread
