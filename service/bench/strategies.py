"""``freshrec bench strategies``: per-event vs micro-batch vs window retraining vs
backfill + online.

Every strategy trains biased MF (default hyperparameters) on the same rating stream with
progressive validation: every event is scored before the model learns from it. The
stream is generated (an abrupt concept change at the middle) or, with
``--ratings-file``, a real one (MovieLens ``u.data`` / ``ratings.dat`` /
``ratings.csv``) in time order, split at ``--history`` into history and live parts.
The strategies:

* ``per-event`` and ``micro-batch``: online from the first event;
* ``window-retrain``: periodic retraining from scratch on a sliding window (what online
  learning replaces: many updates per event, and a stale model between retrains);
* ``backfill+online`` (real streams): ``--backfill-epochs`` passes over the history
  first (what ``freshrec backfill`` does in one pass, and a batch retrain in several),
  then per-event online on the live part.

Reported per strategy: RMSE over the whole stream and over its parts (before the drift /
the history, right after it, the live part, the end), events per CPU second of the
learning calls (one core), and the cost in gradient updates per event and CPU seconds.
On a real stream the column that compares all four is ``live``: every strategy has seen
the history, in its own way, before it. A plot of the rolling RMSE is saved under
``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from service.bench.learners import _slice, clock, ratings_stream
from service.examples import ExampleBatch
from service.learners.config import LearnerConfig
from service.learners.registry import make_learner


def run(args: argparse.Namespace) -> int:
    if args.ratings_file:
        return run_real(args)
    if args.big:
        args.events *= 10
    stream = ratings_stream(args.events, args.seed, drift=True)
    drift = stream.drift_at or 0
    n = len(stream)
    configs = {
        "per-event": LearnerConfig(),
        f"micro-batch({args.micro_batch})": LearnerConfig(strategy="micro_batch",
                                                          micro_batch_size=args.micro_batch),
        f"window-retrain(W={args.window:,}, every {args.every:,})": LearnerConfig(
            strategy="window_retrain", window_size=args.window, retrain_every=args.every,
            retrain_epochs=args.epochs),
    }
    print(f"== ratings with abrupt drift at {drift:,}: {n:,} events, batches of {args.batch:,}")
    header = (f"{'strategy':<40} {'RMSE':>7} {'before':>7} {'recovery':>9} {'end':>7} "
              f"{'events/s':>11} {'updates/ev':>10} {'seconds':>8}")
    print(header)
    print("-" * len(header))
    curves: dict[str, np.ndarray] = {}
    for name, cfg in configs.items():
        learner = make_learner(cfg, stream.n_users, stream.n_items, stream.feature_bits)
        learner.clone().learn(_slice(stream.batch, 0, 64))  # compile outside the clock
        preds = np.empty(n, dtype=np.float32)
        seconds = 0.0
        updates = 0
        for a in range(0, n, args.batch):
            b = min(n, a + args.batch)
            part = _slice(stream.batch, a, b)
            t0 = clock()
            p, stats = learner.learn(part)
            seconds += clock() - t0
            preds[a:b] = p
            updates += stats.n_updates
        sq = (preds.astype(np.float64) - stream.batch.y) ** 2
        rec = slice(drift, min(n, drift + args.recovery))
        end = slice(max(0, n - args.recovery), n)
        print(f"{name:<40} {np.sqrt(sq.mean()):>7.4f} {np.sqrt(sq[:drift].mean()):>7.4f} "
              f"{np.sqrt(sq[rec].mean()):>9.4f} {np.sqrt(sq[end].mean()):>7.4f} "
              f"{n / seconds:>11,.0f} {updates / n:>10.2f} {seconds:>8.2f}", flush=True)
        curves[name] = sq
    print(f"(recovery = the {args.recovery:,} events after the drift; end = the last "
          f"{args.recovery:,})")
    path = _plot(curves, drift, Path(args.out), args.plot_window)
    print(f"plot: {path}")
    return 0


def run_real(args: argparse.Namespace) -> int:
    """The strategies on a real ratings file, split into history and live parts."""
    from service.readers import read_ratings

    t = read_ratings(args.ratings_file, limit=args.file_limit)
    order = np.argsort(t.ts_ms, kind="stable")
    batch = ExampleBatch.from_arrays(t.user[order], t.item[order], t.rating[order],
                                     ts_ms=t.ts_ms[order])
    n = len(batch)
    split = int(n * args.history)
    if not 0 < split < n:
        raise SystemExit(f"--history {args.history} leaves no history or no live part")
    configs: dict[str, tuple[LearnerConfig, int]] = {
        "per-event": (LearnerConfig(), 0),
        f"micro-batch({args.micro_batch})": (
            LearnerConfig(strategy="micro_batch", micro_batch_size=args.micro_batch), 0),
        f"window-retrain(W={args.window:,}, every {args.every:,})": (LearnerConfig(
            strategy="window_retrain", window_size=args.window, retrain_every=args.every,
            retrain_epochs=args.epochs), 0),
        f"backfill({args.backfill_epochs} passes)+online": (LearnerConfig(),
                                                            args.backfill_epochs),
    }
    print(f"== {Path(args.ratings_file).name}: {n:,} ratings in time order; history "
          f"{split:,} ({args.history:.0%}), live {n - split:,}; batches of {args.batch:,}")
    header = (f"{'strategy':<40} {'RMSE':>7} {'history':>8} {'live':>7} {'end':>7} "
              f"{'events/s':>11} {'updates/ev':>10} {'seconds':>8}")
    print(header)
    print("-" * len(header))
    curves: dict[str, np.ndarray] = {}
    rows = []
    for name, (cfg, passes) in configs.items():
        learner = make_learner(cfg, t.n_users + 1, t.n_items + 1, 18)
        learner.clone().learn(_slice(batch, 0, 64))  # compile outside the clock
        preds = np.full(n, np.nan, dtype=np.float32)
        seconds, updates = 0.0, 0
        online_from = 0
        if passes:  # offline passes over the history: not scored, they see the labels
            for _ in range(passes):
                for a in range(0, split, args.batch):
                    t0 = clock()
                    _, stats = learner.learn(_slice(batch, a, min(split, a + args.batch)))
                    seconds += clock() - t0
                    updates += stats.n_updates
            online_from = split
        for a in range(online_from, n, args.batch):
            b = min(n, a + args.batch)
            t0 = clock()
            p, stats = learner.learn(_slice(batch, a, b))
            seconds += clock() - t0
            preds[a:b] = p
            updates += stats.n_updates
        sq = (preds.astype(np.float64) - batch.y) ** 2
        end = slice(max(split, n - args.recovery), n)

        def rmse(part: np.ndarray) -> float:
            part = part[np.isfinite(part)]
            return float(np.sqrt(part.mean())) if len(part) else float("nan")

        row = (name, rmse(sq), rmse(sq[:split]), rmse(sq[split:]), rmse(sq[end]),
               n / seconds, updates / n, seconds)
        rows.append(row)
        print(f"{row[0]:<40} {row[1]:>7.4f} {row[2]:>8.4f} {row[3]:>7.4f} {row[4]:>7.4f} "
              f"{row[5]:>11,.0f} {row[6]:>10.2f} {row[7]:>8.2f}", flush=True)
        curves[name] = np.where(np.isfinite(sq), sq, np.nan)
    print("(history: RMSE on the first part, not scored for backfill+online, which learns it "
          "offline; live: the rest, the comparison of all four; end: the last "
          f"{args.recovery:,})")
    path = _plot(curves, split, Path(args.out), args.plot_window, marker="history | live")
    print(f"plot: {path}")
    return 0


def _plot(curves: dict[str, np.ndarray], drift: int, out: Path, window: int,
          marker: str = "drift") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    kernel = np.ones(window) / window
    for name, sq in curves.items():
        ax.plot(np.arange(window, len(sq) + 1), np.sqrt(np.convolve(sq, kernel, "valid")),
                label=name, lw=1)
    ax.axvline(drift, color="grey", ls="--", lw=1, label=marker)
    ax.set_xlabel("events")
    ax.set_ylabel(f"progressive RMSE (rolling {window:,})")
    ax.set_title("freshrec bench strategies")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "strategies.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "strategies",
        help="per-event vs micro-batch vs periodic retraining on a drifting stream",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--events", type=int, default=400_000, help="stream length")
    parser.add_argument("--batch", type=int, default=10_000, help="events per learn() call")
    parser.add_argument("--micro-batch", type=int, default=256, help="micro-batch size")
    parser.add_argument("--window", type=int, default=100_000,
                        help="window of the retraining strategy")
    parser.add_argument("--every", type=int, default=50_000,
                        help="the retraining strategy retrains every this many events")
    parser.add_argument("--epochs", type=int, default=3, help="passes per retrain")
    parser.add_argument("--recovery", type=int, default=20_000,
                        help="events after the drift in the 'recovery' column")
    parser.add_argument("--plot-window", type=int, default=5_000,
                        help="rolling window of the plotted RMSE")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--big", action="store_true", help="10x the events")
    parser.add_argument("--ratings-file", metavar="PATH",
                        help="a real ratings file (MovieLens u.data / ratings.dat / "
                             "ratings.csv) instead of the generated stream")
    parser.add_argument("--file-limit", type=int, metavar="N",
                        help="read only the first N ratings of --ratings-file")
    parser.add_argument("--history", type=float, default=0.5,
                        help="share of a real stream that is history (default 0.5)")
    parser.add_argument("--backfill-epochs", type=int, default=1,
                        help="passes over the history of backfill+online (default 1)")
    parser.add_argument("--out", default="bench-results", help="folder for the plot")
    parser.set_defaults(func=run)
