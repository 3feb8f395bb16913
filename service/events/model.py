"""The event contract, version 1: what a producer may put on the events topic.

Two views of the same contract live here and are kept in lockstep by the tests:

* :class:`Event`, a pydantic model: the documented source of truth, from which the
  committed JSON Schema (``schemas/event.v1.json``) is generated and which producers
  written in Python may use to build events.
* :data:`EVENT_ADAPTER`, a ``TypeAdapter`` over a ``TypedDict`` with the same fields and
  constraints. It validates raw JSON bytes in Rust and returns a plain ``dict``: about five
  times faster than building a model instance, so it is what the decoder uses per message.

Checks that need configuration (the rating range, the allowed lateness, id lengths in
bytes…) are not part of the types: the decoder applies them vectorised to the whole batch.
So are the rules that :class:`Event` states but the ``TypedDict`` leaves out, each with a
reason code of its own: ids of 1-128 characters, and no control character (C0 or DEL,
:data:`CONTROL_PATTERN`) in an id or a map key.

Example
-------
>>> e = Event.model_validate_json(
...     b'{"schema_version":1,"event_id":"e-1","event_type":"rating","user_id":"u42",'
...     b'"item_id":7,"timestamp":"2026-11-27T18:00:00Z","value":4.0,'
...     b'"context":{"device":"ios","position":3}}'
... )
>>> e.item_id, e.event_type.code
('7', 4)
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    field_validator,
)
from typing_extensions import TypedDict

SCHEMA_VERSION = 1
"""The only ``schema_version`` this build accepts."""

SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})

MAX_ID_LENGTH = 128
"""Most characters in ``event_id``, ``user_id`` and ``item_id``."""

MAX_MAP_KEYS = 16
"""Most entries in ``context``, ``user_features`` and ``item_features``."""

MAX_KEY_LENGTH = 64
"""Most characters in a key of a feature map."""

MAX_TEXT_LENGTH = 256
"""Most characters in a string value of a feature map."""

MAX_TIMESTAMP_TEXT = 40
"""Most characters in an RFC 3339 timestamp string (longer ones cannot be valid)."""

MAX_ABS_NUMBER = 1e15
"""Largest magnitude of a number in a feature map: beyond it a number is a bug, not data."""

MAX_EPOCH_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last instant RFC 3339 can write."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

CONTROL_PATTERN = r"[\x00-\x1f\x7f]"
"""The control characters ids, the event type and map keys must not hold: C0 and DEL.

A JSON Schema ``pattern`` is searched, not matched, so the schema says ``"not":
{"pattern": CONTROL_PATTERN}`` rather than ``^[^...]*$``, whose ``$`` Python's ``re`` (and
so the ``jsonschema`` package) also matches before a trailing newline."""

_CONTROL = re.compile(CONTROL_PATTERN)


def first_control(text: str) -> int | None:
    """Index of the first control character of ``text``, or ``None``.

    >>> first_control("u\\x00x"), first_control("caf\\u00e9"), first_control("\\x7f")
    (1, None, 0)
    """
    found = _CONTROL.search(text)
    return None if found is None else found.start()


def _no_control(text: str) -> str:
    at = first_control(text)
    if at is not None:
        raise ValueError(f"must not hold a control character (U+{ord(text[at]):04X} at "
                         f"index {at})")
    return text


class EventType(StrEnum):
    """What the user did. The integer :attr:`code` is the ``event_type`` column's value."""

    IMPRESSION = "impression"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"

    @property
    def code(self) -> int:
        return EVENT_TYPE_CODES[self.value]


EVENT_TYPE_CODES: dict[str, int] = {t.value: i for i, t in enumerate(EventType)}
"""Wire name → int8 code used in decoded batches (stable: append new types at the end)."""

EVENT_TYPE_NAMES: tuple[str, ...] = tuple(t.value for t in EventType)

EventTypeName = Literal["impression", "click", "add_to_cart", "purchase", "rating"]

# -- constrained types shared by the model and the fast-path TypedDict ----------------

# A JSON integer id is accepted and turned into its decimal string; bounding it to int64
# keeps str() cheap and rejects numbers that were obviously never ids.
IdInt = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
EpochMs = Annotated[int, Field(strict=True, ge=0, le=MAX_EPOCH_MS)]
TimestampText = Annotated[str, StringConstraints(strict=True, max_length=MAX_TIMESTAMP_TEXT)]
# The model (and so the JSON Schema) states the id, key and timestamp rules that the fast
# path checks vectorised after validation, to give each failure its own reason code.
_PRINTABLE = Field(json_schema_extra={"not": {"pattern": CONTROL_PATTERN}})
IdText = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LENGTH),
                   AfterValidator(_no_control), _PRINTABLE]
