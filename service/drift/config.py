"""Drift detection settings.

Each detector has its own section and its own reaction, for example
``FRESHREC_DRIFT__ADWIN__DELTA=0.001`` or ``FRESHREC_DRIFT__PSI__REACTION=alert``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Reaction = Literal["alert", "adapt", "reset"]

_REACTION_HELP = (
    "What the runtime does on a detection: 'alert' only counts and logs it; 'adapt' raises "
    "the learning rate by drift.adapt_lr_factor for drift.adapt_duration_events events; "
    "'reset' continues from the reset point, the model as it was at the newest multiple "
    "of drift.reset_point_events learned examples."
)


class AdwinConfig(BaseModel):
    """ADWIN on the progressive loss stream.

    The defaults were chosen with ``freshrec bench drift --real`` on real ratings replayed
    in time order, with nothing planted (false alarms) and with items permuted or half the
    users' ratings inverted halfway (delays): see docs/quality.md, "Drift on real
    streams". River's settings (delta 0.002, sub-windows of 5 events, every significant
    cut reported) raise 600-3,400 false alarms per million events there: the loss of a
    real stream moves by 15-25% with the mix of users. With sub-windows of at least 5,000
    events, delta 1e-4 and a 40% rise required: none in MovieLens 100k, 478k ratings of
    MovieLens 1M and 1.8M Jester ratings; both changes planted in MovieLens 1M are found
    about 3,200 events after them. Changes that raise the loss by less than that (the
    plants in MovieLens 100k and Jester: +3% RMSE overall) go unnoticed by ADWIN at these
    settings; at min_rise 0.3 it found some of them but raised 2.8 false alarms per
    million events on Jester.
    """

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run ADWIN on the per-example loss.")
    delta: float = Field(1e-4, gt=0, lt=1, description="Significance value.")
    clock: int = Field(32, ge=1, description="Check for a change every this many events.")
    max_buckets: int = Field(5, ge=2, description="Bucket summaries of each size kept.")
    min_window_length: int = Field(5000, ge=1, description="Smallest sub-window, in events.")
    grace_period: int = Field(5000, ge=0, description="Events before the first check.")
    min_rise: float = Field(
        0.4, ge=0,
        description="Smallest rise of the mean loss worth reporting, relative to the older "
        "window's mean (0.25: a quarter); smaller significant changes only shrink the window.",
    )
    # 'alert': on the planted changes above, 'adapt' (learning rate x3 for 50k examples)
    # made the progressive RMSE worse than alert every time (MovieLens 100k, a segment
    # inverted: 1.021 against 0.993; MovieLens 1M: 0.954 against 0.950): AdaGrad's
    # per-coordinate rates already give new and changed rows large steps.
    reaction: Reaction = Field("alert", description=_REACTION_HELP)


class PageHinkleyConfig(BaseModel):
    """Page-Hinkley on the progressive loss stream."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run Page-Hinkley on the per-example loss.")
    min_instances: int = Field(30, ge=1, description="Events before any detection.")
    standardize: bool = Field(
        True,
        description=(
            "Measure deviations in running standard deviations of the loss, so delta and "
            "threshold fit any loss scale (false: River's test on raw loss values)."
        ),
    )
    delta: float = Field(
        0.1, ge=0, description="Tolerated change of the mean (in std units if standardize)."
    )
    # 1000: at 100 it fired 9 times in MovieLens 100k, 40 in half of MovieLens 1M and
    # 547 in Jester with nothing planted; at 1000, never, and a planted change is found
    # after 4k-13k events (ADWIN is the quicker of the two).
    threshold: float = Field(
        1000.0, gt=0, description="Detection threshold lambda (in std units if standardize)."
    )
    alpha: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "Forgetting factor of the sums. Below 1 the sums become mean-reverting and their "
            "range grows with the stream, so long stationary streams raise false alarms."
        ),
    )
    mode: Literal["up", "down", "both"] = Field(
        "up", description="Detect loss increases ('up'), decreases or both."
    )
    reaction: Reaction = Field("alert", description=_REACTION_HELP)


