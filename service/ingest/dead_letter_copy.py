"""The record a rejected message becomes on the dead-letter topic, in three forms.

A copy must reach the broker whatever the rejected message looks like: a value of almost
the broker's limit plus freshrec's reason headers is over that limit, and a copy the
broker refuses is a copy that never ends. So a copy has three forms, each smaller than
the one before, and :func:`build_copy` shapes one to fit ``max_bytes``:

``full``
    The original key, value and headers, plus freshrec's headers.
``cut``
    The value cut to what fits, the key to at most :data:`MAX_CUT_KEY_BYTES`, the
    original headers kept only if they are small (:data:`MAX_CUT_HEADER_BYTES`);
    ``freshrec.cut`` names what was cut, ``freshrec.original.size`` and
    ``freshrec.original.sha256`` identify the original value.
``reference``
    No key and no original content: a small JSON value naming where the original is
    (source topic, partition, offset), why it was rejected, its size and sha256. The
    original can still be read from the source topic while its retention lasts.

Every form carries ``freshrec.copy`` (its name). This module is pure: no Kafka.

Example
-------
>>> copy = build_copy(b"k", b"x" * 50_000, [], {"freshrec.reason": b"id_too_long"},
...                   CopyForm.FULL, max_bytes=20_000, source=("events", 0, 7))
>>> copy.form.label, copy.size < 20_000, dict(copy.headers)["freshrec.cut"]
('cut', True, b'value')
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

import orjson

HEADER_COPY = "freshrec.copy"
HEADER_CUT = "freshrec.cut"
HEADER_ORIGINAL_SIZE = "freshrec.original.size"
HEADER_ORIGINAL_SHA256 = "freshrec.original.sha256"

# Room left for the record batch's own framing (batch header 61 bytes, the record's
# varints and attributes), so that a copy of ``max_bytes - RECORD_OVERHEAD`` fits.
RECORD_OVERHEAD = 1024
# A cut copy keeps this much of the key (keys are small by design: partitioning hashes
# them) and the original headers only while they add up to at most this.
MAX_CUT_KEY_BYTES = 1024
MAX_CUT_HEADER_BYTES = 8192
# A copy is never allowed to be smaller than this, whatever the broker says: below it
# even a reference record would not fit.
MIN_RECORD_BYTES = 4096

Headers = list[tuple[str, str | bytes | None]]


class CopyForm(IntEnum):
    """How much of the original a dead-letter copy carries (smaller forms are larger)."""

    FULL = 0
    CUT = 1
    REFERENCE = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    def smaller(self) -> CopyForm | None:
        """The next smaller form, ``None`` after ``reference``."""
        return CopyForm(self + 1) if self < CopyForm.REFERENCE else None


@dataclass(frozen=True, slots=True)
class Copy:
    """One record to produce: its form, key, value and headers."""

    form: CopyForm
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def size(self) -> int:
        return record_size(self.key, self.value, self.headers)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes the broker counts for a record, less the batch framing (an upper bound)."""
    size = len(key or b"") + len(value or b"")
    for name, header_value in headers:
        # Each header: its name and value and two varint lengths (at most 5 bytes each).
        raw = header_value.encode() if isinstance(header_value, str) else header_value
        size += len(name.encode()) + len(raw or b"") + 10
    return size


def build_copy(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    freshrec_headers: dict[str, bytes],
    form: CopyForm,
    *,
    max_bytes: int,
    source: tuple[str | None, int | None, int | None],
) -> Copy:
    """The copy of a rejected message in ``form``, or a smaller form if it does not fit.

    Parameters
    ----------
    key, value, headers
        The rejected message as consumed.
    freshrec_headers
        freshrec's own headers (reason, detail, source…), carried by every form.
    form
        The largest form wanted (a form that failed to send asks for a smaller one).
    max_bytes
        The most bytes one record may have on the dead-letter topic (the topic's
        ``max.message.bytes``), framing included.
    source
        (topic, partition, offset) of the original, for the reference record.
    """
    budget = max(max_bytes, MIN_RECORD_BYTES) - RECORD_OVERHEAD
    own: Headers = [(name, v) for name, v in freshrec_headers.items()]
    if form == CopyForm.FULL:
        copy = Copy(form, key, value,
                    [*headers, *own, (HEADER_COPY, form.label.encode())])
        if copy.size <= budget:
            return copy
        form = CopyForm.CUT
    original = value or b""
    identity: Headers = [
        (HEADER_ORIGINAL_SIZE, str(len(original)).encode()),
        (HEADER_ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode()),
    ]
    if form == CopyForm.CUT:
        cut = _cut(key, original, headers, own, identity, budget)
        if cut is not None:
            return cut
    topic, partition, offset = source
    reference = orjson.dumps({
        "reference": True,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "reason": freshrec_headers.get("freshrec.reason", b"").decode("utf-8", "replace"),
        "size": len(original),
        "sha256": hashlib.sha256(original).hexdigest(),
        "key_size": len(key or b""),
    })
    return Copy(CopyForm.REFERENCE, None, reference,
                [*own, *identity, (HEADER_COPY, CopyForm.REFERENCE.label.encode())])


def _cut(
    key: bytes | None, value: bytes, headers: Headers, own: Headers, identity: Headers,
    budget: int,
) -> Copy | None:
    cut: list[str] = []
    if key is not None and len(key) > MAX_CUT_KEY_BYTES:
        key = key[:MAX_CUT_KEY_BYTES]
        cut.append("key")
    kept = headers if record_size(None, None, headers) <= MAX_CUT_HEADER_BYTES else []
    if len(kept) != len(headers):
        cut.append("headers")
    # The value's room is what the rest leaves; "value" is named before it is measured
    # so that the header's own length is counted.
    trial = [*kept, *own, *identity, (HEADER_CUT, b"key,value,headers"),
             (HEADER_COPY, CopyForm.CUT.label.encode())]
    room = budget - record_size(key, None, trial)
    if room < 0:
        return None
    if len(value) > room:
        value = value[:room]
        cut.insert(1 if "key" in cut else 0, "value")
    if not cut:
        cut.append("none")  # asked for a cut copy (the full one failed), yet all fits
    return Copy(CopyForm.CUT, key, value,
                [*kept, *own, *identity, (HEADER_CUT, ",".join(cut).encode()),
                 (HEADER_COPY, CopyForm.CUT.label.encode())])
