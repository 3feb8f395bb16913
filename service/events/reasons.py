"""Why an event was refused: stable codes for metric labels and dead-letter headers.

Every consumed message is either applied or dead-lettered with exactly one
:class:`RejectReason`. The codes are part of the public contract (dashboards, alerts and
producers' own tooling key on them): never rename one, only add.

Example
-------
>>> RejectReason.NOT_JSON.value, str(RejectReason.DUPLICATE)
('not_json', 'duplicate')
>>> Rejection(3, RejectReason.TOMBSTONE, "the message has no value").reason
<RejectReason.TOMBSTONE: 'tombstone'>
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectReason(StrEnum):
    """Stable snake_case rejection codes, in the order the decoder checks them."""

    TOMBSTONE = "tombstone"
    """The message value is null (a Kafka tombstone)."""
    OVERSIZED_MESSAGE = "oversized_message"
    """The value is larger than ``preprocess.max_message_bytes``."""
    NOT_UTF8 = "not_utf8"
    """The bytes are not valid UTF-8."""
    NOT_JSON = "not_json"
    """The text is not one JSON document."""
    NOT_OBJECT = "not_object"
    """The JSON document is an array, string, number, boolean or null, not an object."""
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    """``schema_version`` is an integer this build does not know."""
    MISSING_FIELD = "missing_field"
    """A required field is absent (``value`` is required for ratings)."""
    WRONG_TYPE = "wrong_type"
    """A field has the wrong JSON type (e.g. a string where a number is expected)."""
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    """``event_type`` is a string outside the known types."""
    NON_FINITE_NUMBER = "non_finite_number"
    """A number is NaN or infinite: a ``NaN``/``Infinity`` literal (tolerated by the parser,
    not by the contract) or a number too large for a double such as ``1e400``."""
    ABSURD_NUMBER = "absurd_number"
    """A number is finite but far outside anything meaningful for its field."""
    EMPTY_ID = "empty_id"
    """``event_id``, ``user_id`` or ``item_id`` is an empty string."""
    ID_TOO_LONG = "id_too_long"
    """An id has more than 128 characters."""
    FIELD_TOO_LONG = "field_too_long"
    """A feature-map key or string value, or a timestamp string, is too long."""
    MAP_TOO_LARGE = "map_too_large"
    """A feature map has more than 16 entries."""
    CONTROL_CHARACTER = "control_character"
    """An id (``event_id``, ``user_id``, ``item_id``), the ``event_type`` or a key of a
    feature map holds a control character: C0 (U+0000-U+001F, tab and newline included)
    or DEL (U+007F), written as a JSON escape such as ``\\u0000`` or, for DEL, raw (a
    raw C0 byte inside a JSON string is ``not_json``). Ids and keys are judged after the
    types and limits: a message that also has a wrong type or a map too large gets that
    reason.

    A code of its own rather than a reused one: ``wrong_type`` would send the producer
    looking at JSON types, ``unknown_event_type`` hides that the type was *almost*
    right (``"click\\u0000"``, a C string's terminator) and no existing code fits an
    id or a key. One code for all these fields rather than an ``invalid_id``: the fault
    (a NUL terminator, a stray newline from a line reader, a DEL) and its fix are the
    same whichever field shows it, and the detail names the field and the character.
    String *values* of feature maps may hold control characters: they are data (free
    text with tabs or newlines), hashed as they are, never used as names. (Before this
    code, an ``event_type`` with a control character was reported as
    ``unknown_event_type``; ids and keys with one were accepted.)
    """
    INVALID_TIMESTAMP = "invalid_timestamp"
    """``timestamp`` is a string but not an RFC 3339 timestamp."""
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    """The event time is later than now plus ``preprocess.max_future_skew_ms``."""
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    """The event time is more than ``preprocess.allowed_lateness_ms`` behind the stream's
    watermark: the largest event time accepted so far on its partition (not the clock, so
    a replay of history in time order is accepted)."""
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    """A rating outside the configured range, or a negative price or dwell time."""
    DUPLICATE = "duplicate"
    """An event with the same ``event_id`` was accepted within the dedup window."""
    INTERNAL_ERROR = "internal_error"
    """The decoder failed on this message; a bug in freshrec, never in the producer."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused message.

    Parameters
    ----------
    index
        Position of the message in the batch given to the decoder.
    reason
        The stable code.
    detail
        What the producer should fix, in one sentence.
    """

    index: int
    reason: RejectReason
    detail: str
