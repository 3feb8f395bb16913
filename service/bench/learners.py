"""``freshrec bench learners``: each model against River's equivalent, on the same streams.

Streams (all generated with known structure by :mod:`service.demo.generator`, or read
from a file you point at):

* ``ratings`` — stationary explicit ratings (planted low-rank taste, popularity skew);
* ``ratings-drift`` — the same with an abrupt concept change at the middle of the stream;
* ``clicks-wide`` — clicks on impressions with ~40 hashed features per event (user, item,
  device, and 37 Criteo-like categorical context fields), drift at the middle;
* ``--ratings-file`` — MovieLens ``u.data``/``ratings.dat``/``ratings.csv``;
* ``--criteo-file`` — Criteo-style TSV.

For every model the benchmark runs progressive validation (predict, then learn) over the
stream in batches of ``--batch`` events, as the service does, and times only the learning
calls (no decoding), in CPU seconds of this thread (:data:`clock`). River runs with its
own defaults, as a River user gets it (the accuracy target: freshrec's defaults equal to
River's or better on every stream); ``--river-matched`` adds River configured with
freshrec's hyperparameters, which checks the implementations rather than the defaults.
River learns one event at a time: its BiasedMF and logistic regressions run on the first
``--river-events`` events (by default the whole stream, so the drift is included), its
factorisation machines on fewer (``--river-fm-events``), and the table compares both
libraries on that same prefix: ``metric@river`` is freshrec's metric over exactly the
events River saw and ``vs river`` its difference from River's (negative: freshrec is
better). A plot of the windowed metric over each stream is saved under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.demo.generator import StreamSpec, SyntheticStream
from service.evaluation.binary import BinaryMetrics
from service.evaluation.regression import RegressionMetrics
from service.examples import ExampleBatch
from service.learners.base import Learner
from service.learners.biased_mf import BiasedMF
from service.learners.config import LearnerConfig
from service.learners.fm import FM
from service.learners.hashing import hash_array
from service.learners.registry import make_learner

F64 = npt.NDArray[np.float64]

clock = time.thread_time
"""What the learning calls are timed with: this thread's CPU time. Every contender runs
single-threaded in this thread (numba kernels, River's and scikit-learn's Python), so
events per CPU second is throughput on one core, and it does not count the time other
processes on a shared machine take from it (wall-clock figures moved 2-3x between runs
on the shared 2-core VM; CPU time is steadier)."""


@dataclass(slots=True)
class Stream:
    """A benchmark stream: the examples, the table sizes and River's view of the events."""

    name: str
    task: str  # "regression" or "binary"
    batch: ExampleBatch
    n_users: int
    n_items: int
    feature_bits: int
    drift_at: int | None = None
    note: str = ""

    def __len__(self) -> int:
        return len(self.batch)


@dataclass(slots=True)
class Run:
    stream: str
    model: str
    library: str
    n_events: int
    losses: F64
    seconds: float
    task: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.n_events / self.seconds if self.seconds > 0 else float("inf")

    def metric(self, n: int | None = None) -> float:
        losses = self.losses[: n if n is not None else len(self.losses)]
        m = float(losses.mean()) if len(losses) else float("nan")
        return float(np.sqrt(m)) if self.task == "regression" else m


def metric_name(task: str) -> str:
    return "RMSE" if task == "regression" else "log loss"


# -- streams --------------------------------------------------------------------------------


