"""The drift monitor: every configured detector behind one call per batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.drift.adwin import ADWIN
from service.drift.base import DriftDetector
from service.drift.config import AdwinConfig, DriftConfig, PageHinkleyConfig, Reaction
from service.drift.detection import DriftDetection
from service.drift.page_hinkley import PageHinkley
from service.drift.psi import RollingPSI, hash_buckets
from service.examples import ExampleBatch

STATE_FORMAT_VERSION = 1


@dataclass(slots=True)
class DriftState:
    """The monitor's complete state: named arrays plus JSON-able metadata.

    Checkpoints store ``arrays`` (names like ``"adwin/loss/totals"``) and ``meta`` as they
    are; :meth:`DriftMonitor.set_state` restores it exactly.
    """

    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]


def adwin_from_config(config: AdwinConfig) -> ADWIN:
    """The ADWIN the monitor runs on the loss, from its settings.

    Benchmarks build their detectors here too, so that what they measure is what the
    service runs (every setting passed, none left at the class's River-like default).
    """
    a = config
    return ADWIN(a.delta, a.clock, a.max_buckets, a.min_window_length, a.grace_period,
                 min_rise=a.min_rise)


def page_hinkley_from_config(config: PageHinkleyConfig) -> PageHinkley:
    """The Page-Hinkley test the monitor runs on the loss, from its settings."""
    p = config
    return PageHinkley(p.min_instances, p.delta, p.threshold, p.alpha, p.mode, p.standardize)


class DriftMonitor:
    """Runs the drift detectors on each batch and decides the reactions.

    Signals, each watched by the detectors that ``config`` enables:

    * ``loss``: the per-example progressive loss, by ADWIN and Page-Hinkley;
    * ``prediction``: the distribution of predictions, by PSI;
    * ``item_popularity``: the share of events per hashed item bucket, by PSI;
    * ``feature_occurrence``: the share of side-feature occurrences per hashed bucket, by PSI;
    * ``feature_<i>``: the values of each hashed feature listed in ``config.psi.features``.

    Non-finite losses and predictions are left out (the learners count them). After an
    ``adapt`` or ``reset`` reaction, later detections within
    ``config.reaction_cooldown_events`` events are downgraded to ``alert``.

    Parameters
    ----------
    config
        Drift settings; the defaults when omitted.

    Example
    -------
    >>> import numpy as np
    >>> from service.drift import DriftConfig, DriftMonitor
    >>> from service.examples import ExampleBatch
    >>> rng = np.random.default_rng(0)
    >>> monitor = DriftMonitor(DriftConfig())
    >>> found = []
    >>> for shift in (0.0, 0.0, 0.0, 1.0):  # the loss rises in the last 10k events
    ...     n = 10_000
    ...     batch = ExampleBatch.from_arrays(rng.integers(1, 1000, n), rng.integers(1, 500, n),
    ...                                      rng.random(n))
    ...     losses = rng.exponential(0.5, n) + shift
    ...     found += monitor.update(losses, rng.random(n), batch)
    >>> sorted({(d.detector, d.signal) for d in found})
    [('adwin', 'loss'), ('page_hinkley', 'loss')]
    >>> first = min(found, key=lambda d: d.at_event)
    >>> 30_000 <= first.at_event < 33_000, first.reaction
    (True, 'alert')
    """

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config if config is not None else DriftConfig.model_validate({})
        cfg = self.config
        self._detectors: dict[tuple[str, str], DriftDetector] = {}
        if cfg.enabled:
            if cfg.adwin.enabled:
                self._detectors[("adwin", "loss")] = adwin_from_config(cfg.adwin)
            if cfg.page_hinkley.enabled:
                self._detectors[("page_hinkley", "loss")] = page_hinkley_from_config(
                    cfg.page_hinkley
                )
            if cfg.psi.enabled:
                s = cfg.psi

                def psi(kind: str, n_bins: int, current: int = s.current_blocks) -> RollingPSI:
                    return RollingPSI(
                        "numeric" if kind == "numeric" else "categorical",
                        n_bins,
                        s.block_events,
                        s.reference_blocks,
                        current,
                        s.threshold,
                    )

                if s.predictions:
                    self._detectors[("psi", "prediction")] = psi("numeric", s.n_bins)
                if s.item_popularity:
                    self._detectors[("psi", "item_popularity")] = psi(
                        "categorical", s.item_buckets, s.item_popularity_current_blocks
                    )
                if s.feature_occurrence:
                    self._detectors[("psi", "feature_occurrence")] = psi(
                        "categorical", s.feature_buckets
                    )
                for f in s.features:
                    self._detectors[("psi", f"feature_{f}")] = psi("numeric", s.n_bins)
        self._features = np.asarray(cfg.psi.features, dtype=np.int64)
        self._reactions: dict[str, Reaction] = {
            "adwin": cfg.adwin.reaction,
            "page_hinkley": cfg.page_hinkley.reaction,
            "psi": cfg.psi.reaction,
        }
        self.n_events = 0
        self._cooldown_until = -1

    @property
    def keys(self) -> list[tuple[str, str]]:
        """The ``(detector, signal)`` pairs this monitor runs (the label pairs it exports)."""
        return list(self._detectors)

    def update(
        self,
        losses: npt.ArrayLike,
        predictions: npt.ArrayLike,
        examples: ExampleBatch,
    ) -> list[DriftDetection]:
        """Feed one batch; return its detections in stream order with their reactions.

        ``losses`` and ``predictions`` are per example of ``examples``, in the same order:
        the progressive (pre-update) loss and prediction of each.
        """
        n = len(examples)
        loss = np.asarray(losses, dtype=np.float64)
        pred = np.asarray(predictions, dtype=np.float64)
        if loss.shape != (n,) or pred.shape != (n,):
            raise ValueError(
                f"losses {loss.shape} and predictions {pred.shape} must both have one value per "
                f"example of the batch ({n},); pass the learner's pre-update predictions and "
                "their losses."
            )
        base = self.n_events
        found: list[tuple[int, str, str, float]] = []

        def feed(key: tuple[str, str], values: npt.NDArray[Any], rows: npt.NDArray[np.int64]):
            detector = self._detectors.get(key)
            if detector is None or len(values) == 0:
                return
            hits = detector.update(values)
            for h, stat in zip(hits, detector.last_statistics, strict=True):
                found.append((base + int(rows[h]), key[0], key[1], float(stat)))

        if ("adwin", "loss") in self._detectors or ("page_hinkley", "loss") in self._detectors:
            finite = np.flatnonzero(np.isfinite(loss))
            values = loss[finite]
            feed(("adwin", "loss"), values, finite)
            feed(("page_hinkley", "loss"), values, finite)
        if ("psi", "prediction") in self._detectors:
            finite = np.flatnonzero(np.isfinite(pred))
            feed(("psi", "prediction"), pred[finite], finite)
        if ("psi", "item_popularity") in self._detectors:
            buckets = hash_buckets(examples.item, self.config.psi.item_buckets)
            feed(("psi", "item_popularity"), buckets, np.arange(n, dtype=np.int64))
        nnz = len(examples.feat_idx)
        if nnz and (("psi", "feature_occurrence") in self._detectors or len(self._features)):
            # Which example each stored feature value belongs to, to report the event.
            owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(examples.feat_indptr))
            if ("psi", "feature_occurrence") in self._detectors:
                buckets = hash_buckets(examples.feat_idx, self.config.psi.feature_buckets)
                feed(("psi", "feature_occurrence"), buckets, owner)
            if len(self._features):
                sel = np.flatnonzero(np.isin(examples.feat_idx, self._features))
                idx_sel = examples.feat_idx[sel]
                vals_sel = examples.feat_val[sel].astype(np.float64)
                for f in self._features:
                    pos = sel[idx_sel == f]
                    vals = vals_sel[idx_sel == f]
                    ok = np.isfinite(vals)
                    feed(("psi", f"feature_{f}"), vals[ok], owner[pos[ok]])
        self.n_events = base + n
        found.sort(key=lambda t: t[0])
        return [self._decide(at, det, sig, stat) for at, det, sig, stat in found]

    def _decide(self, at_event: int, detector: str, signal: str, stat: float) -> DriftDetection:
        reaction = self._reactions[detector]
        if reaction != "alert":
            if at_event < self._cooldown_until:
                reaction = "alert"
            else:
                self._cooldown_until = at_event + self.config.reaction_cooldown_events
        if reaction == "adapt":
            return DriftDetection(
                detector,
                signal,
                stat,
                at_event,
                reaction,
                self.config.adapt_lr_factor,
                self.config.adapt_duration_events,
            )
        return DriftDetection(detector, signal, stat, at_event, reaction)

    def statistics(self) -> dict[tuple[str, str], float]:
        """Current statistic per ``(detector, signal)``, for ``freshrec_drift_statistic``."""
        return {key: d.statistic for key, d in self._detectors.items()}

    def detection_counts(self) -> dict[tuple[str, str], int]:
        """Detections so far per ``(detector, signal)`` (restored with the state)."""
        return {key: d.n_detections for key, d in self._detectors.items()}

    def get_state(self) -> DriftState:
        """A copy of the full state, as arrays plus JSON-able metadata."""
        arrays: dict[str, npt.NDArray[Any]] = {}
        detectors: dict[str, Any] = {}
        for (det, sig), d in self._detectors.items():
            a, meta = d.get_state()
            name = f"{det}/{sig}"
            detectors[name] = meta
            for k, v in a.items():
                arrays[f"{name}/{k}"] = v
        meta_all = {
            "format_version": STATE_FORMAT_VERSION,
            "n_events": self.n_events,
            "cooldown_until": self._cooldown_until,
            "detectors": detectors,
        }
        return DriftState(arrays, meta_all)

    def set_state(self, state: DriftState) -> None:
        """Restore :meth:`get_state`'s output; the drift settings must be the same.

        Raises ``ValueError`` when the state was written with other detectors or parameters:
        start with a fresh monitor in that case (the detectors then relearn their windows).
        """
        meta = state.meta
        if meta.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(
                f"drift state format {meta.get('format_version')!r} is not supported "
                f"(expected {STATE_FORMAT_VERSION}); start without the saved drift state."
            )
        saved = set(meta["detectors"])
        current = {f"{det}/{sig}" for det, sig in self._detectors}
        if saved != current:
            raise ValueError(
                f"drift state has detectors {sorted(saved)} but the settings enable "
                f"{sorted(current)}; restore the previous drift settings or start without the "
                "saved drift state."
            )
        for (det, sig), d in self._detectors.items():
            name = f"{det}/{sig}"
            prefix = f"{name}/"
            arrays = {
                k[len(prefix) :]: v for k, v in state.arrays.items() if k.startswith(prefix)
            }
            d.set_state(arrays, meta["detectors"][name])
        self.n_events = int(meta["n_events"])
        self._cooldown_until = int(meta["cooldown_until"])

    def restore_or_restart(self, state: DriftState) -> str | None:
        """:meth:`set_state`, or, when the saved detectors do not fit the current settings
        (a threshold tuned between a checkpoint and a restart), fresh detectors at the
        saved stream position and cooldown. Returns why the detectors were restarted, or
        None when they were restored.

        The detectors' state only decides future detections: starting them afresh costs a
        warm-up, never a wrong model, where refusing would turn a tuned threshold into an
        outage.
        """
        try:
            self.set_state(state)
            return None
        except ValueError as exc:
            # set_state may have restored some detectors before one refused: rebuild all.
            self._detectors = DriftMonitor(self.config)._detectors
            self.n_events = int(state.meta.get("n_events", 0))
            self._cooldown_until = int(state.meta.get("cooldown_until", -1))
            return str(exc).split(";")[0]
