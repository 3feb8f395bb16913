"""The promotion gate: only candidates that are finite, fresh enough and not worse than the
published model on recent held-out data become snapshots.

Parameters
----------
config
    :class:`~service.snapshots.config.SnapshotConfig`: ``holdout_window``,
    ``min_holdout``, ``min_new_events``, ``tolerance`` (relative), ``ranking_negatives``
    and ``gate_seed``.

The checks, in order, each with a stable ``reason`` code (use them as metric labels):

=====================  ========  =====================================================
reason                 accepted  when
=====================  ========  =====================================================
``non_finite``         no        a parameter or a holdout prediction is NaN or infinite
``not_enough_events``  no        fewer than ``min_new_events`` learned since last time
``not_enough_holdout`` no        fewer than ``min_holdout`` held-out rows (positives)
``first_publication``  yes       nothing is published yet
``task_mismatch``      no        the published model solves another task: use another
                                 ``model_name`` for a new kind of model
``worse_than_champion`` no       worse than the published model by more than
                                 ``tolerance`` x its value
``champion_non_finite`` yes      the published model no longer scores finitely
``passed``             yes       otherwise
=====================  ========  =====================================================

Everything is deterministic: the same window, learners and seed give the same decision.

Example
-------
>>> import numpy as np
>>> from service.examples import ExampleBatch
>>> from service.snapshots.config import SnapshotConfig
>>> class Const:  # a minimal learner: predicts one constant rating
...     task = "regression"
...     def __init__(self, c): self.c = c
...     def predict(self, b): return np.full(len(b), self.c, np.float32)
...     def is_finite(self): return bool(np.isfinite(self.c))
>>> gate = PromotionGate(SnapshotConfig(min_holdout=10, min_new_events=100))
>>> b = ExampleBatch.from_arrays(np.arange(1, 41), np.arange(1, 41), np.full(40, 4.0))
>>> b.holdout[:] = True
>>> gate.observe(b)
40
>>> gate.evaluate(Const(4.0), None, events_since_last=500).reason
'first_publication'
>>> d = gate.evaluate(Const(3.0), Const(4.0), events_since_last=500)
>>> d.accepted, d.reason, d.candidate, d.champion
(False, 'worse_than_champion', 1.0, 0.0)
>>> gate.evaluate(Const(float("nan")), Const(4.0), events_since_last=500).reason
'non_finite'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from service.examples import ExampleBatch
from service.learners.base import Learner
from service.snapshots.config import SnapshotConfig
from service.snapshots.holdout import HoldoutWindow
from service.snapshots.manifest import ValidationReport
from service.snapshots.scoring import METRIC_OF_TASK, RankingProbe, score_learner

NON_FINITE = "non_finite"
NOT_ENOUGH_EVENTS = "not_enough_events"
NOT_ENOUGH_HOLDOUT = "not_enough_holdout"
FIRST_PUBLICATION = "first_publication"
TASK_MISMATCH = "task_mismatch"
WORSE_THAN_CHAMPION = "worse_than_champion"
CHAMPION_NON_FINITE = "champion_non_finite"
PASSED = "passed"
#: Every reason code, e.g. to pre-create Prometheus label values.
GATE_REASONS = (
    NON_FINITE,
    NOT_ENOUGH_EVENTS,
    NOT_ENOUGH_HOLDOUT,
    FIRST_PUBLICATION,
    TASK_MISMATCH,
    WORSE_THAN_CHAMPION,
    CHAMPION_NON_FINITE,
    PASSED,
)


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The gate's verdict on one candidate."""

    accepted: bool
    reason: str
    metric: str | None
    higher_is_better: bool
    candidate: float | None
    champion: float | None
    n_holdout: int
    events_since_last: int
    tolerance: float
    message: str

    def report(self) -> ValidationReport:
        """The decision as recorded in the snapshot manifest."""
        return ValidationReport(
            metric=self.metric,
            higher_is_better=self.higher_is_better,
            candidate=self.candidate,
            champion=self.champion,
            n_holdout=self.n_holdout,
            tolerance=self.tolerance,
            reason=self.reason,
        )


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class PromotionGate:
    """Decides whether a candidate learner may replace the published champion."""

    def __init__(self, config: SnapshotConfig | None = None) -> None:
        self.config = config or SnapshotConfig()
        self.window = HoldoutWindow(self.config.holdout_window)

    def observe(self, batch: ExampleBatch) -> int:
        """Keep ``batch``'s held-out rows (``holdout=True``); return how many were kept."""
        return self.window.add(batch)

    def evaluate(
        self, candidate: Learner, champion: Learner | None, events_since_last: int
    ) -> GateDecision:
        """Score ``candidate`` (and ``champion``) on the window and decide."""
        cfg = self.config
        task = getattr(candidate, "task", None)
        if task not in METRIC_OF_TASK:
            raise ValueError(
                f"{type(candidate).__name__}.task is {task!r}; the gate knows "
                f"{sorted(METRIC_OF_TASK)}"
            )
        metric, higher = METRIC_OF_TASK[task]
        n_window = len(self.window)

        def decide(
            accepted: bool,
            reason: str,
            message: str,
            cand: float | None = None,
            champ: float | None = None,
            n: int = n_window,
        ) -> GateDecision:
            return GateDecision(
                accepted=accepted,
                reason=reason,
                metric=metric,
                higher_is_better=higher,
                candidate=_finite(cand),
                champion=_finite(champ),
                n_holdout=n,
                events_since_last=events_since_last,
                tolerance=cfg.tolerance,
                message=message,
            )

        if not candidate.is_finite():
            return decide(False, NON_FINITE, "the candidate has NaN or infinite parameters")
        if events_since_last < cfg.min_new_events:
            return decide(
                False,
                NOT_ENOUGH_EVENTS,
                f"{events_since_last} events learned since the last publication, "
                f"{cfg.min_new_events} needed",
            )
        window = self.window.batch()
        probe: RankingProbe | None = None
        n_eval = n_window
        if task == "ranking":
            probe = RankingProbe.build(window, cfg.ranking_negatives, cfg.gate_seed)
            n_eval = probe.n_pos
        if n_eval < cfg.min_holdout:
            what = "held-out positives" if task == "ranking" else "held-out examples"
            return decide(
                False,
                NOT_ENOUGH_HOLDOUT,
                f"{n_eval} {what} in the window, {cfg.min_holdout} needed",
                n=n_eval,
            )
        cand = score_learner(candidate, task, window, probe)
        if not math.isfinite(cand):
            return decide(
                False, NON_FINITE, "the candidate's holdout predictions are not finite",
                n=n_eval,
            )
        if champion is None:
            return decide(
                True, FIRST_PUBLICATION, f"no published model yet; {metric}={cand:.6g}",
                cand, n=n_eval,
            )
        if getattr(champion, "task", None) != task:
            return decide(
                False,
                TASK_MISMATCH,
                f"the published model's task is {getattr(champion, 'task', None)!r}, the "
                f"candidate's {task!r}; publish it under another model_name",
                cand,
                n=n_eval,
            )
        champ = score_learner(champion, task, window, probe)
        if not math.isfinite(champ):
            return decide(
                True, CHAMPION_NON_FINITE,
                "the published model's holdout predictions are not finite; replacing it",
                cand, champ, n=n_eval,
            )
        slack = cfg.tolerance * abs(champ)
        worse = cand < champ - slack if higher else cand > champ + slack
        cmp = f"{metric}: candidate {cand:.6g}, published {champ:.6g}, tolerance {cfg.tolerance:g}"
        if worse:
            return decide(False, WORSE_THAN_CHAMPION, cmp, cand, champ, n=n_eval)
        return decide(True, PASSED, cmp, cand, champ, n=n_eval)

    def state_summary(self) -> dict[str, Any]:
        """Small figures for logs: window size and capacity."""
        return {"holdout": len(self.window), "capacity": self.window.capacity}
