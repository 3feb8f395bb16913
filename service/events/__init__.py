"""The event contract (schema version 1) and batch decoding of raw messages.

``decode_batch`` turns raw Kafka values into columnar accepted events plus rejections with
stable reason codes; ``Event`` is the pydantic model the JSON Schema in ``schemas/`` is
generated from. See ``docs/events.md`` for the producer-facing contract.
"""

from service.events.decode import DecodedBatch, decode_batch
from service.events.model import SCHEMA_VERSION, Event, EventType
from service.events.reasons import Rejection, RejectReason

__all__ = [
    "SCHEMA_VERSION",
    "DecodedBatch",
    "Event",
    "EventType",
    "RejectReason",
    "Rejection",
    "decode_batch",
]