def ratings_stream(n: int, seed: int, drift: bool) -> Stream:
    spec = StreamSpec(n_users=10_000, n_items=2_000, seed=seed,
                      drift_at=n // 2 if drift else None)
    r = SyntheticStream(spec).ratings(n)
    # Generator ids start at 0; learner row 0 is the reserved unknown row.
    batch = ExampleBatch.from_arrays(r.user + 1, r.item + 1, r.rating,
                                     ts_ms=r.position * 10)
    return Stream("ratings-drift" if drift else "ratings", "regression", batch,
                  spec.n_users + 1, spec.n_items + 1, 18, spec.drift_at)


N_CONTEXT_FIELDS = 37


def wide_clicks_stream(n: int, seed: int, feature_bits: int = 20) -> Stream:
    """Clicks with the device and 37 Zipf-distributed context fields hashed in.

    The context fields are pure noise except field 0, whose value shifts the click
    probability: realistic width (what costs time), a little extra signal.
    """
    spec = StreamSpec(n_users=10_000, n_items=2_000, seed=seed, drift_at=n // 2)
    stream = SyntheticStream(spec)
    c = stream.clicks(n)
    rng = np.random.default_rng(seed + 7)
    values = np.minimum(rng.zipf(1.3, size=(n, N_CONTEXT_FIELDS)), 10_000).astype(np.int64)
    # Planted effect of context field 0 on clicks, on top of the generator's model.
    effect = np.where(values[:, 0] % 3 == 0, 0.25, -0.1)
    clicked = np.where(rng.random(n) < np.abs(effect), effect > 0, c.clicked > 0)
    cols = [hash_array(100, c.device, feature_bits)]
    cols += [hash_array(101 + j, values[:, j], feature_bits) for j in range(N_CONTEXT_FIELDS)]
    feat_idx = np.stack(cols, axis=1).ravel()
    width = 1 + N_CONTEXT_FIELDS
    batch = ExampleBatch.from_arrays(c.user + 1, c.item + 1, clicked.astype(np.float32),
                                     ts_ms=c.position * 10)
    batch.feat_indptr = np.arange(0, n * width + 1, width, dtype=np.int64)
    batch.feat_idx = feat_idx
    batch.feat_val = np.ones(len(feat_idx), dtype=np.float32)
    return Stream("clicks-wide", "binary", batch, spec.n_users + 1, spec.n_items + 1,
                  feature_bits, spec.drift_at, note=f"{width + 2} features/event")


def file_streams(args: argparse.Namespace) -> list[Stream]:
    from service.readers import read_criteo, read_ratings

    out = []
    if args.ratings_file:
        t = read_ratings(args.ratings_file, limit=args.file_limit)
        batch = ExampleBatch.from_arrays(t.user, t.item, t.rating, ts_ms=t.ts_ms)
        out.append(Stream(f"file:{Path(args.ratings_file).name}", "regression", batch,
                          t.n_users, t.n_items, 18))
    if args.criteo_file:
        c = read_criteo(args.criteo_file, feature_bits=20, limit=args.file_limit)
        n = len(c)
        batch = ExampleBatch.from_arrays(np.zeros(n, np.int64), np.zeros(n, np.int64),
                                         c.label)
        batch.feat_indptr, batch.feat_idx, batch.feat_val = (c.feat_indptr, c.feat_idx,
                                                             c.feat_val)
        out.append(Stream(f"file:{Path(args.criteo_file).name}", "binary", batch, 1, 2, 20))
    return out


# -- runners ----------------------------------------------------------------------------------


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _slice(batch: ExampleBatch, a: int, b: int) -> ExampleBatch:
    lo, hi = batch.feat_indptr[a], batch.feat_indptr[b]
    return ExampleBatch(user=batch.user[a:b], item=batch.item[a:b], y=batch.y[a:b],
                        weight=batch.weight[a:b], ts_ms=batch.ts_ms[a:b],
                        feat_indptr=batch.feat_indptr[a : b + 1] - lo,
                        feat_idx=batch.feat_idx[lo:hi], feat_val=batch.feat_val[lo:hi])


def _losses(task: str, y: npt.NDArray[np.float32], pred: npt.NDArray[np.float32]) -> F64:
    metrics = RegressionMetrics() if task == "regression" else BinaryMetrics()
    return metrics.update(y, pred, np.ones(len(y)))


def run_freshrec(stream: Stream, name: str, config: LearnerConfig, batch_size: int,
                 limit: int | None = None) -> Run:
    n = len(stream) if limit is None else min(limit, len(stream))
    learner: Learner = make_learner(config, stream.n_users, stream.n_items,
                                    stream.feature_bits)
    # Compile (or load cached) kernels on a throwaway copy, outside the timing.
    learner.clone().learn(_slice(stream.batch, 0, min(n, 64)))
    preds = np.empty(n, dtype=np.float32)
    seconds = 0.0
    chunks = [(_slice(stream.batch, a, b), a, b) for a, b in _chunks(n, batch_size)]
    for part, a, b in chunks:
        t0 = clock()
        p, _ = learner.learn(part)
        seconds += clock() - t0
        preds[a:b] = p
    library = "sklearn" if config.model == "sklearn" else "freshrec"
    return Run(stream.name, name, library, n, _losses(stream.task, stream.batch.y[:n], preds),
               seconds, stream.task, extra={"finite": learner.is_finite()})


def _river_features(batch: ExampleBatch, n: int) -> list[dict[str, float]]:
    out = []
    for j in range(n):
        x = {f"u{batch.user[j]}": 1.0, f"i{batch.item[j]}": 1.0}
        lo, hi = batch.feat_indptr[j], batch.feat_indptr[j + 1]
        for f, v in zip(batch.feat_idx[lo:hi].tolist(), batch.feat_val[lo:hi].tolist(),
                        strict=True):
            x[f"f{f}"] = v
        out.append(x)
    return out


def run_river(stream: Stream, name: str, n: int, make: Callable[[], Any], kind: str) -> Run:
    """River one event at a time; inputs are prepared before the clock starts."""
    n = min(n, len(stream))
    model = make()
    y = stream.batch.y[:n]
    preds = np.empty(n, dtype=np.float32)
    if kind == "reco":
        users = stream.batch.user[:n].tolist()
        items = stream.batch.item[:n].tolist()
        ys = y.tolist()
        t0 = clock()
        for j in range(n):
            preds[j] = model.predict_one(users[j], items[j])
            model.learn_one(users[j], items[j], ys[j])
        seconds = clock() - t0
    else:
        xs = _river_features(stream.batch, n)
        if kind == "regressor":
            targets: list[Any] = y.tolist()
        else:
            targets = [bool(v > 0.5) for v in y.tolist()]
        t0 = clock()
        for j in range(n):
            if kind == "regressor":
                preds[j] = model.predict_one(xs[j])
            else:
                preds[j] = model.predict_proba_one(xs[j]).get(True, 0.5)
            model.learn_one(xs[j], targets[j])
        seconds = clock() - t0
    return Run(stream.name, name, "river", n, _losses(stream.task, y, preds), seconds,
               stream.task, note=f"first {n:,} events")


# River as a River user gets it: each model with River's own defaults. This is the
# comparison the accuracy target is about (freshrec's defaults against River's, neither
# tuned per stream); River's defaults differ from freshrec's (for example SGD at 0.01
# without L2 for reco.BiasedMF, 10 factors for its FMs, alpha 0.05 for FTRLProximal).


def river_default(model: str, seed: int) -> Callable[[], Any]:
    """River's ``model`` with its default hyperparameters (``seed`` for initialisation)."""
    from river import facto, linear_model, optim, reco

    makers: dict[str, Callable[[], Any]] = {
        "BiasedMF": lambda: reco.BiasedMF(seed=seed),
        "FMRegressor": lambda: facto.FMRegressor(seed=seed),
        "FMClassifier": lambda: facto.FMClassifier(seed=seed),
        "FTRL": lambda: linear_model.LogisticRegression(optimizer=optim.FTRLProximal()),
        "LogisticRegression": lambda: linear_model.LogisticRegression(),
    }
    return makers[model]


# River configured with the same hyperparameters as freshrec's defaults (``--river-matched``),
# so that the ratio compares implementations of the same model, not tuning.


def river_biased_mf(cfg: LearnerConfig) -> Callable[[], Any]:
    from river import optim, reco

    opt = BiasedMF.default_optimizer()
    lr = opt.learning_rate
    init_std = BiasedMF(2, 2, n_factors=1).init_std

    def make() -> Any:
        # River's squared-loss gradient is 2 (y_hat - y) and its L2 term is not doubled:
        # twice the L2 gives freshrec's gradient times 2, which AdaGrad's step ignores
        # (with SGD, half the rate makes it exactly freshrec's step).
        def rate() -> Any:
            return optim.AdaGrad(lr) if opt.adagrad else optim.SGD(lr / 2)

        return reco.BiasedMF(
            n_factors=cfg.n_factors,
            bias_optimizer=rate(),
            latent_optimizer=rate(),
            l2_bias=0.0,
            l2_latent=2 * opt.l2,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=init_std,
                                                         seed=cfg.seed),
            clip_gradient=10.0,
            seed=cfg.seed,
        )

    return make


def river_fm(task: str, n_factors: int, seed: int) -> Callable[[], Any]:
    from river import facto, optim

    opt = FM.default_optimizer(task)
    init_std = FM(2, 2, 1, n_factors=1).init_std
    # River's squared-loss gradient is 2 (y_hat - y) (its log-loss gradient is p - y):
    # twice the L2 scales the whole gradient by 2, which AdaGrad's step ignores.
    lr = opt.learning_rate
    l2 = 2 * opt.l2 if task == "regression" else opt.l2

    def make() -> Any:
        cls = facto.FMRegressor if task == "regression" else facto.FMClassifier
        return cls(
            n_factors=n_factors,
            weight_optimizer=optim.AdaGrad(lr),
            latent_optimizer=optim.AdaGrad(lr),
            l2_weight=0.0,
            l2_latent=l2,
            intercept_lr=lr,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=init_std, seed=seed),
            clip_gradient=10.0,
            seed=seed,
        )

    return make


