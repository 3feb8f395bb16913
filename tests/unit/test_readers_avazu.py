"""The Avazu reader on small files written here."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from service.readers import read_avazu
from service.readers.avazu import ANONYMOUS_DEVICE, COLUMNS, HOUR_MS
from service.readers.interactions import MAX_MAP_ENTRIES


def avazu_row(k: int, click: int, hour: str, device: str = "dev1", ip: str = "ip1",
              model: str = "m1", c14: str = "15706") -> list[str]:
    values = {"id": str(k), "click": str(click), "hour": hour, "C1": "1005",
              "banner_pos": "0", "site_id": f"site{k % 3}", "site_domain": "sd",
              "site_category": "sc", "app_id": "app", "app_domain": "ad",
              "app_category": "ac", "device_id": device, "device_ip": ip,
              "device_model": model, "device_type": "1", "device_conn_type": "0",
              "C14": c14, "C15": "320", "C16": "50", "C17": "1722", "C18": "0",
              "C19": "35", "C20": "-1", "C21": "79"}
    return [values[c] for c in COLUMNS]


def write(path: Path, rows: list[list[str]], header: tuple[str, ...] = COLUMNS) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_ids_labels_and_features(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", [
        avazu_row(0, 0, "14102100", device=ANONYMOUS_DEVICE, ip="ip7", model="m3"),
        avazu_row(1, 1, "14102100", device="d9", c14="20001"),
    ])
    t = read_avazu(path)
    assert t.kind == "clicks" and t.task == "binary"
    # The placeholder device falls back to ip/model; a real device id is the user.
    assert t.user.tolist() == ["ip7/m3", "d9"]
    assert t.item.tolist() == ["15706", "20001"]
    assert t.label.tolist() == [0.0, 1.0]
    ctx, user, item = (t.features[m] for m in ("context", "user_features", "item_features"))
    assert ctx["site_id"].tolist() == ["site0", "site1"]
    assert ctx["hour_of_day"].tolist() == ["0", "0"]
    assert user["device_ip"].tolist() == ["ip7", "ip1"]
    assert item["C21"].tolist() == ["79", "79"]
    # Every Avazu column but id, click, hour and the item is a feature, within the maps'
    # limit.
    n_features = sum(len(cols) for cols in t.features.values())
    assert n_features == len(COLUMNS) - 4 + 1  # + hour_of_day
    assert all(len(cols) <= MAX_MAP_ENTRIES for cols in t.features.values())


def test_rows_of_an_hour_spread_over_it_in_file_order(tmp_path: Path) -> None:
    rows = [avazu_row(k, 0, "14102100") for k in range(4)]
    rows += [avazu_row(4, 1, "14102101"), avazu_row(5, 0, "14102023")]
    t = read_avazu(write(tmp_path / "train.csv", rows))
    start = 1413849600000  # 2014-10-21 00:00 UTC
    assert t.ts_ms[:4].tolist() == [start + k * HOUR_MS // 4 for k in range(4)]
    assert t.ts_ms[4] == start + HOUR_MS
    assert t.ts_ms[5] == start - HOUR_MS  # the file's last row is an hour earlier
    ordered = t.time_ordered()
    assert ordered.features["context"]["hour_of_day"].tolist()[0] == "23"
    assert np.all(np.diff(ordered.ts_ms) > 0)


def test_limit_and_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", [avazu_row(k, k % 2, "14102100") for k in range(5)])
    assert len(read_avazu(path, limit=3)) == 3
    # Avazu's test.csv has no click column: nothing to replay.
    no_click = COLUMNS.index("click")
    row = avazu_row(0, 0, "14102100")
    test_file = write(tmp_path / "test.csv", [row[:no_click] + row[no_click + 1:]],
                      header=COLUMNS[:no_click] + COLUMNS[no_click + 1:])
    with pytest.raises(ValueError, match="lacks \\['click'\\]"):
        read_avazu(test_file)
    bad_hour = write(tmp_path / "bad.csv", [avazu_row(0, 0, "2014-10-21")])
    with pytest.raises(ValueError, match="YYMMDDHH"):
        read_avazu(bad_hour)
