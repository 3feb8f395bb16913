"""Readers of MovieLens-style and Criteo-style files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.readers import read_criteo, read_ratings
from service.readers.criteo import N_CAT, N_INT

ROWS = [(196, 242, 3.0, 881250949), (186, 302, 3.5, 891717742), (22, 377, 1.0, 878887116),
        (196, 377, 5.0, 881251000)]


@pytest.mark.parametrize(("name", "sep", "header"), [
    ("u.data", "\t", ""), ("ratings.dat", "::", ""),
    ("ratings.csv", ",", "userId,movieId,rating,timestamp\n"),
])
def test_ratings_formats(tmp_path: Path, name: str, sep: str, header: str) -> None:
    path = tmp_path / name
    path.write_text(header + "".join(sep.join(str(v) for v in r) + "\n" for r in ROWS))
    t = read_ratings(path)
    assert len(t) == 4 and t.n_users == 4 and t.n_items == 4
    # Time order, and rows map back to the original ids.
    assert np.all(np.diff(t.ts_ms) >= 0)
    assert t.ts_ms[0] == 878887116000
    got = sorted(zip(t.user_ids[t.user].tolist(), t.item_ids[t.item].tolist(),
                     t.rating.tolist(), strict=True))
    assert got == sorted((u, i, r) for u, i, r, _ in ROWS)
    assert t.user.min() == 1  # row 0 stays reserved


def test_ratings_limit_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("".join("\t".join(str(v) for v in r) + "\n" for r in ROWS))
    assert len(read_ratings(path, limit=2)) == 2
    bad = tmp_path / "bad.data"
    bad.write_text("1\t2\tthree\t4\n")
    with pytest.raises(ValueError, match="numeric"):
        read_ratings(bad)
    weird = tmp_path / "weird.txt"
    weird.write_text("1 2 3 4\n")
    with pytest.raises(ValueError, match="separator"):
        read_ratings(weird)


def criteo_line(label: int, ints: list[str], cats: list[str]) -> str:
    return "\t".join([str(label), *ints, *cats]) + "\n"


def test_criteo_features(tmp_path: Path) -> None:
    ints = ["1", "", "1000", *["0"] * (N_INT - 3)]
    cats = ["68fd1e64", "", *["80e26c9b"] * (N_CAT - 2)]
    path = tmp_path / "train.txt"
    path.write_text(criteo_line(1, ints, cats) + criteo_line(0, ints, cats)
                    + criteo_line(0, ["5"] * N_INT, ["a"] * N_CAT))
    t = read_criteo(path, feature_bits=18)
    assert t.label.tolist() == [1.0, 0.0, 0.0]
    assert np.diff(t.feat_indptr).tolist() == [37, 37, 39]
    assert ((t.feat_idx >= 0) & (t.feat_idx < 2**18)).all()
    first = t.feat_idx[t.feat_indptr[0] : t.feat_indptr[1]]
    second = t.feat_idx[t.feat_indptr[1] : t.feat_indptr[2]]
    assert np.array_equal(first, second)  # same values hash to the same features
    assert len(set(first.tolist())) >= 30  # columns hash apart even with equal values
    assert len(read_criteo(path, limit=1)) == 1


def test_criteo_rejects_wrong_width(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match="40 tab-separated"):
        read_criteo(path)