def river_ftrl(cfg: LearnerConfig) -> Callable[[], Any]:
    from river import linear_model, optim

    def make() -> Any:
        return linear_model.LogisticRegression(
            optimizer=optim.FTRLProximal(alpha=cfg.ftrl_alpha, beta=cfg.ftrl_beta,
                                         l1=cfg.ftrl_l1, l2=cfg.ftrl_l2),
            intercept_lr=0.0,  # FTRL's own bias feature carries the intercept
        )

    return make


# -- the benchmark ----------------------------------------------------------------------------


MATCHED = "[freshrec's hp]"


def run_stream(stream: Stream, args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    river_n = args.river_events
    bs = args.batch
    seed = args.seed
    factors = {} if args.fm_factors is None else {"n_factors": args.fm_factors}
    micro = {"strategy": "micro_batch"}
    if stream.task == "regression":
        mf = LearnerConfig(model="biased_mf", seed=seed)
        runs.append(run_freshrec(stream, "BiasedMF", mf, bs))
        runs.append(run_freshrec(stream, "BiasedMF micro-batch(256)",
                                 mf.model_copy(update=micro), bs))
        fm = LearnerConfig(model="fm", seed=seed, **factors)
        runs.append(run_freshrec(stream, "FM", fm, bs))
        runs.append(run_freshrec(stream, "FM micro-batch(256)", fm.model_copy(update=micro),
                                 bs))
        runs.append(run_freshrec(stream, "SGDRegressor+FeatureHasher",
                                 LearnerConfig(model="sklearn"), bs, limit=args.sklearn_events))
        if not args.no_river:
            fm_n = min(river_n, args.river_fm_events)
            runs.append(run_river(stream, "BiasedMF", river_n,
                                  river_default("BiasedMF", seed), "reco"))
            runs.append(run_river(stream, "FM", fm_n, river_default("FMRegressor", seed),
                                  "regressor"))
            if args.river_matched:
                runs.append(run_river(stream, f"BiasedMF {MATCHED}", river_n,
                                      river_biased_mf(mf), "reco"))
                runs.append(run_river(stream, f"FM {MATCHED}", fm_n,
                                      river_fm("regression", fm.n_factors, seed),
                                      "regressor"))
    else:
        ftrl = LearnerConfig(model="ftrl", seed=seed)
        runs.append(run_freshrec(stream, "FTRL", ftrl, bs))
        runs.append(run_freshrec(stream, "FTRL micro-batch(256)", ftrl.model_copy(update=micro),
                                 bs))
        fm = LearnerConfig(model="fm", task="binary", seed=seed, **factors)
        runs.append(run_freshrec(stream, "FM", fm, bs))
        runs.append(run_freshrec(stream, "FM micro-batch(256)", fm.model_copy(update=micro),
                                 bs))
        runs.append(run_freshrec(stream, "SGDClassifier+FeatureHasher",
                                 LearnerConfig(model="sklearn", task="binary"), bs,
                                 limit=args.sklearn_events))
        if not args.no_river:
            # River's FM is ~50x slower per event with 40 features than with two.
            fm_n = min(river_n, args.river_fm_events // 4)
            runs.append(run_river(stream, "FTRL", river_n, river_default("FTRL", seed),
                                  "classifier"))
            runs.append(run_river(stream, "LogisticRegression", river_n,
                                  river_default("LogisticRegression", seed), "classifier"))
            runs.append(run_river(stream, "FM", fm_n, river_default("FMClassifier", seed),
                                  "classifier"))
            if args.river_matched:
                runs.append(run_river(stream, f"FTRL {MATCHED}", river_n, river_ftrl(ftrl),
                                      "classifier"))
                runs.append(run_river(stream, f"FM {MATCHED}", fm_n,
                                      river_fm("binary", fm.n_factors, seed), "classifier"))
    return runs


def format_table(runs: list[Run]) -> str:
    """One row per run. ``metric@river`` is the run's metric over the events River's
    equivalent (with River's defaults) saw, ``vs river`` that minus River's metric
    (negative: freshrec is better), ``x river`` the ratio of events per second."""
    header = (f"{'stream':<14} {'model':<28} {'library':<9} {'events':>9} {'metric':>8} "
              f"{'metric@river':>12} {'vs river':>9} {'events/s':>11} {'x river':>8}")
    lines = [header, "-" * len(header)]
    for r in runs:
        river = next((o for o in runs if o.library == "river" and o.stream == r.stream
                      and r.model.split()[0] == o.model), None)
        same = r.metric(river.n_events) if river is not None else float("nan")
        versus = (same - river.metric() if river is not None and r.library != "river"
                  else float("nan"))
        ratio = (r.events_per_second / river.events_per_second
                 if river is not None and r.library != "river" else float("nan"))
        note = f"  ({r.note})" if r.note else ""
        if not r.extra.get("finite", True):
            note += "  NON-FINITE PARAMETERS"
        lines.append(
            f"{r.stream:<14} {r.model:<28} {r.library:<9} {r.n_events:>9,} "
            f"{r.metric():>8.4f} {same:>12.4f} {versus:>+9.4f} {r.events_per_second:>11,.0f} "
            f"{ratio:>8.1f}{note}"
        )
    return "\n".join(lines)


def plot(stream: Stream, runs: list[Run], out: Path, window: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in runs:
        w = min(window, max(1, r.n_events // 10))
        kernel = np.ones(w) / w
        curve = np.convolve(r.losses, kernel, mode="valid")
        if stream.task == "regression":
            curve = np.sqrt(curve)
        ax.plot(np.arange(w, r.n_events + 1), curve, label=f"{r.library}: {r.model}", lw=1)
    if stream.drift_at is not None:
        ax.axvline(stream.drift_at, color="grey", ls="--", lw=1, label="drift")
    ax.set_xlabel("events")
    ax.set_ylabel(f"progressive {metric_name(stream.task)} (rolling {window:,})")
    ax.set_title(f"freshrec bench learners: {stream.name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"learners-{stream.name.replace(':', '_').replace('/', '_')}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    if args.big:
        args.events *= 10
        args.river_events *= 4
        args.river_fm_events *= 4
    streams: list[Stream] = []
    if not args.files_only:
        streams += [ratings_stream(args.events, args.seed, drift=False),
                    ratings_stream(args.events, args.seed, drift=True),
                    wide_clicks_stream(args.events, args.seed)]
    streams += file_streams(args)
    all_runs: list[Run] = []
    out = Path(args.out)
    for stream in streams:
        print(f"== {stream.name}: {len(stream):,} events, {metric_name(stream.task)}"
              f"{', drift at ' + format(stream.drift_at, ',') if stream.drift_at else ''}"
              f"{', ' + stream.note if stream.note else ''}", flush=True)
        runs = run_stream(stream, args)
        all_runs += runs
        print(format_table(runs), flush=True)
        print(f"plot: {plot(stream, runs, out, args.window)}\n", flush=True)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=300_000,
                        help="events per generated stream (default 300,000)")
    parser.add_argument("--river-events", type=int, default=300_000,
                        help="events River's BiasedMF and logistic regressions learn per "
                             "stream (default: the whole default stream, drift included)")
    parser.add_argument("--river-fm-events", type=int, default=20_000,
                        help="events River's FM learns (a quarter of it on clicks-wide, "
                             "where River's FM runs a few hundred events/s)")
    parser.add_argument("--river-matched", action="store_true",
                        help="also run River with freshrec's default hyperparameters (an "
                             "implementation check; the target compares River's defaults)")
    parser.add_argument("--sklearn-events", type=int, default=100_000,
                        help="events for the scikit-learn baseline (Python per event)")
    parser.add_argument("--batch", type=int, default=10_000,
                        help="events per learn() call, like a poll batch")
    parser.add_argument("--fm-factors", type=int, default=None,
                        help="latent factors of freshrec's FM (default: its default, 32; "
                             "River's FM keeps its own default, 10)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--window", type=int, default=10_000,
                        help="rolling window of the plotted metric")
    parser.add_argument("--ratings-file", help="MovieLens u.data / ratings.dat / ratings.csv")
    parser.add_argument("--criteo-file", help="Criteo-style TSV (label, 13 int, 26 cat)")
    parser.add_argument("--file-limit", type=int, default=None,
                        help="read at most this many lines of each file")
    parser.add_argument("--files-only", action="store_true",
                        help="skip the generated streams")
    parser.add_argument("--no-river", action="store_true", help="skip River")
    parser.add_argument("--big", action="store_true",
                        help="10x the events (River 4x): several minutes")
    parser.add_argument("--out", default="bench-results", help="folder for the plots")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "learners",
        help="freshrec's learners vs River and scikit-learn on the same streams",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=main)
