"""Generated behaviour streams with known structure, for the demo, tests and benchmarks.

freshrec ships no dataset. Instead it plants a low-rank model of user taste and item
appeal, draws users and items with realistic popularity skew, and emits events whose
ratings and clicks follow the planted model plus noise. Because the truth is known, a test
can check that a learner recovers it, and a drift benchmark knows exactly where the world
changed.

Example
-------
>>> stream = SyntheticStream(StreamSpec(n_users=100, n_items=50, seed=1))
>>> r = stream.ratings(1000)
>>> r.user.shape, float(r.rating.min()) >= 1.0, float(r.rating.max()) <= 5.0
((1000,), True, True)
>>> events = stream.events(3, start_ms=1_700_000_000_000)
>>> sorted(events[0])  # doctest: +NORMALIZE_WHITESPACE
['context', 'event_id', 'event_type', 'item_id', 'schema_version', 'timestamp',
 'user_id', 'value']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase", "rating")
DEVICES = ("ios", "android", "web")
PAGES = ("home", "search", "item", "cart")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """The structure of a generated stream.

    Parameters
    ----------
    n_users, n_items
        Population sizes.
    n_factors
        Rank of the planted taste model.
    user_skew, item_skew
        Zipf exponents of user activity and item popularity (0 = uniform). Real
        recommender logs are heavily skewed: a few items take most of the traffic.
    noise
        Standard deviation of the rating noise (on a 1-5 scale).
    global_mean
        Mean rating before biases.
    drift_at
        Stream position (event index) where the concept changes, or ``None``.
    drift_kind
        ``"abrupt"``: item factors are redrawn at ``drift_at``. ``"gradual"``: the model
        slides linearly from the old to the new factors over ``drift_width`` events.
    drift_width
        Length of a gradual drift.
    mode
        ``"ratings"`` emits only rating events; ``"behaviour"`` emits impressions, clicks,
        add-to-carts, purchases and a few ratings, with clicks following the planted taste.
    seed
        Everything is a function of the seed and the position in the stream.
    """

    n_users: int = 10_000
    n_items: int = 2_000
    n_factors: int = 8
    user_skew: float = 0.8
    item_skew: float = 1.0
    noise: float = 0.4
    global_mean: float = 3.6
    drift_at: int | None = None
    drift_kind: Literal["abrupt", "gradual"] = "abrupt"
    drift_width: int = 10_000
    mode: Literal["ratings", "behaviour"] = "ratings"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1 or self.n_factors < 1:
            raise ValueError("n_users, n_items and n_factors must be at least 1")
        if self.drift_at is not None and self.drift_at < 0:
            raise ValueError("drift_at must be a non-negative stream position or None")
        if self.drift_width < 1:
            raise ValueError("drift_width must be at least 1")


@dataclass(slots=True)
class RatingArrays:
    """Columnar ratings: row ``i`` is user ``user[i]`` rating item ``item[i]``."""

    user: npt.NDArray[np.int64]
    item: npt.NDArray[np.int64]
    rating: npt.NDArray[np.float32]
    position: npt.NDArray[np.int64]


@dataclass(slots=True)
class ClickArrays:
    """Columnar impressions with their outcome (0 = ignored, 1 = clicked)."""

    user: npt.NDArray[np.int64]
    item: npt.NDArray[np.int64]
    clicked: npt.NDArray[np.int8]
    device: npt.NDArray[np.int64]
    position: npt.NDArray[np.int64]


def _zipf_probabilities(n: int, exponent: float) -> npt.NDArray[np.float64]:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


class SyntheticStream:
    """A reproducible, stateful stream drawn from a planted taste model.

    Calls continue where the previous one stopped (``position``), so a stream can be
    generated in chunks of any size with the same result.
    """

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.position = 0
        rng = np.random.default_rng(spec.seed)
        k = spec.n_factors
        scale = 1.0 / np.sqrt(k)
        self.user_factors = rng.normal(0.0, scale, (spec.n_users, k))
        self.item_factors = rng.normal(0.0, scale, (spec.n_items, k))
        self.user_bias = rng.normal(0.0, 0.3, spec.n_users)
        self.item_bias = rng.normal(0.0, 0.4, spec.n_items)
        # After a drift, tastes for items change: new item factors and biases.
        self.item_factors_after = rng.normal(0.0, scale, (spec.n_items, k))
        self.item_bias_after = rng.normal(0.0, 0.4, spec.n_items)
        # Popularity ranks are shuffled so item 0 is not always the most popular.
        self._user_p = _zipf_probabilities(spec.n_users, spec.user_skew)[
            rng.permutation(spec.n_users)
        ]
        self._item_p = _zipf_probabilities(spec.n_items, spec.item_skew)[
            rng.permutation(spec.n_items)
        ]
        self._device_effect = rng.normal(0.0, 0.3, len(DEVICES))
        self._rng = np.random.default_rng(spec.seed + 1)

    # -- the planted model ------------------------------------------------------------

    def drift_weight(self, position: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """How far each position is into the new concept: 0 before, 1 after."""
        spec = self.spec
        if spec.drift_at is None:
            return np.zeros(len(position))
        if spec.drift_kind == "abrupt":
            return (position >= spec.drift_at).astype(np.float64)
        return np.clip((position - spec.drift_at) / spec.drift_width, 0.0, 1.0)

    def true_score(
        self,
        user: npt.NDArray[np.int64],
        item: npt.NDArray[np.int64],
        position: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """The planted (noise-free, unclipped) rating of ``user`` for ``item``."""
        if position is None:
            position = np.full(len(user), self.position, dtype=np.int64)
        w = self.drift_weight(position)[:, None]
        q = (1 - w) * self.item_factors[item] + w * self.item_factors_after[item]
        b = (1 - w[:, 0]) * self.item_bias[item] + w[:, 0] * self.item_bias_after[item]
        taste = np.einsum("ij,ij->i", self.user_factors[user], q) * 2.0
        return self.spec.global_mean + self.user_bias[user] + b + taste

    # -- draws ----------------------------------------------------------------------

    def _draw_pairs(
        self, n: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        rng = self._rng
        user = rng.choice(self.spec.n_users, size=n, p=self._user_p).astype(np.int64)
        item = rng.choice(self.spec.n_items, size=n, p=self._item_p).astype(np.int64)
        position = np.arange(self.position, self.position + n, dtype=np.int64)
        self.position += n
        return user, item, position

    def ratings(self, n: int) -> RatingArrays:
        """The next ``n`` ratings, on a 1-5 scale in half-star steps."""
        user, item, position = self._draw_pairs(n)
        raw = self.true_score(user, item, position) + self._rng.normal(0.0, self.spec.noise, n)
        rating = np.clip(np.round(raw * 2.0) / 2.0, 1.0, 5.0).astype(np.float32)
        return RatingArrays(user=user, item=item, rating=rating, position=position)

    def clicks(self, n: int) -> ClickArrays:
        """The next ``n`` impressions and whether each was clicked."""
        user, item, position = self._draw_pairs(n)
        device = self._rng.integers(0, len(DEVICES), n).astype(np.int64)
        logit = (
            self.true_score(user, item, position) - self.spec.global_mean
        ) * 1.5 - 1.5 + self._device_effect[device]
        p = 1.0 / (1.0 + np.exp(-logit))
        clicked = (self._rng.random(n) < p).astype(np.int8)
        return ClickArrays(user=user, item=item, clicked=clicked, device=device, position=position)

    # -- events in the wire contract ----------------------------------------------------

    def events(
        self, n: int, *, start_ms: int, events_per_second: float = 1000.0
    ) -> list[dict[str, Any]]:
        """The next ``n`` events as JSON-ready dicts following schema version 1.

        Event times advance from ``start_ms`` at ``events_per_second`` of stream time.
        In ``behaviour`` mode an impression may be followed by a click, an add-to-cart and
        a purchase of the same item, so ``n`` counts impressions drawn, and more events
        than ``n`` may be returned.
        """
        step_ms = 1000.0 / events_per_second
        if self.spec.mode == "ratings":
            r = self.ratings(n)
            ts = (start_ms + r.position * step_ms).astype(np.int64)
            device = self._rng.integers(0, len(DEVICES), n)
            return [
                {
                    "schema_version": 1,
                    "event_id": f"r-{self.spec.seed}-{p}",
                    "event_type": "rating",
                    "user_id": f"u{u}",
                    "item_id": f"i{i}",
                    "timestamp": int(t),
                    "value": float(v),
                    "context": {"device": DEVICES[d]},
                }
                for u, i, v, p, t, d in zip(
                    r.user.tolist(),
                    r.item.tolist(),
                    r.rating.tolist(),
                    r.position.tolist(),
                    ts.tolist(),
                    device.tolist(),
                    strict=True,
                )
            ]
        c = self.clicks(n)
        ts = (start_ms + c.position * step_ms).astype(np.int64)
        follow = self._rng.random((n, 3))
        out: list[dict[str, Any]] = []
        for row in range(n):
            u, i, p, t = int(c.user[row]), int(c.item[row]), int(c.position[row]), int(ts[row])
            base = {
                "schema_version": 1,
                "user_id": f"u{u}",
                "item_id": f"i{i}",
                "context": {"device": DEVICES[int(c.device[row])], "position": row % 10},
            }
            out.append(
                {**base, "event_id": f"b-{self.spec.seed}-{p}-imp", "event_type": "impression",
                 "timestamp": t}
            )
            if not c.clicked[row]:
                continue
            out.append(
                {**base, "event_id": f"b-{self.spec.seed}-{p}-clk", "event_type": "click",
                 "timestamp": t + 500}
            )
            if follow[row, 0] < 0.3:
                out.append(
                    {**base, "event_id": f"b-{self.spec.seed}-{p}-atc",
                     "event_type": "add_to_cart", "timestamp": t + 2000}
                )
                if follow[row, 1] < 0.4:
                    out.append(
                        {**base, "event_id": f"b-{self.spec.seed}-{p}-buy",
                         "event_type": "purchase", "timestamp": t + 5000,
                         "value": round(5.0 + 50.0 * float(follow[row, 2]), 2)}
                    )
        return out

    def encoded_events(
        self, n: int, *, start_ms: int, events_per_second: float = 1000.0
    ) -> list[bytes]:
        """Like :meth:`events`, serialised to JSON bytes as a producer would send them."""
        return [orjson.dumps(e) for e in self.events(n, start_ms=start_ms,
                                                      events_per_second=events_per_second)]
