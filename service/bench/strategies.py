"""``freshrec bench strategies``: per-event vs micro-batch vs periodic window retraining.

All three train biased MF (default hyperparameters) on the same generated rating stream
with an abrupt concept change at the middle, with progressive validation: every event is
scored before the model learns from it. Reported per strategy: RMSE over the whole
stream, before the drift, over the ``--recovery`` events right after it, and at the end;
events per CPU second of the learning calls (one core); and the cost, in gradient updates
per event and CPU seconds. Periodic retraining from scratch on a sliding window is what
online learning replaces: it pays for many updates per event and still serves a stale model between
retrains. A plot of the rolling RMSE is saved under ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from service.bench.learners import _slice, clock, ratings_stream
from service.learners.config import LearnerConfig
from service.learners.registry import make_learner


def run(args: argparse.Namespace) -> int:
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


def _plot(curves: dict[str, np.ndarray], drift: int, out: Path, window: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    kernel = np.ones(window) / window
    for name, sq in curves.items():
        ax.plot(np.arange(window, len(sq) + 1), np.sqrt(np.convolve(sq, kernel, "valid")),
                label=name, lw=1)
    ax.axvline(drift, color="grey", ls="--", lw=1, label="drift")
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
    parser.add_argument("--out", default="bench-results", help="folder for the plot")
    parser.set_defaults(func=run)
