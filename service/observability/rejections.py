"""Loud when most events are rejected: the share of recent rejections, and what to fix.

A producer that leaves out ``schema_version`` gets every event dead-lettered. Each
rejection is counted and copied, but nobody reads a dead-letter topic until something
else looks wrong. :class:`RejectionWatch` keeps the share of rejected events among the
last ``window`` consumed ones (duplicates are not rejections: a retry is not a fault), and
says :meth:`RejectionWatch.warning` when that share is above ``threshold``: the top
reasons, one example detail of each, and the fix.

Example
-------
>>> watch = RejectionWatch(window=100, threshold=0.5)
>>> watch.observe(100, [("missing_field", "'schema_version' is missing")] * 80)
>>> watch.share
0.8
>>> print(watch.warning())  # doctest: +NORMALIZE_WHITESPACE
80% of the last 100 events were rejected: missing_field 80 (e.g. 'schema_version' is
missing; fix: add "schema_version": 1 to every event, see docs/events.md)
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

# What to tell the producer, by reason (docs/events.md has the full table).
FIXES: dict[str, str] = {
    "tombstone": "send each event as a JSON object, not a null value",
    "oversized_message": "drop large payloads from the event (preprocess.max_message_bytes)",
    "not_utf8": "encode the JSON as UTF-8",
    "not_json": "send exactly one JSON object per message",
    "not_object": "send one event object per message, not a list or a scalar",
    "unknown_schema_version": 'send "schema_version": 1 (the version this build reads)',
    "missing_field": "add the field",
    "wrong_type": "send the documented JSON type",
    "unknown_event_type": "use impression, click, add_to_cart, purchase or rating",
    "non_finite_number": "send finite numbers, or leave the optional field out",
    "absurd_number": "check the field's unit (seconds vs milliseconds…)",
    "empty_id": "send non-empty ids",
    "id_too_long": "send ids of at most 128 characters (a hash of a long key works)",
    "control_character": "remove control characters (U+0000-U+001F, U+007F) from ids, "
                         "the event type and map keys",
    "field_too_long": "shorten feature keys and values",
    "map_too_large": "send at most 16 entries per feature map",
    "invalid_timestamp": "send RFC 3339 with a zone, or integer epoch milliseconds",
    "timestamp_in_future": "fix the producer's clock, or send UTC",
    "timestamp_too_old": "send late history through a backfill, not the live topic",
    "value_out_of_range": "send ratings on the configured scale",
    "duplicate": "never reuse event ids",
    "internal_error": "a bug in freshrec: report it with the dead-letter copy",
}


def fix_for(reason: str, detail: str) -> str:
    """The advice for one rejection; specific where the detail says more."""
    if reason == "missing_field" and "schema_version" in detail:
        return 'add "schema_version": 1 to every event'
    return FIXES.get(reason, "see the reason's row in docs/events.md")


class RejectionWatch:
    """The rejected share of the last ``window`` events, with examples for a warning.

    Parameters
    ----------
    window
        How many of the most recent consumed events the share is taken over.
    threshold
        Above this share, :meth:`warning` has something to say.
    """

    def __init__(self, window: int = 10_000, threshold: float = 0.5) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.window = window
        self.threshold = threshold
        # One entry per batch: (events, reasons counted, first detail of each reason).
        self._batches: deque[tuple[int, Counter[str], dict[str, str]]] = deque()
        self._events = 0
        self._reasons: Counter[str] = Counter()

    def observe(self, n_events: int, rejections: Iterable[tuple[str, str]]) -> None:
        """One batch: ``n_events`` consumed, of which ``rejections`` (reason, detail)."""
        reasons: Counter[str] = Counter()
        examples: dict[str, str] = {}
        for reason, detail in rejections:
            reasons[reason] += 1
            examples.setdefault(reason, detail)
        self._batches.append((n_events, reasons, examples))
        self._events += n_events
        self._reasons += reasons
        # Whole batches leave the window, the oldest first, while the rest still fill it.
        while len(self._batches) > 1 and self._events - self._batches[0][0] >= self.window:
            n, old, _ = self._batches.popleft()
            self._events -= n
            self._reasons -= old

    @property
    def events(self) -> int:
        return self._events

    @property
    def share(self) -> float:
        """Rejected share of the recent events (0 before any event)."""
        return sum(self._reasons.values()) / self._events if self._events else 0.0

    def warning(self, top: int = 3) -> str | None:
        """What to log when the share is above the threshold, else ``None``."""
        if self.share <= self.threshold:
            return None
        parts = []
        for reason, count in self._reasons.most_common(top):
            detail = next(e[reason] for _, _, e in reversed(self._batches) if reason in e)
            parts.append(f"{reason} {count} (e.g. {detail}; fix: {fix_for(reason, detail)}, "
                         "see docs/events.md)")
        return (f"{self.share:.0%} of the last {self._events} events were rejected: "
                + "; ".join(parts))
