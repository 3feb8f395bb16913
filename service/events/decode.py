"""Batch decoding: raw Kafka message values in, columnar accepted events and rejections out.

Three paths, each taking only what the one before could not vouch for: a compiled scanner
reads the typical messages straight from their bytes (:mod:`service.events.scan`); the
rest are parsed by orjson and screened column by column (:mod:`service.events.fast`); the
few the screen cannot vouch for are validated one by one in Rust by pydantic-core
(:data:`EVENT_ADAPTER`), the contract's reference. Everything else (id lengths,
timestamps, lateness, value ranges) is checked for the whole batch at once with numpy and
a compiled timestamp parser. Only messages that fail take the slow path that works out
*why* they failed, so the common case pays nothing for good error messages.

``decode_batch`` never raises because of its input: every message ends up either in the
accepted columns (``DecodedBatch.index``) or in ``DecodedBatch.rejections``, never both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pydantic_core
from pydantic import ValidationError

from service.events.fast import FIELD_NAMES, MAP_FIELDS, PLACEHOLDER, parse_columns
from service.events.gc_pause import gc_paused
from service.events.maps import PackedMaps
from service.events.model import (
    EVENT_ADAPTER,
    EVENT_TYPE_CODES,
    EVENT_TYPE_NAMES,
    MAX_ID_LENGTH,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    EventType,
    first_control,
)
from service.events.packed import PackedStrings
from service.events.reasons import Rejection, RejectReason
from service.events.scan import ID_FIELDS, Scanned, scan_batch
from service.events.timestamps import format_rfc3339, parse_packed_rfc3339, parse_rfc3339
from service.events.watermark import Watermarks

if TYPE_CHECKING:  # a runtime import would be circular: preprocess imports this module
    from service.preprocess.config import PreprocessConfig

FeatureMap = dict[str, Any]
_RATING = EventType.RATING.code
_MAP_FIELDS = frozenset({"context", "user_features", "item_features"})
_ID_FIELDS = frozenset({"event_id", "user_id", "item_id"})


@dataclass(slots=True)
class DecodedBatch:
    """The accepted events of a batch, column by column, and the rejected messages.

    Strings and maps are held packed for the compiled kernels of preprocessing (no Python
    object per event); the ``event_id``, ``user_id``, ``item_id``, ``context``,
    ``user_features`` and ``item_features`` properties build Python lists from them on
    demand, for tests and tools.

    Parameters
    ----------
    n_input
        Number of messages given to the decoder.
    index
        Position in the input of each accepted event (ascending).
    event_type
        ``int8`` codes: see :data:`service.events.model.EVENT_TYPE_CODES`.
    ts_ms
        Event time, milliseconds since the epoch.
    value
        ``float64``; NaN when the event has no value.
    ids
        ``event_id``, ``user_id`` and ``item_id`` as :class:`PackedStrings` (an integer id
        as its decimal text).
    maps
        ``context``, ``user_features`` and ``item_features`` as :class:`PackedMaps`.
    rejections
        One per refused message, in input order.
    """

    n_input: int
    index: npt.NDArray[np.int64]
    event_type: npt.NDArray[np.int8]
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    ids: dict[str, PackedStrings]
    maps: dict[str, PackedMaps]
    rejections: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.index)

    def packed_ids(self, name: str) -> PackedStrings:
        """Column ``name`` (``event_id``, ``user_id`` or ``item_id``), packed."""
        return self.ids[name]

    @property
    def event_id(self) -> list[str]:
        return self.ids["event_id"].to_list()

    @property
    def user_id(self) -> list[str]:
        return self.ids["user_id"].to_list()

    @property
    def item_id(self) -> list[str]:
        return self.ids["item_id"].to_list()

    @property
    def context(self) -> list[FeatureMap | None]:
        return self.maps["context"].to_dicts()

    @property
    def user_features(self) -> list[FeatureMap | None]:
        return self.maps["user_features"].to_dicts()

    @property
    def item_features(self) -> list[FeatureMap | None]:
        return self.maps["item_features"].to_dicts()

    @classmethod
    def empty(cls, n_input: int = 0, rejections: list[Rejection] | None = None) -> DecodedBatch:
        return cls(
            n_input=n_input,
            index=np.zeros(0, dtype=np.int64),
            event_type=np.zeros(0, dtype=np.int8),
            ts_ms=np.zeros(0, dtype=np.int64),
            value=np.zeros(0, dtype=np.float64),
            ids={name: PackedStrings.from_list([]) for name in ID_FIELDS},
            maps={name: PackedMaps.empty(0) for name in MAP_FIELDS},
            rejections=rejections or [],
        )

    def take(self, positions: npt.NDArray[np.int64]) -> DecodedBatch:
        """The accepted events at ``positions`` (indices into the columns), same rejections."""
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        return DecodedBatch(
            n_input=self.n_input,
            index=self.index[positions],
            event_type=self.event_type[positions],
            ts_ms=self.ts_ms[positions],
            value=self.value[positions],
            ids={name: p.take(positions) for name, p in self.ids.items()},
            maps={name: m.take(positions) for name, m in self.maps.items()},
            rejections=self.rejections,
        )


def decode_batch(
    values: Sequence[bytes | None], now_ms: int, config: PreprocessConfig | None = None,
    *, watermarks: Watermarks | None = None,
    partitions: npt.NDArray[np.int64] | None = None,
) -> DecodedBatch:
    """Decode and validate raw message values.

    Parameters
    ----------
    values
        Message values as consumed (``None`` for a tombstone).
    now_ms
        Processing time in epoch milliseconds: the reference for future skew only.
    config
        Limits (message size, lateness, rating range…); defaults when ``None``.
    watermarks
        The stream's watermarks (:mod:`service.events.watermark`), which lateness is
        judged against and which advance over the accepted events; ``None`` judges the
        batch on its own (only against the events before it in the batch).
    partitions
        The partition of each message, for per-partition watermarks (``None``: one).

    Example
    -------
    >>> batch = decode_batch(
    ...     [b'{"schema_version":1,"event_id":"e1","event_type":"click","user_id":"u1",'
    ...      b'"item_id":"i1","timestamp":1700000000000}', b"{oops", None],
    ...     now_ms=1_700_000_000_000,
    ... )
    >>> batch.index.tolist(), [r.reason.value for r in batch.rejections]
    ([0], ['not_json', 'tombstone'])
    """
    if config is None:
        from service.preprocess.config import PreprocessConfig

        config = PreprocessConfig()
    with gc_paused():
        return _decode(values, now_ms, config, fast=True,
                       watermarks=watermarks if watermarks is not None else Watermarks(),
                       partitions=partitions)


def _decode(
    values: Sequence[bytes | None], now_ms: int, cfg: PreprocessConfig, fast: bool,
    watermarks: Watermarks | None = None, partitions: npt.NDArray[np.int64] | None = None,
) -> DecodedBatch:
    """``fast=False`` validates every message with pydantic: the reference the fast paths
    (the compiled scanner, then the orjson screen) must agree with (tests compare them)."""
    n = len(values)
    rejections: list[Rejection] = []
    oversized = _oversized(values, cfg.max_message_bytes)
    work: Sequence[Any] = values
    if oversized:
        work = list(values)
        for i in oversized:
            work[i] = None  # fails validation below; reported as oversized, not tombstone
    scanned: Scanned | None = None
    if fast and n:
        scanned = scan_batch(work if set(map(type, work)) == {bytes}
                             else [v if v.__class__ is bytes else b"" for v in work])
        rest = np.flatnonzero(~scanned.ok)
    else:
        rest = np.arange(n, dtype=np.int64)
    # The messages the scanner could not read: orjson and the screen, then pydantic.
    rest_list = rest.tolist()
    sub = [work[k] for k in rest_list]
    if fast:
        cols, slow = parse_columns(sub)
    else:
        cols = {name: [PLACEHOLDER[name]] * len(sub) for name in FIELD_NAMES}
        slow = list(range(len(sub)))
    accepted = scanned.ok.copy() if scanned is not None else np.zeros(n, dtype=np.bool_)
    accepted[rest] = True
    validate = EVENT_ADAPTER.validator.validate_json
    for j in slow:
        k = rest_list[j]
        try:
            event = validate(work[k])
        except Exception as exc:
            rejections.append(_reject(k, values[k], exc, oversized, cfg.max_message_bytes))
            accepted[k] = False
            for name in FIELD_NAMES:  # neutral values in its place, dropped at the end
                cols[name][j] = PLACEHOLDER[name]
            continue
        for name in FIELD_NAMES:
            cols[name][j] = event[name]
    try:
        batch = _columns(scanned, cols, rest, accepted, n, now_ms, cfg, rejections,
                         watermarks if watermarks is not None else Watermarks(), partitions)
    except Exception as exc:  # pragma: no cover - defensive: a bug must not stop the stream
        batch = DecodedBatch.empty(n, rejections + [
            _internal(i, exc) for i in np.flatnonzero(accepted).tolist()])
    batch.rejections.sort(key=_by_index)
    return batch


def _oversized(values: Sequence[bytes | None], max_bytes: int) -> set[int]:
    # filter(None, ...) skips tombstones (and empty values, which are never too big).
    try:
        if max(map(len, filter(None, values)), default=0) <= max_bytes:
            return set()
    except TypeError:  # a value that is not bytes: look at each (it is rejected later)
        pass
    return {i for i, v in enumerate(values)
            if isinstance(v, bytes | bytearray | memoryview | str) and len(v) > max_bytes}


def _reject(
    i: int, raw: Any, exc: Exception, oversized: set[int], max_bytes: int
) -> Rejection:
    if i in oversized:
        return Rejection(i, RejectReason.OVERSIZED_MESSAGE,
                         f"the message has {len(raw)} bytes, more than the {max_bytes} "
                         "allowed; drop large payloads from the event")
    if raw is None:
        return Rejection(i, RejectReason.TOMBSTONE,
                         "the message has no value (tombstone); send the event as a JSON object")
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        return Rejection(i, RejectReason.WRONG_TYPE,
                         f"the message value is a {type(raw).__name__}, not bytes")
    if isinstance(exc, ValidationError):
        return _explain(i, raw, exc)
    return _internal(i, exc)


def _by_index(r: Rejection) -> int:
    return r.index


def _internal(i: int, exc: BaseException) -> Rejection:
    return Rejection(i, RejectReason.INTERNAL_ERROR,
                     f"freshrec failed to decode this message ({type(exc).__name__}); "
                     "please report it, the producer is not at fault")


# -- vectorised checks on the events that passed type validation --------------------------

# Later checks win only where no earlier one fired: this is the contract's priority order.
_CHECKS = (
    RejectReason.UNKNOWN_SCHEMA_VERSION,
    RejectReason.EMPTY_ID,
    RejectReason.ID_TOO_LONG,
    RejectReason.CONTROL_CHARACTER,
    RejectReason.INVALID_TIMESTAMP,
    RejectReason.MISSING_FIELD,
    RejectReason.ABSURD_NUMBER,
    RejectReason.VALUE_OUT_OF_RANGE,
    RejectReason.TIMESTAMP_IN_FUTURE,
    RejectReason.TIMESTAMP_TOO_OLD,
)


def _rows_with_control(offsets: npt.NDArray[np.int64],
                       codepoints: npt.NDArray[np.uint32]) -> npt.NDArray[np.int64]:
    """The strings (``codepoints[offsets[i]:offsets[i + 1]]``) that hold a control
    character, one entry per such character: C0 (below U+0020) or DEL (U+007F)."""
    at = np.flatnonzero((codepoints < 0x20) | (codepoints == 0x7F))
    return np.searchsorted(offsets, at, side="right") - 1


def _control_mask(ids: dict[str, PackedStrings], maps: dict[str, PackedMaps],
                  n: int) -> npt.NDArray[np.bool_]:
    """Which of ``n`` events hold a control character in an id or a map key."""
    out = np.zeros(n, dtype=np.bool_)
    for p in ids.values():
        out[_rows_with_control(p.offsets, p.codepoints)] = True
    for m in maps.values():
        if m.n_entries:
            entries = _rows_with_control(m.keys.offsets, m.keys.codepoints)
            out[np.searchsorted(m.indptr, entries, side="right") - 1] = True
    return out


def _control_message(where: str, text: str) -> str:
    """The detail of ``control_character`` for ``text``, found in ``where``."""
    at = first_control(text)
    assert at is not None
    return (f"{where} holds the control character U+{ord(text[at]):04X} at index {at}; "
            "remove it (ids, event types and map keys must not contain U+0000-U+001F or "
            "U+007F)")


def _control_detail(cols: dict[str, list[Any]], j: int) -> str:
    """Which id or map key of the others' row ``j`` holds a control character."""
    for name in ID_FIELDS:
        text = cols[name][j]
        if text.__class__ is str and first_control(text) is not None:
            return _control_message(f"'{name}'", text)
    for name in MAP_FIELDS:
        for key in cols[name][j] or ():
            if first_control(key) is not None:
                return _control_message(f"the key {key!r:.40} of '{name}'", key)
    raise AssertionError("no control character in the ids or keys")  # pragma: no cover


