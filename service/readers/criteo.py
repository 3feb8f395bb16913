"""Criteo display-advertising TSV: ``label``, 13 integer and 26 categorical columns.

Each line becomes up to 39 hashed features in CSR layout (the layout of
:class:`~service.examples.ExampleBatch`): integer column ``j`` with value ``v`` becomes
the token ``(j, floor(ln(v)^2))`` for ``v > 2`` and ``(j, v)`` otherwise (the log-square
bucketing of the competition's winning solution), categorical column ``j`` its hex
value; empty cells produce no feature. Tokens are hashed with their column into
``2 ** feature_bits`` rows with :func:`service.learners.hashing.hash_array`.

Work is column-wise: each distinct string is converted once (``np.unique``), so the
per-line Python cost is a ``split``.

Example
-------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "train.txt")
>>> line = "\\t".join(["1", "5", ""] + ["0"] * 11 + ["68fd1e64", ""] + ["a"] * 24)
>>> _ = open(path, "w").write(line + "\\n" + line.replace("1", "0", 1) + "\\n")
>>> t = read_criteo(path, feature_bits=16)
>>> t.label.tolist(), np.diff(t.feat_indptr).tolist()   # 2 empty cells per line
([1.0, 0.0], [37, 37])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.learners.hashing import hash_array
from service.readers.interactions import Interactions

IntArray = npt.NDArray[np.int64]
N_INT = 13
N_CAT = 26
FIELD_OFFSET = 16  # keeps Criteo columns clear of the learners' bias/user/item fields
# Criteo has no timestamps: rows are given event times this far apart, in file order.
CRITEO_STEP_MS = 1000
CRITEO_START_MS = 1_400_000_000_000  # 2014-05-13, around when the data set was logged


@dataclass(slots=True)
class ClickTable:
    """Labels and hashed sparse features of a Criteo-style file."""

    label: npt.NDArray[np.float32]
    feat_indptr: IntArray
    feat_idx: IntArray
    feat_val: npt.NDArray[np.float32]
    feature_bits: int

    def __len__(self) -> int:
        return len(self.label)


def _int_tokens(col: list[str]) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    present = np.array([c != "" for c in col], dtype=np.bool_)
    v = np.array([int(c) if c else 0 for c in col], dtype=np.int64)
    big = v > 2
    token = np.where(big, np.floor(np.log(np.maximum(v, 1)) ** 2).astype(np.int64) + 1000, v)
    return token, present


def _cat_tokens(col: list[str]) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    uniq, inverse = np.unique(np.array(col), return_inverse=True)
    codes = np.array([int(u, 16) if u else -1 for u in uniq.tolist()], dtype=np.int64)
    token = codes[inverse]
    return token, token >= 0


def _read_lines(path: str | Path, limit: int | None) -> list[list[str]]:
    rows: list[list[str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                break
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 1 + N_INT + N_CAT:
                raise ValueError(
                    f"{path}:{n + 1}: expected {1 + N_INT + N_CAT} tab-separated columns "
                    f"(label, 13 integers, 26 categorical), got {len(parts)}"
                )
            rows.append(parts)
    if not rows:
        raise ValueError(f"{path} has no lines")
    return rows


def read_criteo(path: str | Path, feature_bits: int = 20, limit: int | None = None
                ) -> ClickTable:
    """Read up to ``limit`` lines of a Criteo-style TSV into hashed features."""
    rows = _read_lines(path, limit)
    cols = list(zip(*rows, strict=True))
    try:
        label = np.array([float(c) for c in cols[0]], dtype=np.float32)
        parsed = [_int_tokens(list(cols[1 + j])) for j in range(N_INT)]
        parsed += [_cat_tokens(list(cols[1 + N_INT + j])) for j in range(N_CAT)]
    except ValueError as exc:
        raise ValueError(
            f"{path}: integer columns must hold integers and categorical columns hex "
            f"strings ({exc})"
        ) from exc
    n = len(rows)
    idx = np.empty((n, len(parsed)), dtype=np.int64)
    present = np.empty((n, len(parsed)), dtype=np.bool_)
    for j, (token, mask) in enumerate(parsed):
        idx[:, j] = hash_array(FIELD_OFFSET + j, token, feature_bits)
        present[:, j] = mask
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    feat_idx = idx[present]  # row-major: each line's features stay together, in order
    return ClickTable(label=label, feat_indptr=indptr, feat_idx=feat_idx,
                      feat_val=np.ones(len(feat_idx), dtype=np.float32),
                      feature_bits=feature_bits)


def read_criteo_rows(path: str | Path, limit: int | None = None,
                     step_ms: int = CRITEO_STEP_MS) -> Interactions:
    """A Criteo TSV as click :class:`~service.readers.interactions.Interactions`, for
    replaying through the pipeline.

    Criteo publishes neither timestamps nor user or item ids, so:

    * rows keep their file order (the order they were logged in) and get event times
      ``step_ms`` apart (``synthetic_time`` is set);
    * each row is its own user (``"r<line>"``), so an impression and its click pair up and
      no two rows merge as repeated impressions; the item is one constant, ``"criteo"``;
    * integer column ``I<j>`` is sent as the token of its log-square bucket
      (``"b<floor(ln(v)^2)>"`` for ``v > 2``, else ``"v<v>"``: the encoding of the
      competition's winning solution, the same tokens as :func:`read_criteo` hashes), and
      categorical column ``C<j>`` as its hex string; an empty cell is a missing feature.

    The event contract allows 16 entries per map, so the 39 columns are spread over the
    three maps: ``I1``-``I13`` in ``user_features``, ``C1``-``C16`` in ``context``,
    ``C17``-``C26`` in ``item_features``. The maps only namespace the hashes.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "train.txt")
    >>> line = "\\t".join(["1", "5", ""] + ["0"] * 11 + ["68fd1e64", ""] + ["a"] * 24)
    >>> _ = open(path, "w").write(line + "\\n" + line.replace("1", "0", 1) + "\\n")
    >>> t = read_criteo_rows(path)
    >>> t.label.tolist(), t.features["user_features"]["I1"].tolist(), t.ts_ms[1] - t.ts_ms[0]
    ([1.0, 0.0], ['b2', 'b2'], np.int64(1000))
    >>> t.features["context"]["C2"].tolist()  # empty cells are missing
    [None, None]
    """
    rows = _read_lines(path, limit)
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    try:
        label = np.array([float(c) for c in cols[0]], dtype=np.float32)
        ints = [_int_strings(list(cols[1 + j])) for j in range(N_INT)]
    except ValueError as exc:
        raise ValueError(f"{path}: the label and integer columns must hold integers ({exc})"
                         ) from exc
    cats = [[c or None for c in cols[1 + N_INT + j]] for j in range(N_CAT)]
    features = {
        "user_features": {f"I{j + 1}": ints[j] for j in range(N_INT)},
        "context": {f"C{j + 1}": cats[j] for j in range(16)},
        "item_features": {f"C{j + 1}": cats[j] for j in range(16, N_CAT)},
    }
    return Interactions.build(
        "clicks", user=[f"r{k}" for k in range(n)], item=["criteo"] * n,
        ts_ms=CRITEO_START_MS + step_ms * np.arange(n, dtype=np.int64), label=label,
        features=features, name=Path(path).name, synthetic_time=True)


def _int_strings(col: list[str]) -> list[str | None]:
    token, present = _int_tokens(col)
    return [(f"b{t - 1000}" if t >= 1000 else f"v{t}") if p else None
            for t, p in zip(token.tolist(), present.tolist(), strict=True)]
