"""``--data KIND:PATH``: which reader reads a data set (``freshrec backfill``, ``freshrec
bench quality``, ``freshrec bench drift --real``).

Kinds:

======================  =================================================================
``movielens:PATH``      MovieLens ``u.data``, ``ratings.dat`` or ``ratings.csv`` (ratings)
``criteo:PATH``         Criteo TSV, label + 13 integer + 26 categorical columns (clicks)
``avazu:PATH``          Avazu ``train.csv`` (clicks)
``implicit:PATH``       an implicit event log, Retailrocket's ``events.csv`` layout unless
                        ``--columns`` maps it
``csv:PATH``            any CSV with a header, through ``--columns``
``jsonl:PATH``          any JSON Lines file, through ``--columns``
``parquet:PATH``        any Parquet file, through ``--columns``
======================  =================================================================

Example
-------
>>> spec = DataSpec.parse("movielens:/data/ml-100k/u.data")
>>> spec.kind, spec.path.name
('movielens', 'u.data')
>>> DataSpec.parse("xlsx:x.xlsx")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown data kind 'xlsx' in --data xlsx:x.xlsx; kinds: movielens, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.readers import (
    ColumnMapping,
    Interactions,
    read_avazu,
    read_criteo_rows,
    read_implicit,
    read_movielens,
    read_table,
)
from service.readers.columns import Format

KINDS = ("movielens", "criteo", "avazu", "implicit", "csv", "jsonl", "parquet")


def split_kind_path(text: str, option: str, kinds: tuple[str, ...], *, noun: str = "kind",
                    why: str = "") -> tuple[str, Path]:
    """``KIND:PATH`` of command-line ``option`` as (kind, path), or a ValueError that
    lists ``kinds`` (and says ``why`` only those).

    >>> split_kind_path("csv:a:b.csv", "--data", ("csv",))
    ('csv', PosixPath('a:b.csv'))
    """
    kind, sep, path = text.partition(":")
    if not sep or not path:
        raise ValueError(f"{option} {text!r} must be KIND:PATH, e.g. movielens:u.data; "
                         f"kinds: {', '.join(kinds)}")
    if kind not in kinds:
        raise ValueError(f"unknown {noun} {kind!r} in {option} {text}; kinds: "
                         f"{', '.join(kinds)}" + (f" ({why})" if why else ""))
    return kind, Path(path)


@dataclass(frozen=True, slots=True)
class DataSpec:
    """One ``--data`` argument: the reader's kind and the file."""

    kind: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        kind, path = split_kind_path(text, "--data", KINDS, noun="data kind")
        return cls(kind, path)

    def read(self, columns: ColumnMapping | None = None, limit: int | None = None
             ) -> Interactions:
        """The data set's rows (the first ``limit`` of the file), in time order."""
        if not self.path.is_file():
            raise FileNotFoundError(f"--data {self.kind}:{self.path}: no such file")
        if self.kind in ("csv", "jsonl", "parquet") and columns is None:
            raise ValueError(f"--data {self.kind}:... needs --columns to say which column "
                             "holds what, e.g. --columns user=uid,item=iid,timestamp=ts,"
                             "value=rating")
        if self.kind == "movielens":
            table = read_movielens(self.path, limit=limit)
        elif self.kind == "criteo":
            table = read_criteo_rows(self.path, limit=limit)
        elif self.kind == "avazu":
            table = read_avazu(self.path, limit=limit)
        elif self.kind == "implicit":
            table = read_implicit(self.path, columns, limit=limit)
        else:
            assert columns is not None
            fmt: Format = ("csv" if self.kind == "csv" else "jsonl" if self.kind == "jsonl"
                           else "parquet")
            table = read_table(self.path, columns, fmt=fmt, limit=limit)
        return table.time_ordered()
