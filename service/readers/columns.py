"""Any CSV (with a header), JSON Lines or Parquet file, read through a column mapping.

A :class:`ColumnMapping` says which column holds what. Written on the command line as
``key=column`` pairs separated by commas (lists joined with ``+``)::

    user=userId,item=movieId,timestamp=ts,value=rating
    user=uid,item=ad,timestamp=time,label=clicked,context=device+page,numeric=price
    user=visitorid,item=itemid,timestamp=timestamp,event=event

Keys:

``user``, ``item`` (required)
    The id columns.
``timestamp``
    Event time: epoch seconds or milliseconds (told apart by size, or ``time_unit=s|ms``),
    or an ISO 8601 string with a zone (``time_unit=iso``). Without it, rows keep file order
    and get times 1 s apart (``synthetic_time``).
``value`` | ``label`` | ``event`` (exactly one)
    The target, which decides the kind: a rating (``ratings``), a 0/1 click label
    (``clicks``: ``1``/``0``, ``true``/``false``), or an event type (``implicit``).
``events``
    How ``event`` values map to freshrec's types, ``name:type`` pairs joined with ``;``
    (default: :data:`DEFAULT_EVENTS`, which knows Retailrocket's
    ``view``/``addtocart``/``transaction``).
``context``, ``user_features``, ``item_features``
    Side-feature columns for each map (at most 16 each, the event contract's limit).
``numeric``
    Feature columns that are numbers; all others are categorical strings (so that ids
    such as ``"0042"`` are not read as numbers).

Example
-------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "clicks.csv")
>>> _ = open(path, "w").write("uid,ad,time,clicked,device,price\\n"
...                           "u1,a1,1700000001,1,ios,2.5\\nu2,a1,1700000000,0,,3\\n")
>>> m = ColumnMapping.parse("user=uid,item=ad,timestamp=time,label=clicked,"
...                         "context=device+price,numeric=price")
>>> t = read_table(path, m).time_ordered()
>>> t.kind, t.user.tolist(), t.label.tolist(), t.ts_ms.tolist()
('clicks', ['u2', 'u1'], [0.0, 1.0], [1700000000000, 1700000001000])
>>> t.features["context"]["device"].tolist(), t.features["context"]["price"].tolist()
([None, 'ios'], [3.0, 2.5])
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from service.readers.interactions import IMPLICIT_TYPES, MAPS, Interactions, Kind

Format = Literal["csv", "jsonl", "parquet"]
TimeUnit = Literal["auto", "s", "ms", "iso"]

DEFAULT_EVENTS: dict[str, str] = {
    "view": "click", "click": "click", "addtocart": "add_to_cart",
    "add_to_cart": "add_to_cart", "cart": "add_to_cart", "transaction": "purchase",
    "purchase": "purchase", "buy": "purchase",
}
SYNTHETIC_STEP_MS = 1000
SYNTHETIC_START_MS = 1_600_000_000_000
# Epoch seconds stay below this until the year 5138; epoch milliseconds pass it in 1973.
_SECONDS_BELOW = 100_000_000_000
_KEYS = ("user", "item", "timestamp", "value", "label", "event", "events", *MAPS, "numeric",
         "time_unit")


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which column of a generic file holds what (see the module docstring).

    Parameters
    ----------
    user, item
        Id columns.
    timestamp
        Event-time column, or None for file order.
    value, label, event
        The target column; exactly one is set.
    features
        Map name → its columns.
    numeric
        Feature columns read as numbers.
    events
        ``event`` value → freshrec event type.
    time_unit
        ``auto``, ``s``, ``ms`` or ``iso``.

    >>> ColumnMapping.parse("user=u,item=i,value=r").kind
    'ratings'
    """

    user: str
    item: str
    timestamp: str | None = None
    value: str | None = None
    label: str | None = None
    event: str | None = None
    features: dict[str, tuple[str, ...]] = field(default_factory=dict)
    numeric: frozenset[str] = frozenset()
    events: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EVENTS))
    time_unit: TimeUnit = "auto"

    def __post_init__(self) -> None:
        targets = [k for k in ("value", "label", "event") if getattr(self, k)]
        if len(targets) != 1:
            raise ValueError(
                "the column mapping needs exactly one target: value=COLUMN (ratings), "
                f"label=COLUMN (0/1 clicks) or event=COLUMN (implicit); got {targets or 'none'}")
        bad = sorted(set(self.events.values()) - set(IMPLICIT_TYPES))
        if bad:
            raise ValueError(f"events may map to {IMPLICIT_TYPES}, not {bad}")
        if self.time_unit not in ("auto", "s", "ms", "iso"):
            raise ValueError(f"time_unit must be auto, s, ms or iso, not {self.time_unit!r}")
        unknown = sorted(self.numeric - {c for cols in self.features.values() for c in cols})
        if unknown:
            raise ValueError(f"numeric names {unknown}, which are not feature columns: "
                             "list them in context=, user_features= or item_features= too")

    @property
    def kind(self) -> Kind:
        return "ratings" if self.value else "clicks" if self.label else "implicit"

    @classmethod
    def parse(cls, text: str) -> ColumnMapping:
        """``key=column,...`` as on the command line (see the module docstring)."""
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, column = part.partition("=")
            key = key.strip()
            if not sep or not column.strip():
                raise ValueError(f"{part!r} in --columns is not key=column")
            if key not in _KEYS:
                raise ValueError(f"unknown --columns key {key!r}; keys are {', '.join(_KEYS)}")
            pairs[key] = column.strip()
        for required in ("user", "item"):
            if required not in pairs:
                raise ValueError(f"--columns needs {required}=COLUMN")
        events = dict(DEFAULT_EVENTS)
        if "events" in pairs:
            events = {}
            for item in pairs["events"].split(";"):
                name, sep, kind = item.partition(":")
                if not sep:
                    raise ValueError(f"events entry {item!r} is not name:type")
                events[name.strip()] = kind.strip()

        def split(key: str) -> tuple[str, ...]:
            return tuple(c for c in pairs.get(key, "").split("+") if c)

        return cls(
            user=pairs["user"], item=pairs["item"], timestamp=pairs.get("timestamp"),
            value=pairs.get("value"), label=pairs.get("label"), event=pairs.get("event"),
            features={m: split(m) for m in MAPS if split(m)},
            numeric=frozenset(split("numeric")), events=events,
            time_unit=pairs.get("time_unit", "auto"),  # type: ignore[arg-type]
        )

    def columns(self) -> list[str]:
        """Every column the mapping reads."""
        named = [self.user, self.item, self.timestamp, self.value, self.label, self.event]
        return [c for c in named if c] + [c for cols in self.features.values() for c in cols]


