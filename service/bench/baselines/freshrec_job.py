"""Contender: the real freshrec service, with a probe that reports when events were learned.

The probe is a subclass of :class:`service.runtime.job.Job` that wraps the job's per-batch
step: after the pipeline has learned a batch (and dead-lettered its rejects), it tells the
benchmark's :class:`~service.bench.baselines.protocol.Progress` how far the model has got
and samples the Kafka timestamps of the live messages in the batch. Everything else —
validation, dedup, id encoding, progressive metrics, DLQ, checkpoints and snapshots on
their schedule, the HTTP endpoint — is the job as it runs in production, configured from
the ``FRESHREC_*`` environment the driver sets.

The probe costs a few attribute reads per batch in the backlog phase and one
``timestamp()`` call per sampled message in the live phase.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from service.bench.baselines.protocol import Progress, WorkerSpec


def progressive_rmse(evaluator: Any) -> float:
    """The cumulative progressive RMSE of a freshrec evaluator (NaN if it has none).

    Reads ``result()`` (``{"rmse": ...}``, cumulative since the start) or, failing that, a
    ``report()`` keyed ``(metric, window)``.

    >>> class Evaluator:
    ...     def result(self): return {"rmse": 0.9, "rmse_window": 1.2}
    >>> progressive_rmse(Evaluator())
    0.9
    """
    if hasattr(evaluator, "result"):
        value = evaluator.result().get("rmse")
        return float("nan") if value is None else float(value)
    if hasattr(evaluator, "report"):
        report = evaluator.report()
        for key in (("rmse", "all"), ("rmse", "cumulative"), "rmse"):
            if key in report:
                return float(report[key])
    return float("nan")


def run(spec: WorkerSpec, progress: Progress) -> None:
    """Run the job until ``progress`` says stop; the driver set ``FRESHREC_*``."""
    from service.config import Settings
    from service.runtime.allocator import tune_allocator
    from service.runtime.job import Job

    tune_allocator()  # as `freshrec run` does

    settings = Settings()
    if settings.kafka.topic != spec.topic or settings.kafka.group_id != spec.group_id:
        raise ValueError(
            "FRESHREC_KAFKA__TOPIC / FRESHREC_KAFKA__GROUP_ID do not match the spec: the "
            "driver must set them to the spec's topic and group"
        )
    measured = spec.measure_events
    sample_every = spec.sample_every
    rmse_at_measured: list[float] = []

    class ProbedJob(Job):
        def _process(self, messages: list) -> None:  # type: ignore[type-arg]
            progress.started()
            super()._process(messages)
            now = time.time()
            first, last = messages[0].offset(), messages[-1].offset()
            if last >= spec.backlog_end:
                contiguous = last - first + 1 == len(messages)
                if contiguous:
                    # Offsets are positions in the batch: jump straight to the sampled ones.
                    start = max(first, spec.backlog_end)
                    start += (-start) % sample_every
                    for offset in range(start, last + 1, sample_every):
                        progress.sample(messages[offset - first].timestamp()[1], now)
                else:
                    for m in messages:
                        if progress.wants_sample(m.offset()):
                            progress.sample(m.timestamp()[1], now)
            if not rmse_at_measured and last + 1 >= measured:
                rmse_at_measured.append(progressive_rmse(self.pipeline.evaluator))
            progress.advance(last + 1, sq_err=rmse_at_measured[0] ** 2 if rmse_at_measured
                             else 0.0, n_scored=1 if rmse_at_measured else 0)
            if progress.done():
                self.request_stop()

    job = ProbedJob(settings, stop_when_idle_s=None)
    job.install_signal_handlers()

    # The stop target may arrive after the last live batch was learned, when no batch
    # is left to check it: watch for it on the side too.
    def watch() -> None:
        while not progress.done():
            time.sleep(0.05)
        job.request_stop()

    threading.Thread(target=watch, name="bench-stop-watch", daemon=True).start()
    job.run()
    progress.finish(
        applied=job.counters.applied,
        rejected=job.counters.rejected,
        consumed=job.counters.consumed,
        rmse_final=progressive_rmse(job.pipeline.evaluator),
    )

