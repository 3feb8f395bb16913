"""Preprocessing settings: validation limits, dedup, id encoding, side features and labels.

Every field can be set from the environment, e.g. ``FRESHREC_PREPROCESS__TASK=binary`` or
``FRESHREC_PREPROCESS__CROSSES='["item*context.device"]'``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Encoding = Literal["vocabulary", "hashing"]
MissingPolicy = Literal["indicator", "skip"]

_FEATURE_NAME = re.compile(r"^(context|user_features|item_features)\.[^*]+$")
_CROSS_PART = re.compile(r"^(user|item|event_type|(context|user_features|item_features)\.[^*]+)$")

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class PreprocessConfig(BaseModel):
    """Dedup, id encoding and label settings."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    dedup_window_events: int = Field(
        default=1_000_000, ge=0, description="Most event ids remembered for dedup (0 disables)."
    )
    user_capacity: int = Field(default=1 << 20, ge=2, description="Rows in the user table.")
    item_capacity: int = Field(default=1 << 18, ge=2, description="Rows in the item table.")

    # -- validation (the contract's configurable limits) ----------------------------------
    max_message_bytes: int = Field(
        default=16_384, ge=64, le=1 << 24, description="Larger message values are rejected unread."
    )
    allowed_lateness_ms: int = Field(
        default=DAY_MS, ge=0,
        description="Events more than this behind the stream's watermark (the largest event "
        "time accepted so far on their partition) are rejected as too old."
    )
    max_future_skew_ms: int = Field(
        default=5 * 60_000, ge=0,
        description="Events later than the wall clock plus this are rejected."
    )
    rating_min: float = Field(default=0.5, description="Smallest valid rating.")
    rating_max: float = Field(default=5.0, description="Largest valid rating.")
    max_abs_value: float = Field(
        default=1e9, gt=0, description="A 'value' of larger magnitude is rejected as absurd_number."
    )

    # -- dedup --------------------------------------------------------------------------
    dedup_window_ms: int = Field(
        default=DAY_MS,
        ge=0,
        description=(
            "Event ids are also forgotten once their event time is this far behind the "
            "newest event time seen (0: bounded by count only)."
        ),
    )

    # -- id encoding ----------------------------------------------------------------------
    user_encoding: Encoding = Field(
        default="vocabulary", description="'vocabulary' (admission + eviction) or 'hashing'."
    )
    item_encoding: Encoding = Field(
        default="vocabulary", description="'vocabulary' (admission + eviction) or 'hashing'."
    )
    user_hash_bits: int | None = Field(
        default=None, ge=1, le=30,
        description="Bits of the user hashing trick (default: fill capacity)."
    )
    item_hash_bits: int | None = Field(
        default=None, ge=1, le=30,
        description="Bits of the item hashing trick (default: fill capacity)."
    )
    user_admit_after: int = Field(
        default=2, ge=1, le=255,
        description="Sightings before a user gets its own row (row 0 before)."
    )
    item_admit_after: int = Field(
        default=2, ge=1, le=255,
        description="Sightings before an item gets its own row (row 0 before)."
    )
    user_evict_after_ms: int = Field(
        default=30 * DAY_MS, ge=1,
        description="A user unseen for this long gives its row back when the table is full "
        "and a new user needs one (until then it keeps its row)."
    )
    item_evict_after_ms: int = Field(
        default=30 * DAY_MS, ge=1,
        description="An item unseen for this long gives its row back when the table is full "
        "and a new item needs one (until then it keeps its row)."
    )

    # -- side features ----------------------------------------------------------------------
    feature_bits: int = Field(
        default=18, ge=4, le=26, description="Hashed side features live in [0, 2**feature_bits)."
    )
    hash_seed: int = Field(
        default=0, ge=0, lt=1 << 32,
        description="Seed of every hash (changing it invalidates models)."
    )
    crosses: list[str] = Field(
        default_factory=list,
        description=(
            "Feature crosses 'a*b' of user, item, event_type or a map key such as "
            "'context.device'; e.g. ['item*context.device']."
        ),
    )
    missing_features: dict[str, MissingPolicy] = Field(
        default_factory=lambda: dict[str, MissingPolicy]({"context.device": "indicator"}),
        description=(
            "Expected map keys ('context.device') and what to do when one is absent or "
            "null: 'indicator' adds a '<key> is missing' feature, 'skip' adds nothing."
        ),
    )
    numeric_clip: float = Field(
        default=5.0, gt=0, description="Standardised numeric features are clipped to ±this."
    )

    # -- labels ---------------------------------------------------------------------------
    task: Literal["regression", "binary"] = Field(
        default="regression",
        description="'regression': ratings become examples. 'binary': impressions become "
        "examples when their attribution window closes, positive if clicked, added to cart "
        "or bought within it, negative otherwise.",
    )
    click_weight: float = Field(default=1.0, ge=0, description="Weight of a click positive.")
    add_to_cart_weight: float = Field(
        default=2.0, ge=0, description="Weight of an add-to-cart positive."
    )
    purchase_weight: float = Field(default=4.0, ge=0, description="Weight of a purchase positive.")
    impression_weight: float = Field(
        default=1.0, ge=0, description="Weight of an impression negative."
    )
    rating_weight: float = Field(default=1.0, ge=0, description="Weight of a rating example.")
    attribution_window_ms: int = Field(
        default=5 * 60_000,
        ge=1,
        description="A click this soon after an impression of the same user and item makes "
        "it a positive; otherwise the impression becomes a negative. Either way it is learned "
        "when the window closes: a shorter window learns clicks sooner and counts more late "
        "clicks. Size max_pending to at least impressions per second times this window.",
    )
    learn_positives_without_impression: bool | None = Field(
        default=None,
        description="Learn a click, add-to-cart or purchase that no impression in its "
        "window claims (a late click, or an impression never sent) as a positive of its "
        "own. Such an example is built from the positive's own event, whose maps are not "
        "an impression's, and a click model then tells positives by their shape "
        "(shuffled labels gave AUC 0.93), so when off they are only counted "
        "(positives_without_impression). None: on for bpr (implicit feedback has no "
        "impressions; its negatives are sampled), off for click models.",
    )
    max_pending: int = Field(
        default=200_000,
        ge=16,
        description="Most impressions waiting for their window (and clicks waiting for an "
        "impression that arrives late); the oldest is resolved early when full. About "
        "(160 + 8 * max_pending_features) bytes each.",
    )
    max_pending_features: int = Field(
        # 64: every feature of the public click sets (Criteo's 39 columns plus the ids'
        # crosses, Avazu's 21); at 16 a pending impression lost most of them, and log loss
        # on Criteo was 0.503 instead of 0.475 (freshrec bench quality).
        default=64, ge=0, le=256,
        description="Side features kept per pending impression (or click waiting for one); "
        "an impression with more is learned from its first this many."
    )
    holdout_fraction: float = Field(
        default=0.02, ge=0.0, le=0.5,
        description="Share of examples held out for the snapshot gate."
    )

    # -- memory ------------------------------------------------------------------------------
    preallocate: bool = Field(
        default=False,
        description="Allocate (and fault in) the dedup window, vocabularies and pending "
        "rings at their bounds at startup, about 200 MB with the defaults, and fault in "
        "the model's zero-initialised tables, instead of growing them as ids arrive: no "
        "growth pauses, flat memory, more memory from the start. Checkpoints are the same "
        "size either way.",
    )

    @field_validator("crosses")
    @classmethod
    def _check_crosses(cls, crosses: list[str]) -> list[str]:
        for cross in crosses:
            parts = cross.split("*")
            if len(parts) != 2 or not all(_CROSS_PART.match(p) for p in parts):
                raise ValueError(
                    f"cross {cross!r} must be 'a*b' with a and b among user, item, "
                    "event_type or a map key such as context.device"
                )
        return crosses

    @field_validator("missing_features")
    @classmethod
    def _check_missing(cls, policies: dict[str, MissingPolicy]) -> dict[str, MissingPolicy]:
        for name in policies:
            if not _FEATURE_NAME.match(name):
                raise ValueError(
                    f"missing_features key {name!r} must name a map key, e.g. 'context.device'"
                )
        return policies

    @model_validator(mode="after")
    def _check_ranges(self) -> PreprocessConfig:
        if not self.rating_min < self.rating_max:
            raise ValueError(
                f"rating_min ({self.rating_min}) must be smaller than rating_max "
                f"({self.rating_max})"
            )
        for field in ("user", "item"):
            bits = getattr(self, f"{field}_hash_bits")
            capacity = getattr(self, f"{field}_capacity")
            if bits is not None and (1 << bits) > capacity:
                raise ValueError(
                    f"{field}_hash_bits={bits} gives {1 << bits} rows but {field}_capacity is "
                    f"{capacity}: lower the bits or raise the capacity"
                )
        return self