class PsiConfig(BaseModel):
    """Population stability index on inputs, item popularity and predictions."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the PSI detectors.")
    threshold: float = Field(0.25, gt=0, description="PSI above which drift is reported.")
    n_bins: int = Field(10, ge=2, le=1000, description="Quantile bins for numeric signals.")
    block_events: int = Field(
        5000, ge=10, description="Values per block; PSI is computed once per block."
    )
    reference_blocks: int = Field(8, ge=1, description="Blocks in the reference window.")
    current_blocks: int = Field(
        2, ge=1, description="Blocks in the current window (item popularity has its own)."
    )
    # One block (5,000 events): on real ratings (freshrec bench drift --real) it found
    # MovieLens 100k's permuted items after 6.0k events instead of 11.0k and Jester's after
    # 8.0k instead of 13.0k, with no false alarm in 2.35M events. Item popularity is an
    # input, steady while nothing changes; the predictions' distribution sharpens while
    # the model learns, and one block there raised a false alarm on MovieLens 1M.
    item_popularity_current_blocks: int = Field(
        1, ge=1, description="Blocks in the current window of the item-popularity PSI."
    )
    predictions: bool = Field(True, description="PSI of the prediction distribution.")
    item_popularity: bool = Field(True, description="PSI of item shares (hashed buckets).")
    item_buckets: int = Field(
        256,
        ge=2,
        description=(
            "Hashed item buckets (a power of two). Popular items get nearly a bucket each, so "
            "a change in which items are popular moves mass between buckets; more buckets "
            "also raise the PSI of a stationary stream (about buckets / window events)."
        ),
    )
    feature_occurrence: bool = Field(
        True, description="PSI of which hashed side features fire (hashed buckets)."
    )
    feature_buckets: int = Field(
        64, ge=2, description="Hashed feature buckets (a power of two)."
    )
    features: list[int] = Field(
        default_factory=list,
        description=(
            "Hashed feature indices whose values get their own PSI (signal 'feature_<i>'). "
            "Keep it short: each is a label value in Prometheus."
        ),
    )
    reaction: Reaction = Field("alert", description=_REACTION_HELP)

    @field_validator("item_buckets", "feature_buckets")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"must be a power of two (for example 64), got {value}")
        return value

    @field_validator("features")
    @classmethod
    def _bounded_features(cls, value: list[int]) -> list[int]:
        if any(i < 0 for i in value):
            raise ValueError("feature indices are hashed indices and must be >= 0")
        if len(value) > 32:
            raise ValueError(
                f"at most 32 features may get their own PSI (got {len(value)}): each is a "
                "Prometheus label value; rely on feature_occurrence for the rest"
            )
        return sorted(set(value))


class DriftConfig(BaseModel):
    """Drift detectors on loss, inputs and predictions."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the drift detectors.")
    adwin: AdwinConfig = Field(default_factory=AdwinConfig)  # type: ignore[arg-type]
    page_hinkley: PageHinkleyConfig = Field(
        default_factory=PageHinkleyConfig  # type: ignore[arg-type]
    )
    psi: PsiConfig = Field(default_factory=PsiConfig)  # type: ignore[arg-type]
    adapt_lr_factor: float = Field(
        3.0, ge=1.0, description="Learning-rate multiplier requested by an 'adapt' reaction."
    )
    adapt_duration_events: int = Field(
        50_000, ge=1, description="Events the raised learning rate lasts."
    )
    reset_point_events: int = Field(
        100_000,
        ge=1,
        description=(
            "While some detector's reaction is 'reset', the model is copied every this many "
            "learned examples (at the next reaction boundary, a multiple of 4096, outside "
            "stretches with detections); 'reset' continues from that copy. The copy is "
            "chosen by the events, so a reset is the same in every run; it costs one more "
            "model in memory and in each checkpoint."
        ),
    )
    reaction_cooldown_events: int = Field(
        20_000,
        ge=0,
        description=(
            "After an 'adapt' or 'reset', later detections within this many events are only "
            "alerted, so that one change does not trigger a cascade of reactions."
        ),
    )