def _as_str(ids: list[Any]) -> list[str]:
    if set(map(type, ids)) <= {str}:  # the common case: no integer id to convert
        return ids
    return [x if x.__class__ is str else str(x) for x in ids]


def _timestamps(ts_raw: list[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Integers pass through; strings go through the compiled RFC 3339 parser."""
    m = len(ts_raw)
    ts_ok = np.ones(m, dtype=np.bool_)
    if str not in set(map(type, ts_raw)):
        return np.array(ts_raw, dtype=np.int64).reshape(m), ts_ok
    text_at = [k for k, t in enumerate(ts_raw) if t.__class__ is str]
    ts = np.zeros(m, dtype=np.int64)
    is_text = np.zeros(m, dtype=np.bool_)
    is_text[text_at] = True
    ints = [t for t in ts_raw if t.__class__ is not str]
    ts[~is_text] = np.array(ints, dtype=np.int64)
    parsed, ok = parse_rfc3339([ts_raw[k] for k in text_at])
    ts[is_text] = parsed
    ts_ok[is_text] = ok
    return ts, ts_ok


def _columns(
    scanned: Scanned | None,
    cols: dict[str, list[Any]],
    rest: npt.NDArray[np.int64],
    accepted: npt.NDArray[np.bool_],
    n_input: int,
    now_ms: int,
    cfg: PreprocessConfig,
    rejections: list[Rejection],
    watermarks: Watermarks,
    partitions: npt.NDArray[np.int64] | None,
) -> DecodedBatch:
    """Every message's columns (scanned rows, then the others put in their place), the
    contract's batch-wide checks on the accepted ones, and the batch of those that pass."""
    n = n_input
    if not accepted.any():
        return DecodedBatch.empty(n_input, rejections)
    r = len(rest)
    # Rows of the others: their columns come from Python values.
    r_codes = np.fromiter(map(EVENT_TYPE_CODES.__getitem__, cols["event_type"]),
                          dtype=np.int8, count=r)
    r_value = np.array(cols["value"], dtype=np.float64).reshape(r)  # None becomes NaN
    r_ts, r_ts_ok = _timestamps(cols["timestamp"])
    r_ids = {name: PackedStrings.from_list(_as_str(cols[name]) if name != "event_id"
                                           else cols[name]) for name in ID_FIELDS}
    r_maps = {name: PackedMaps.from_dicts(cols[name]) for name in MAP_FIELDS}
    if scanned is None:  # every row is one of the others (rest is 0..n-1)
        codes, value, ts, ts_ok = r_codes, r_value, r_ts, r_ts_ok
        ids, maps = r_ids, r_maps
    else:
        codes, value, ts = scanned.event_type.copy(), scanned.value.copy(), scanned.ts_ms
        ts_ok = np.ones(n, dtype=np.bool_)
        if scanned.ts_is_text.any():
            parsed, parsed_ok = parse_packed_rfc3339(scanned.ts_text)
            ts = np.where(scanned.ts_is_text, parsed, ts)
            ts_ok = ~scanned.ts_is_text | parsed_ok
        ids, maps = scanned.ids, scanned.maps
        if r:
            codes[rest], value[rest] = r_codes, r_value
            ts = ts.copy()
            ts[rest], ts_ok[rest] = r_ts, r_ts_ok
            # Row k of the batch: the scanner's row k, or row n + j of the others.
            order = np.arange(n, dtype=np.int64)
            order[rest] = n + np.arange(r, dtype=np.int64)
            ids = {name: PackedStrings.concat(ids[name], r_ids[name]).take(order)
                   for name in ID_FIELDS}
            maps = {name: PackedMaps.concat(maps[name], r_maps[name]).take(order)
                    for name in MAP_FIELDS}
    # Not through numpy: a version beyond 64 bits must be refused, not overflow. The
    # scanner only reads version 1, so only the others can carry another.
    unknown_version = np.zeros(n, dtype=np.bool_)
    unknown_version[rest] = ~np.fromiter(
        map(SUPPORTED_SCHEMA_VERSIONS.__contains__, cols["schema_version"]), dtype=np.bool_,
        count=r)
    # Control characters in ids and map keys. The scanner defers every string holding
    # one (a raw C0 byte is not JSON; an escape and a DEL are deferred), so only the rows
    # of the others can, and only their columns are searched.
    control = np.zeros(n, dtype=np.bool_)
    if r:
        control[rest] = _control_mask(r_ids, r_maps, r)
    id_len = {name: p.lengths for name, p in ids.items()}
    is_rating = codes == _RATING
    has_value = ~np.isnan(value)
    masks = {
        RejectReason.UNKNOWN_SCHEMA_VERSION: unknown_version,
        RejectReason.EMPTY_ID: (id_len["event_id"] == 0)
        | (id_len["user_id"] == 0)
        | (id_len["item_id"] == 0),
        RejectReason.ID_TOO_LONG: (id_len["event_id"] > MAX_ID_LENGTH)
        | (id_len["user_id"] > MAX_ID_LENGTH)
        | (id_len["item_id"] > MAX_ID_LENGTH),
        RejectReason.CONTROL_CHARACTER: control,
        RejectReason.INVALID_TIMESTAMP: ~ts_ok,
        RejectReason.MISSING_FIELD: is_rating & ~has_value,
        RejectReason.ABSURD_NUMBER: has_value & (np.abs(value) > cfg.max_abs_value),
        RejectReason.VALUE_OUT_OF_RANGE: has_value
        & np.where(is_rating, (value < cfg.rating_min) | (value > cfg.rating_max), value < 0),
        RejectReason.TIMESTAMP_IN_FUTURE: ts > now_ms + cfg.max_future_skew_ms,
    }
    code = np.zeros(n, dtype=np.int8)
    for k, reason in enumerate(_CHECKS[:-1], start=1):
        code[(code == 0) & masks[reason]] = k
    code[~accepted] = 0  # refused already, with the reason pydantic gave
    # Lateness last: against the stream's watermark, which only the events accepted
    # before each one move (service.events.watermark).
    too_old = watermarks.judge(ts, accepted & (code == 0), partitions,
                               cfg.allowed_lateness_ms)
    code[too_old] = len(_CHECKS)
    bad = np.flatnonzero(code)
    if len(bad):
        at_rest = {k: j for j, k in enumerate(rest.tolist())}
        for k in bad.tolist():
            reason = _CHECKS[code[k] - 1]
            j = at_rest.get(k)
            version = cols["schema_version"][j] if j is not None else SCHEMA_VERSION
            ts_text = (cols["timestamp"][j] if j is not None
                       else scanned.ts_text[k] if scanned is not None else None)
            if reason is RejectReason.CONTROL_CHARACTER:
                assert j is not None  # only the others' rows are searched
                detail = _control_detail(cols, j)
            else:
                reference = (int(watermarks.behind[k]) if reason is RejectReason.TIMESTAMP_TOO_OLD
                             else now_ms)
                detail = _post_detail(reason, version, ts_text, codes[k], value[k], ts[k],
                                      id_len, k, reference, cfg)
            rejections.append(Rejection(k, reason, detail))
    batch = DecodedBatch(
        n_input=n_input,
        index=np.arange(n, dtype=np.int64),
        event_type=codes,
        ts_ms=ts,
        value=value,
        ids=ids,
        maps=maps,
        rejections=rejections,
    )
    if len(bad) or len(rejections):
        batch = batch.take(np.flatnonzero(accepted & (code == 0)))
    return batch


def _post_detail(
    reason: RejectReason,
    version: Any,
    ts_text: Any,
    code: int,
    value: float,
    ts: int,
    id_len: dict[str, npt.NDArray[np.int64]],
    k: int,
    now_ms: int,
    cfg: PreprocessConfig,
) -> str:
    if reason is RejectReason.UNKNOWN_SCHEMA_VERSION:
        return _version_detail(version)
    if reason in (RejectReason.EMPTY_ID, RejectReason.ID_TOO_LONG):
        for name in ("event_id", "user_id", "item_id"):
            length = int(id_len[name][k])
            if reason is RejectReason.EMPTY_ID and length == 0:
                return f"'{name}' is empty; send a non-empty id"
            if reason is RejectReason.ID_TOO_LONG and length > MAX_ID_LENGTH:
                return (f"'{name}' has {length} characters, more than {MAX_ID_LENGTH}; "
                        "send a shorter id (a hash of a long key works)")
    if reason is RejectReason.INVALID_TIMESTAMP:
        return (f"'timestamp' {ts_text!r:.60} is not RFC 3339; send e.g. "
                "'2026-11-27T18:00:00Z' or integer epoch milliseconds")
    if reason is RejectReason.MISSING_FIELD:
        return "'value' is required for a rating; send the rating as a number"
    if reason is RejectReason.ABSURD_NUMBER:
        return (f"'value' {float(value)!r} is beyond ±{cfg.max_abs_value:g}; check "
                "the unit and the field")
    if reason is RejectReason.VALUE_OUT_OF_RANGE:
        if code == _RATING:
            return (f"rating {float(value)!r} is outside [{cfg.rating_min:g}, "
                    f"{cfg.rating_max:g}]; send ratings on that scale")
        return f"'value' {float(value)!r} is negative; prices and dwell times are >= 0"
    if reason is RejectReason.TIMESTAMP_IN_FUTURE:
        return (f"event time {_when(ts)} is {(ts - now_ms) / 1000:.0f}s ahead of the "
                f"consumer's clock (more than {cfg.max_future_skew_ms / 1000:.0f}s); send "
                "UTC times or epoch milliseconds, and check the producer's clock")
    if reason is RejectReason.TIMESTAMP_TOO_OLD:  # now_ms is the watermark here
        return (f"event time {_when(ts)} is {(now_ms - ts) / 1000:.0f}s behind the stream "
                f"(its partition has reached {_when(now_ms)}), more than the allowed "
                f"lateness of {cfg.allowed_lateness_ms / 1000:.0f}s; send events in time "
                "order, or raise preprocess.allowed_lateness_ms")
    return reason.value  # pragma: no cover - every reason above has a detail


def _when(ts: int) -> str:
    try:
        return format_rfc3339(ts)
    except (ValueError, OverflowError):  # pragma: no cover - far outside datetime64
        return f"{ts}ms"


def _version_detail(version: Any) -> str:
    known = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
    return (f"schema_version {version!r} is not supported by this consumer (knows {known}); "
            "upgrade the consumer before producing a new version")


# -- the slow path: why did a message fail type validation? -------------------------------

_TYPE_ERRORS = frozenset({
    "dict_type", "model_type", "string_type", "int_type", "float_type", "bool_type",
    "none_required", "int_from_float", "literal_error", "union_tag_invalid", "is_instance_of",
    "list_type", "model_attributes_type", "enum",
})
_LIMIT_ERRORS = frozenset({
    "greater_than", "greater_than_equal", "less_than", "less_than_equal",
})
# Which reason wins when one message breaks several rules: the order of RejectReason.
_PRIORITY = {r: i for i, r in enumerate(RejectReason)}

_FIX = {
    RejectReason.MISSING_FIELD: "add it",
    RejectReason.WRONG_TYPE: "send the documented JSON type",
    RejectReason.NON_FINITE_NUMBER: "send a finite number or leave the field out",
    RejectReason.ABSURD_NUMBER: "check the unit and the field",
    RejectReason.FIELD_TOO_LONG: "shorten it",
    RejectReason.MAP_TOO_LARGE: "send at most 16 entries per map",
    RejectReason.UNKNOWN_EVENT_TYPE: "send one of " + ", ".join(EVENT_TYPE_NAMES),
}


def _explain(i: int, raw: Any, exc: ValidationError) -> Rejection:
    try:
        return _explain_unsafe(i, raw, exc)
    except Exception as inner:  # pragma: no cover - defensive
        return _internal(i, inner)


def _explain_unsafe(i: int, raw: Any, exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False, include_context=False)
    if errors and errors[0]["type"] == "json_invalid":
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejection(i, RejectReason.NOT_UTF8,
                             f"byte {bad.start} is not valid UTF-8; encode the JSON as UTF-8")
        msg = errors[0]["msg"].removeprefix("Invalid JSON: ")
        return Rejection(i, RejectReason.NOT_JSON,
                         f"not valid JSON ({msg}); send one JSON object per message")
    try:
        obj = pydantic_core.from_json(raw, allow_inf_nan=True)
    except ValueError:  # valid for the adapter but not here: treat like invalid JSON
        return Rejection(i, RejectReason.NOT_JSON, "not valid JSON; send one JSON object")
    if not isinstance(obj, dict):
        return Rejection(i, RejectReason.NOT_OBJECT,
                         f"the JSON document is {_json_kind(obj)}, not an object; send one "
                         "event object per message")
    # The version decides how to read the rest, so it is judged before any other field.
    version = obj.get("schema_version")
    if "schema_version" not in obj:
        return Rejection(i, RejectReason.MISSING_FIELD,
                         "'schema_version' is missing; add \"schema_version\": 1")
    if version.__class__ is not int:
        return Rejection(i, RejectReason.WRONG_TYPE,
                         f"'schema_version' is {_json_kind(version)}; send the integer 1")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        return Rejection(i, RejectReason.UNKNOWN_SCHEMA_VERSION, _version_detail(version))

    groups: dict[tuple[Any, ...], list[Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        path = loc[:2] if loc and loc[0] in _MAP_FIELDS and len(loc) > 1 else loc[:1]
        groups.setdefault(path, []).append(err)
    best: tuple[int, RejectReason, str] | None = None
    for path, errs in groups.items():
        reason, err = _group_reason(path, errs)
        rank = _PRIORITY[reason]
        if best is None or rank < best[0]:
            best = (rank, reason, _slow_detail(reason, path, err))
    if best is None:  # pragma: no cover - a ValidationError always has errors
        return Rejection(i, RejectReason.WRONG_TYPE, "the event does not match the contract")
    return Rejection(i, best[1], best[2])


def _group_reason(path: tuple[Any, ...], errs: list[Any]) -> tuple[RejectReason, Any]:
    """The reason for one field: a specific error beats the type errors of other branches."""
    specific = [e for e in errs if e["type"] not in _TYPE_ERRORS]
    err = specific[0] if specific else errs[0]
    kind = err["type"]
    field_name = path[0] if path else None
    if kind == "missing":
        return RejectReason.MISSING_FIELD, err
    if kind == "finite_number":
        return RejectReason.NON_FINITE_NUMBER, err
    if kind in _LIMIT_ERRORS:
        return RejectReason.ABSURD_NUMBER, err
    if kind == "string_too_long":
        if field_name in _ID_FIELDS:
            return RejectReason.ID_TOO_LONG, err
        return RejectReason.FIELD_TOO_LONG, err
    if kind == "too_long":
        return RejectReason.MAP_TOO_LARGE, err
    if kind == "literal_error" and field_name == "event_type" and isinstance(err["input"], str):
        if first_control(err["input"]) is not None:
            return RejectReason.CONTROL_CHARACTER, err
        return RejectReason.UNKNOWN_EVENT_TYPE, err
    return RejectReason.WRONG_TYPE, err


def _slow_detail(reason: RejectReason, path: tuple[Any, ...], err: Any) -> str:
    where = ".".join(str(p) for p in path) or "the event"
    if reason is RejectReason.MISSING_FIELD:
        return f"'{where}' is missing; add it"
    if reason is RejectReason.UNKNOWN_EVENT_TYPE:
        return f"event_type {err['input']!r:.40} is unknown; {_FIX[reason]}"
    if reason is RejectReason.CONTROL_CHARACTER:  # the event type: ids are judged later
        return _control_message(f"'{where}'", err["input"])
    if reason is RejectReason.ID_TOO_LONG:
        return (f"'{where}' is longer than {MAX_ID_LENGTH} characters; send a shorter id "
                "(a hash of a long key works)")
    got = _json_kind(err.get("input"))
    if reason is RejectReason.WRONG_TYPE and len(path) == 2:
        return (f"'{where}' is {got}; map values must be a string, a number, a boolean or "
                "null (no nested objects or arrays)")
    return f"'{where}': {err['msg'].lower()} (got {got}); {_FIX.get(reason, 'fix the field')}"


def _json_kind(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int):
        return "an integer"
    if isinstance(obj, float):
        return "a non-finite number" if not math.isfinite(obj) else "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, dict):
        return "an object"
    return type(obj).__name__
