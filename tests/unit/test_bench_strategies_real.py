"""bench strategies on a ratings file: four strategies, the history/live split, a plot."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from service.bench.strategies import register


def _args(tmp_path: Path, path: Path, **over: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["strategies", "--ratings-file", str(path), "--out",
                              str(tmp_path / "out"), "--batch", "500", "--window", "1000",
                              "--every", "500", "--plot-window", "100"])
    for k, v in over.items():
        setattr(args, k, v)
    return args


def test_the_four_strategies_run_on_a_ratings_file(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    users, items = rng.integers(1, 60, n), rng.integers(1, 40, n)
    ratings = np.clip(np.round(3 + (users % 3) - (items % 2) + rng.normal(0, 0.5, n)), 1, 5)
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{int(r)}\t{1000 + k}\n"
                            for k, (u, i, r) in enumerate(zip(users, items, ratings,
                                                              strict=True))))
    args = _args(tmp_path, path, backfill_epochs=2)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()
            if line.startswith(("per-event", "micro-batch", "window-retrain", "backfill"))]
    assert [r[0] for r in rows] == ["per-event", "micro-batch(256)", "window-retrain(W=1,000,",
                                    "backfill(2"]
    assert "history 1,500 (50%), live 1,500" in out
    backfill = rows[-1]
    assert backfill[3] == "nan"  # the history is learned offline, not scored
    assert (tmp_path / "out" / "strategies.png").is_file()
    with pytest.raises(SystemExit, match="no history"):
        bad = _args(tmp_path, path, history=0.0)
        bad.func(bad)