def _records(path: Path, fmt: Format, limit: int | None, wanted: list[str]
             ) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt == "parquet":
        yield from _parquet_records(path, limit, wanted)
        return
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        if fmt == "csv":
            for n, row in enumerate(csv.DictReader(fh)):
                if limit is not None and n >= limit:
                    return
                yield n + 2, row
            return
        n = 0
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if limit is not None and n >= limit:
                return
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not a JSON object ({exc})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: each line must be one JSON object")
            n += 1
            yield line_no, record


def _parquet_records(path: Path, limit: int | None, wanted: list[str]
                     ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a Parquet file (only the ``wanted`` columns are read), numbered from 1.

    Parquet timestamp columns come as epoch milliseconds (a timestamp without a zone is
    taken as UTC, Parquet's convention for instants), so ``time_unit`` stays ``auto``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a Parquet file ({exc})") from exc
    names = file.schema_arrow.names
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"{path}: no column {missing}; the file has {names[:20]}: fix "
                         "--columns")
    n = 0
    for batch in file.iter_batches(batch_size=65_536, columns=list(dict.fromkeys(wanted))):
        columns: dict[str, list[Any]] = {}
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_timestamp(column.type):
                column = pc.cast(pc.cast(column, pa.timestamp("ms", tz=column.type.tz)),
                                 pa.int64())
            columns[name] = column.to_pylist()
        for k in range(batch.num_rows):
            if limit is not None and n >= limit:
                return
            n += 1
            yield n, {name: values[k] for name, values in columns.items()}


def _number(v: Any) -> float:
    if v is None or v == "":
        return math.nan
    return float(v)


def _label(v: Any) -> float:
    text = str(v).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return 1.0
    if text in ("0", "0.0", "false", "no", "-1"):
        return 0.0
    raise ValueError(f"click label {v!r} is not 0/1 or true/false")


def _timestamps(raw: list[Any], unit: TimeUnit) -> np.ndarray:
    if unit == "auto":
        numeric = all(isinstance(v, int | float) or str(v).lstrip("-").replace(".", "", 1)
                      .isdigit() for v in raw)
        if not numeric:
            unit = "iso"
        else:
            unit = "ms" if max(abs(float(v)) for v in raw) >= _SECONDS_BELOW else "s"
    if unit == "iso":
        out = []
        for v in raw:
            stamp = dt.datetime.fromisoformat(str(v).strip())
            if stamp.tzinfo is None:
                raise ValueError(f"timestamp {v!r} has no zone; add Z or an offset")
            out.append(int(stamp.timestamp() * 1000))
        return np.array(out, dtype=np.int64)
    scale = 1000.0 if unit == "s" else 1.0
    return np.array([round(float(v) * scale) for v in raw], dtype=np.int64)


def read_table(path: str | Path, mapping: ColumnMapping, fmt: Format | None = None,
               limit: int | None = None) -> Interactions:
    """Read up to ``limit`` rows of a CSV or JSONL file through ``mapping``.

    ``fmt`` is told from the suffix (``.jsonl``/``.ndjson``/``.json``: JSON Lines,
    ``.parquet``/``.pq``: Parquet, else CSV) when not given. For Parquet, ``line_no`` in
    messages is the row number.
    """
    path = Path(path)
    if fmt is None:
        suffix = path.suffix.lower()
        fmt = ("jsonl" if suffix in (".jsonl", ".ndjson", ".json")
               else "parquet" if suffix in (".parquet", ".pq") else "csv")
    wanted = mapping.columns()
    cols: dict[str, list[Any]] = {c: [] for c in wanted}
    for line_no, record in _records(path, fmt, limit, wanted):
        missing = [c for c in wanted if c not in record]
        if missing:
            raise ValueError(f"{path}:{line_no}: no column {missing}; the file has "
                             f"{sorted(record)[:20]}: fix --columns")
        for c in wanted:
            cols[c].append(record[c])
    n = len(cols[mapping.user])
    if n == 0:
        raise ValueError(f"{path} has no rows")
    for c in (mapping.user, mapping.item):
        empty = [k for k, v in enumerate(cols[c]) if v is None or str(v) == ""]
        if empty:
            raise ValueError(f"{path}: column {c!r} is empty in row {empty[0] + 1}; every row "
                             "needs a user and an item id")
    where = f"{path}: column "
    try:
        if mapping.timestamp:
            ts = _timestamps(cols[mapping.timestamp], mapping.time_unit)
        else:
            ts = SYNTHETIC_START_MS + SYNTHETIC_STEP_MS * np.arange(n, dtype=np.int64)
        value = ([_number(v) for v in cols[mapping.value]] if mapping.value else None)
        label = [_label(v) for v in cols[mapping.label]] if mapping.label else None
        features: dict[str, dict[str, list[Any]]] = {}
        for m, names in mapping.features.items():
            features[m] = {
                c: ([_number(v) for v in cols[c]] if c in mapping.numeric
                    else [None if v is None or v == "" else str(v) for v in cols[c]])
                for c in names}
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; check the columns named in --columns") from exc
    event_type = None
    if mapping.event:
        raw = [str(v) for v in cols[mapping.event]]
        unknown = sorted(set(raw) - set(mapping.events))
        if unknown:
            raise ValueError(
                f"{where}{mapping.event!r} has event types {unknown[:5]} that --columns does "
                "not map; add events=NAME:TYPE;... with TYPE among "
                f"{', '.join(IMPLICIT_TYPES)}")
        event_type = [mapping.events[v] for v in raw]
    if value is not None and not all(math.isfinite(v) for v in value):
        raise ValueError(f"{where}{mapping.value!r} must hold a number in every row")
    return Interactions.build(
        mapping.kind, user=cols[mapping.user], item=cols[mapping.item], ts_ms=ts,
        value=value, label=label, event_type=event_type, features=features,
        name=path.name, synthetic_time=mapping.timestamp is None)
