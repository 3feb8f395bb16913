"""MovieLens-style rating files: ``user item rating timestamp`` per line.

The separator is detected from the first line (``::``, tab or comma) unless given; a
header line (``userId,movieId,...``) is skipped. Ids are encoded to dense rows starting
at 1 (row 0 stays the learners' "unknown" row), and events are sorted by timestamp
(stably) so a replay sees them in the order they happened.

Example
-------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "u.data")
>>> _ = open(path, "w").write("196\\t242\\t3\\t881250949\\n186\\t302\\t3\\t891717742\\n"
...                           "196\\t302\\t4\\t881250000\\n")
>>> t = read_ratings(path)
>>> t.user.tolist(), t.item.tolist(), t.rating.tolist(), t.n_users, t.n_items
([2, 2, 1], [2, 1, 2], [4.0, 3.0, 3.0], 3, 3)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.readers.interactions import Interactions

IntArray = npt.NDArray[np.int64]


@dataclass(slots=True)
class RatingsTable:
    """Ratings in time order, with ids encoded to rows ``1..n - 1``.

    ``user_ids[row]``/``item_ids[row]`` give back the original id of a row (row 0: -1).
    """

    user: IntArray
    item: IntArray
    rating: npt.NDArray[np.float32]
    ts_ms: IntArray
    user_ids: IntArray
    item_ids: IntArray

    @property
    def n_users(self) -> int:
        """Rows a user table needs (including row 0)."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)


def _detect(first_line: str) -> str:
    if "::" in first_line:
        return "::"
    if "\t" in first_line:
        return "\t"
    if "," in first_line:
        return ","
    raise ValueError(
        f"cannot tell the separator of {first_line!r}; expected '::', tab or comma "
        "(pass sep= for other formats)"
    )


def _encode(ids: IntArray) -> tuple[IntArray, IntArray]:
    uniq, inverse = np.unique(ids, return_inverse=True)
    return (inverse.astype(np.int64) + 1,
            np.concatenate([np.array([-1], dtype=np.int64), uniq.astype(np.int64)]))


def read_ratings(path: str | Path, sep: str | None = None, limit: int | None = None,
                 sort_by_time: bool = True) -> RatingsTable:
    """Read a ratings file.

    Parameters
    ----------
    path
        The file.
    sep
        Column separator; detected from the first line when ``None``.
    limit
        Read at most this many ratings (from the start of the file).
    sort_by_time
        Order events by timestamp (MovieLens 100k ``u.data`` is not in time order).
    """
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{path} is empty")
    sep = sep or _detect(lines[0])
    start = 0
    first = lines[0].split(sep)[0].strip()
    if not first.lstrip("-").isdigit():
        start = 1  # header
    body = lines[start:] if limit is None else lines[start : start + limit]
    body = [line for line in body if line.strip()]
    if not body:
        raise ValueError(f"{path} has no rating lines")
    # numpy parses one separator character; '::' files become tab-separated first.
    joined = "\n".join(body).replace(sep, "\t")
    try:
        data = np.loadtxt(io.StringIO(joined), delimiter="\t", dtype=np.float64, ndmin=2,
                          usecols=(0, 1, 2, 3))
    except ValueError as exc:
        raise ValueError(
            f"{path}: every line must be 'user{sep}item{sep}rating{sep}timestamp' with "
            f"numeric values ({exc})"
        ) from exc
    user, user_ids = _encode(data[:, 0].astype(np.int64))
    item, item_ids = _encode(data[:, 1].astype(np.int64))
    rating = data[:, 2].astype(np.float32)
    ts_ms = data[:, 3].astype(np.int64) * 1000  # MovieLens timestamps are in seconds
    if sort_by_time:
        order = np.argsort(ts_ms, kind="stable")
        user, item, rating, ts_ms = user[order], item[order], rating[order], ts_ms[order]
    return RatingsTable(user=user, item=item, rating=rating, ts_ms=ts_ms, user_ids=user_ids,
                        item_ids=item_ids)


def read_movielens(path: str | Path, limit: int | None = None) -> Interactions:
    """A MovieLens ratings file as :class:`~service.readers.interactions.Interactions`:
    the original ids as strings, in time order (ties in file order).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ratings.csv")
    >>> _ = open(path, "w").write("userId,movieId,rating,timestamp\\n1,31,2.5,1260759144\\n"
    ...                           "1,1029,3.0,1260759179\\n")
    >>> t = read_movielens(path)
    >>> t.user.tolist(), t.item.tolist(), t.value.tolist(), t.ts_ms[0]
    (['1', '1'], ['31', '1029'], [2.5, 3.0], np.int64(1260759144000))
    """
    t = read_ratings(path, limit=limit)
    return Interactions.build("ratings", user=t.user_ids[t.user], item=t.item_ids[t.item],
                              ts_ms=t.ts_ms, value=t.rating, name=Path(path).name)
