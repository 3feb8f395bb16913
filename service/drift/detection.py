"""What the drift monitor reports: one detection and the reaction it asks for."""

from __future__ import annotations

from dataclasses import dataclass

from service.drift.config import Reaction


@dataclass(frozen=True, slots=True)
class DriftDetection:
    """A drift detected by one detector on one signal, and what to do about it.

    The monitor decides the reaction; the runtime executes it and counts it in
    ``freshrec_drift_reactions_total``.

    Parameters
    ----------
    detector
        ``"adwin"``, ``"page_hinkley"`` or ``"psi"``.
    signal
        What was monitored: ``"loss"``, ``"prediction"``, ``"item_popularity"``,
        ``"feature_occurrence"`` or ``"feature_<i>"``.
    statistic
        The detector's statistic when it fired (mean loss in ADWIN's window, the
        Page-Hinkley test value, or the PSI).
    at_event
        Position of the triggering example in the monitored stream: 0-based, counting every
        example ever passed to ``DriftMonitor.update`` (restored with the monitor's state).
    reaction
        ``"alert"`` (count and log only), ``"adapt"`` (raise the learning rate by
        ``lr_factor`` for ``duration_events`` events) or ``"reset"`` (continue from the
        pipeline's reset point, see ``drift.reset_point_events``).
    lr_factor, duration_events
        The learning-rate boost an ``"adapt"`` reaction asks for (1.0 and 0 otherwise).

    Example
    -------
    >>> d = DriftDetection("adwin", "loss", 0.9, 120_000, "adapt", 3.0, 50_000)
    >>> d.reaction, d.lr_factor
    ('adapt', 3.0)
    """

    detector: str
    signal: str
    statistic: float
    at_event: int
    reaction: Reaction
    lr_factor: float = 1.0
    duration_events: int = 0
