"""Avazu click-through CSV: ``id, click, hour, C1, banner_pos, site_*, app_*, device_*,
C14``-``C21``, with a header.

Each line is one impression with its 0/1 ``click`` label; ``hour`` is ``YYMMDDHH`` (UTC).
Avazu names neither the user nor the ad, so, as most work on the data set does:

* the **user** is ``device_id``, or ``device_ip + "/" + device_model`` when ``device_id``
  is the placeholder most rows share (``a99f214a``, an unknown device);
* the **item** is ``C14``, the column taken for the ad (creative) id.

Timestamps have hour resolution, so rows of one hour are spread evenly over that hour in
file order (Avazu's files are in time order): the replay then needs no ties broken, and
the attribution window of a click sees neighbouring rows as it would live.

Features: ``C1``, ``banner_pos``, the ``site_*`` and ``app_*`` columns, ``device_type``,
``device_conn_type`` and the hour of day in ``context``; ``device_id``, ``device_ip`` and
``device_model`` in ``user_features``; ``C15``-``C21`` in ``item_features``. Every value
is categorical (a string).

Example
-------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
>>> head = ",".join(COLUMNS)
>>> row = ("1,{click},14102100,1005,0,s1,sd,sc,a1,ad,ac,{dev},ip9,m1,1,0,"
...        "15706,320,50,1722,0,35,-1,79")
>>> _ = open(path, "w").write("\\n".join([head, row.format(click=0, dev="a99f214a"),
...                                       row.format(click=1, dev="d1")]) + "\\n")
>>> t = read_avazu(path)
>>> t.user.tolist(), t.item.tolist(), t.label.tolist(), (t.ts_ms[1] - t.ts_ms[0]) // 1000
(['ip9/m1', 'd1'], ['15706', '15706'], [0.0, 1.0], np.int64(1800))
>>> t.features["context"]["hour_of_day"].tolist()
['0', '0']
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

from service.readers.interactions import Interactions

COLUMNS = ("id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain",
           "site_category", "app_id", "app_domain", "app_category", "device_id", "device_ip",
           "device_model", "device_type", "device_conn_type", "C14", "C15", "C16", "C17",
           "C18", "C19", "C20", "C21")
CONTEXT = ("C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
           "app_domain", "app_category", "device_type", "device_conn_type")
USER_FEATURES = ("device_id", "device_ip", "device_model")
ITEM_FEATURES = ("C15", "C16", "C17", "C18", "C19", "C20", "C21")
ANONYMOUS_DEVICE = "a99f214a"
HOUR_MS = 3_600_000


def _hour_ms(hour: str) -> int:
    stamp = dt.datetime.strptime(hour, "%y%m%d%H").replace(tzinfo=dt.UTC)
    return int(stamp.timestamp()) * 1000


def read_avazu(path: str | Path, limit: int | None = None) -> Interactions:
    """Read up to ``limit`` impressions of an Avazu ``train.csv`` (see the module doc)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: the header lacks {missing}; an Avazu train.csv starts with "
                f"{','.join(COLUMNS[:4])},... (the test file has no 'click' column and "
                "cannot be replayed)")
        at = {c: header.index(c) for c in COLUMNS}
        rows = []
        for n, row in enumerate(reader):
            if limit is not None and n >= limit:
                break
            if len(row) != len(header):
                raise ValueError(f"{path}:{n + 2}: {len(row)} columns, the header has "
                                 f"{len(header)}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no rows")
    cols = {c: [r[at[c]] for r in rows] for c in COLUMNS}
    try:
        label = np.array([float(v) for v in cols["click"]], dtype=np.float32)
        hour_of = {h: _hour_ms(h) for h in set(cols["hour"])}
    except ValueError as exc:
        raise ValueError(f"{path}: 'click' must be 0/1 and 'hour' YYMMDDHH ({exc})") from exc
    hours = np.array([hour_of[h] for h in cols["hour"]], dtype=np.int64)
    ts = _spread_within_hours(hours)
    user = [dev if dev != ANONYMOUS_DEVICE else f"{ip}/{model}" for dev, ip, model in
            zip(cols["device_id"], cols["device_ip"], cols["device_model"], strict=True)]
    hour_of_day = [h[-2:].lstrip("0") or "0" for h in cols["hour"]]
    features = {
        "context": {**{c: cols[c] for c in CONTEXT}, "hour_of_day": hour_of_day},
        "user_features": {c: cols[c] for c in USER_FEATURES},
        "item_features": {c: cols[c] for c in ITEM_FEATURES},
    }
    return Interactions.build("clicks", user=user, item=cols["C14"], ts_ms=ts, label=label,
                              features=features, name=Path(path).name)


def _spread_within_hours(hours: np.ndarray) -> np.ndarray:
    """Rows of one hour evenly over it, in file order: ``hour + HOUR_MS * k // count``."""
    order = np.argsort(hours, kind="stable")
    sorted_hours = hours[order]
    starts = np.flatnonzero(np.r_[True, sorted_hours[1:] != sorted_hours[:-1]])
    counts = np.diff(np.r_[starts, len(hours)])
    rank = np.arange(len(hours)) - np.repeat(starts, counts)
    offset = HOUR_MS * rank // np.repeat(counts, counts)
    out = np.empty_like(hours)
    out[order] = sorted_hours + offset
    return out
