"""Parquet files through a column mapping (``--data parquet:PATH --columns ...``).

Each test writes its own small file with pyarrow; no data is committed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.cli.backfill import read_history
from service.readers import ColumnMapping, read_table
from service.readers.source import DataSpec

RATINGS = "user=uid,item=iid,timestamp=ts,value=rating,context=device"


def _ratings(path: Path, ts: pa.Array) -> Path:
    table = pa.table({"uid": ["u1", "u2", "u1"], "iid": pa.array([10, 11, 11], pa.int64()),
                      "ts": ts, "rating": [4.0, 3.0, 5.0], "device": ["ios", None, "web"],
                      "unused": [1, 2, 3]})
    pq.write_table(table, path, row_group_size=2)  # two row groups: batches are joined
    return path


def test_a_parquet_file_is_read_through_the_mapping_in_time_order(tmp_path: Path) -> None:
    path = _ratings(tmp_path / "r.parquet",
                    pa.array([1_700_000_300, 1_700_000_100, 1_700_000_200], pa.int64()))
    table = DataSpec.parse(f"parquet:{path}").read(ColumnMapping.parse(RATINGS))
    assert table.kind == "ratings"
    assert table.user.tolist() == ["u2", "u1", "u1"]
    assert table.item.tolist() == ["11", "11", "10"]  # ids are strings, as in CSV
    assert table.value.tolist() == [3.0, 5.0, 4.0]
    assert table.ts_ms.tolist() == [1_700_000_100_000, 1_700_000_200_000, 1_700_000_300_000]
    assert table.features["context"]["device"].tolist() == [None, "web", "ios"]
    assert len(read_table(path, ColumnMapping.parse(RATINGS), limit=2)) == 2


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris"])
def test_parquet_timestamps_are_instants(tmp_path: Path, tz: str | None) -> None:
    utc = [dt.datetime(2024, 5, 1, 12, 0, s, tzinfo=dt.UTC) for s in (3, 1, 2)]
    values = [t.replace(tzinfo=None) for t in utc] if tz is None else utc
    path = _ratings(tmp_path / "t.parquet", pa.array(values, pa.timestamp("us", tz=tz)))
    events = [orjson.loads(v) for v in read_history(f"parquet:{path}", RATINGS, None)]
    want = int(utc[1].timestamp() * 1000)
    # Without a zone a Parquet timestamp is UTC; with one it is that instant anyway.
    assert [e["timestamp"] for e in events] == [want, want + 1000, want + 2000]
    assert [(e["user_id"], e["value"]) for e in events] == [("u2", 3.0), ("u1", 5.0),
                                                             ("u1", 4.0)]


def test_parquet_errors_say_what_to_fix(tmp_path: Path) -> None:
    path = _ratings(tmp_path / "r.parquet", pa.array([1, 2, 3], pa.int64()))
    with pytest.raises(ValueError, match=r"no column \['stamp'\]"):
        read_table(path, ColumnMapping.parse("user=uid,item=iid,timestamp=stamp,value=rating"))
    with pytest.raises(ValueError, match="needs --columns"):
        DataSpec.parse(f"parquet:{path}").read(None)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a Parquet file"):
        read_table(broken, ColumnMapping.parse(RATINGS))