DateTimeText = Annotated[TimestampText, Field(json_schema_extra={"format": "date-time"})]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
MapKey = Annotated[str, StringConstraints(strict=True, max_length=MAX_KEY_LENGTH)]
MapText = Annotated[str, StringConstraints(strict=True, max_length=MAX_TEXT_LENGTH)]
MapNumber = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_NUMBER, le=MAX_ABS_NUMBER)
]
MapInt = Annotated[int, Field(strict=True, ge=-int(MAX_ABS_NUMBER), le=int(MAX_ABS_NUMBER))]
# bool before int: in Python a bool is an int, and strict mode keeps JSON true a bool.
MapValue = StrictBool | MapInt | MapNumber | MapText | None
FeatureMap = Annotated[dict[MapKey, MapValue], Field(max_length=MAX_MAP_KEYS)]
PrintableMapKey = Annotated[MapKey, AfterValidator(_no_control), _PRINTABLE]
PrintableFeatureMap = Annotated[dict[PrintableMapKey, MapValue], Field(max_length=MAX_MAP_KEYS)]


class EventDict(TypedDict):
    """The fast-path shape of an event: what :data:`EVENT_ADAPTER` returns.

    Ids may still be ``int`` here and timestamps ``str``: the decoder converts them for the
    whole batch at once. Absent optional fields come back as ``None``.
    """

    schema_version: StrictInt
    event_id: StrictStr
    event_type: EventTypeName
    user_id: StrictStr | IdInt
    item_id: StrictStr | IdInt
    timestamp: EpochMs | TimestampText
    # Defaults make every returned dict carry all ten keys, so the decoder can pull all
    # columns with one itemgetter instead of a .get() per field per event.
    value: NotRequired[Annotated[FiniteFloat | None, Field(default=None)]]
    context: NotRequired[Annotated[FeatureMap | None, Field(default=None)]]
    user_features: NotRequired[Annotated[FeatureMap | None, Field(default=None)]]
    item_features: NotRequired[Annotated[FeatureMap | None, Field(default=None)]]


EVENT_ADAPTER: TypeAdapter[EventDict] = TypeAdapter(EventDict)
"""Validates one JSON message into an :class:`EventDict` (unknown fields are ignored)."""


def _id_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Event(BaseModel):
    """One user-behaviour event, schema version 1.

    Parameters
    ----------
    schema_version
        Always ``1`` for this contract. Messages with another version are rejected with
        ``unknown_schema_version`` before any other check, so a newer producer never has
        its events misread.
    event_id
        Unique per event (1-128 characters); a redelivered event with the same id within
        the dedup window is dead-lettered as ``duplicate``.
    event_type
        ``impression``, ``click``, ``add_to_cart``, ``purchase`` or ``rating``.
    user_id, item_id
        1-128 characters; a JSON integer is accepted and used as its decimal string.
        No id may hold a control character (U+0000-U+001F or U+007F).
    timestamp
        When the event happened: an RFC 3339 string with a ``Z`` or numeric offset, or an
        integer number of milliseconds since the Unix epoch.
    value
        Required for ``rating`` (within the configured range, 0.5-5.0 by default);
        otherwise optional: a price for ``purchase``, a dwell time for ``impression``
        (finite and not negative).
    context, user_features, item_features
        Optional flat maps of at most 16 entries: keys of at most 64 characters without
        control characters, values a string (≤ 256 characters, any characters), a
        number, a boolean or ``null`` (= missing).

    Unknown top-level fields are ignored, so producers may add fields before consumers
    use them.

    Example
    -------
    >>> Event(schema_version=1, event_id="e-1", event_type="click", user_id=42,
    ...       item_id="i7", timestamp=1_700_000_000_000).user_id
    '42'
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = Field(description="Contract version; this is version 1.")
    event_id: IdText = Field(description="Unique id of the event.")
    event_type: EventType = Field(description="What the user did.")
    user_id: IdText | IdInt = Field(
        description="The user (a JSON integer is converted to its decimal string)."
    )
    item_id: IdText | IdInt = Field(
        description="The item (a JSON integer is converted to its decimal string)."
    )
    timestamp: EpochMs | DateTimeText = Field(
        description="Event time: RFC 3339 string, or integer milliseconds since the epoch."
    )
    value: FiniteFloat | None = Field(
        None, description="Rating (required for ratings), price or dwell time."
    )
    context: PrintableFeatureMap | None = Field(
        None, description="Where it happened: device, page, position..."
    )
    user_features: PrintableFeatureMap | None = Field(
        None, description="Attributes of the user.")
    item_features: PrintableFeatureMap | None = Field(
        None, description="Attributes of the item.")

    @field_validator("user_id", "item_id", mode="after")
    @classmethod
    def _ids_are_strings(cls, v: Any) -> str:
        v = _id_to_str(v)
        if not 1 <= len(v) <= MAX_ID_LENGTH:
            raise ValueError(f"must have 1 to {MAX_ID_LENGTH} characters")
        return str(v)

    @field_validator("timestamp", mode="after")
    @classmethod
    def _timestamp_parses(cls, v: Any) -> Any:
        if isinstance(v, str):
            from service.events.timestamps import parse_rfc3339_one

            if parse_rfc3339_one(v) is None:
                raise ValueError("must be an RFC 3339 timestamp like 2026-11-27T18:00:00Z")
        return v

    @property
    def timestamp_ms(self) -> int:
        """The event time in milliseconds since the epoch."""
        if isinstance(self.timestamp, int):
            return self.timestamp
        from service.events.timestamps import parse_rfc3339_one

        ms = parse_rfc3339_one(self.timestamp)
        assert ms is not None  # checked by the validator
        return ms
