"""``freshrec bench checkpoint``: what a checkpoint costs the main thread, and a restore.

A checkpoint copies the state on the main thread (consumption stalls for that long) and
writes the copy in the background; a restore (recovery, or a serving process loading a
snapshot) rebuilds the full-capacity model from it. Both used to scale with the tables'
capacity (a million user rows by default); since state format 2 they scale with the rows
in use.

Measured for a biased MF at the default capacity (``--capacity-users`` x
``--capacity-items``) after it learned from ``--users`` users and ``--items`` items
(300k + 20k rows x 32 factors = 10.2M parameters in use by default):

* ``get_state()``: the main-thread stall of a checkpoint, and the size of the copy;
* the same copy of every array whole (what format 1 did), for comparison;
* ``from_state()``: the restore into full capacity (checked to predict identically);
* construction of a fresh learner (what a restore competes with).

Then the same for the whole pipeline state (``Pipeline(settings).get_state()``: learner,
preprocessor with its id vocabularies, evaluator, drift detectors) after
``--pipeline-events`` generated events, if the runtime is available.

"cold" is the first call in the process (it pays for first-touch page faults, which are
expensive in VMs), "warm" the median of the following ``--repeat`` calls.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float, float]:
    """(last result, first call's seconds, median seconds of the next ``repeat`` calls)."""
    t = time.perf_counter()
    result = fn()
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeat):
        result = None  # let the previous copy go, as a finished background write does
        t = time.perf_counter()
        result = fn()
        warm.append(time.perf_counter() - t)
    return result, cold, statistics.median(warm) if warm else cold


def _mb(arrays: Any) -> float:
    return sum(a.nbytes for a in arrays.values()) / 1e6


def _row(name: str, cold: float, warm: float, size: float | None, note: str = "") -> str:
    size_s = f"{size:>10,.1f}" if size is not None else f"{'':>10}"
    return f"{name:<44} {cold * 1e3:>9.1f} {warm * 1e3:>9.1f} {size_s}  {note}"


def _header() -> str:
    head = f"{'operation':<44} {'cold ms':>9} {'warm ms':>9} {'MB':>10}  note"
    return f"{head}\n{'-' * len(head)}"


def bench_learner(args: argparse.Namespace) -> list[str]:
    import numpy as np

    from service.examples import ExampleBatch
    from service.learners import BiasedMF, learner_from_state

    n_users, n_items = args.users, args.items
    cap_u, cap_i = args.capacity_users, args.capacity_items
    if not (0 < n_users < cap_u and 0 < n_items < cap_i):
        raise SystemExit("need 0 < --users < --capacity-users and 0 < --items < "
                         "--capacity-items")

    def fresh() -> BiasedMF:
        return BiasedMF(cap_u, cap_i, n_factors=args.factors, seed=args.seed)

    model, build_cold, build_warm = _timed(fresh, 1)
    rng = np.random.default_rng(args.seed)
    # Every user row 1..n_users and item row 1..n_items learns at least once.
    n = n_users + n_items
    users = np.concatenate([np.arange(1, n_users + 1), rng.integers(1, n_users + 1, n_items)])
    items = np.concatenate([rng.integers(1, n_items + 1, n_users), np.arange(1, n_items + 1)])
    order = rng.permutation(n)
    ratings = rng.integers(1, 6, n).astype(np.float32)
    batch = ExampleBatch.from_arrays(users[order], items[order], ratings)
    t = time.perf_counter()
    model.learn(batch)
    learn_s = time.perf_counter() - t
    in_use = (model.used_users + model.used_items) * (args.factors + 1)

    state, get_cold, get_warm = _timed(model.get_state, args.repeat)

    def full_copy() -> dict[str, Any]:
        out = {k: v.copy() for k, v in model.arrays.items()}
        out |= {f"interactions.{k}": v.copy() for k, v in model.interactions.arrays().items()}
        return out

    full, full_cold, full_warm = _timed(full_copy, args.repeat)
    full_mb = _mb(full)
    del full
    restored, load_cold, load_warm = _timed(lambda: learner_from_state(state), args.repeat)
    probe = ExampleBatch.from_arrays(rng.integers(0, cap_u, 20_000),
                                     rng.integers(0, cap_i, 20_000), np.ones(20_000))
    same = bool(np.array_equal(model.predict(probe), restored.predict(probe)))
    return [
        f"== BiasedMF, capacity {cap_u:,} users x {cap_i:,} items x {args.factors} factors; "
        f"{model.used_users:,} user and {model.used_items:,} item rows in use "
        f"({in_use / 1e6:.1f}M parameters), learned {n:,} events in {learn_s:.2f} s",
        _header(),
        _row("get_state() (main-thread stall)", get_cold, get_warm, _mb(state.arrays),
             f"format {state.format_version}, rows in use only"),
        _row("copy of every array whole (format 1)", full_cold, full_warm, full_mb,
             "for comparison"),
        _row("from_state() into full capacity", load_cold, load_warm, None,
             f"identical predictions: {'yes' if same else 'NO'}"),
        _row("BiasedMF(...) fresh construction", build_cold, build_warm, None),
    ]


def bench_pipeline(args: argparse.Namespace) -> list[str]:
    try:
        from service.runtime.pipeline import Pipeline
    except ImportError as exc:  # the runtime is optional for this benchmark
        return [f"== pipeline: not available ({exc})"]
    from service.config import Settings
    from service.demo.generator import StreamSpec, SyntheticStream

    settings = Settings()
    pipeline = Pipeline(settings)
    stream = SyntheticStream(StreamSpec(n_users=args.pipeline_users, n_items=args.items,
                                        user_skew=0.3, seed=args.seed))
    now_ms = int(time.time() * 1000)
    t = time.perf_counter()
    done = 0
    while done < args.pipeline_events:
        n = min(20_000, args.pipeline_events - done)
        pipeline.process(stream.encoded_events(n, start_ms=now_ms - args.pipeline_events + done),
                         now_ms=now_ms)
        done += n
    feed_s = time.perf_counter() - t
    (arrays, meta), get_cold, get_warm = _timed(pipeline.get_state, args.repeat)
    by_part: dict[str, float] = {}
    for name, a in arrays.items():
        part = name.split(".", 1)[0]
        by_part[part] = by_part.get(part, 0.0) + a.nbytes / 1e6

    def restore() -> Any:
        other = Pipeline(settings)
        other.set_state(arrays, meta)
        return other

    _, set_cold, set_warm = _timed(restore, args.repeat)
    learner = pipeline.learner
    marks = (f"{getattr(learner, 'used_users', '?'):,} user / "
             f"{getattr(learner, 'used_items', '?'):,} item rows in use")
    parts = ", ".join(f"{k} {v:,.1f}" for k, v in sorted(by_part.items(), key=lambda kv: -kv[1]))
    return [
        f"== Pipeline(Settings()) with default capacities after {done:,} generated events "
        f"({feed_s:.1f} s); learner {type(learner).__name__}: {marks}",
        _header(),
        _row("Pipeline.get_state() (main-thread stall)", get_cold, get_warm, _mb(arrays),
             f"MB by part: {parts}"),
        _row("Pipeline(settings) + set_state()", set_cold, set_warm, None),
    ]


def run(args: argparse.Namespace) -> int:
    if args.big:
        args.users *= 3
        args.capacity_users *= 4
        args.pipeline_events *= 5
    lines = bench_learner(args)
    print("\n".join(lines), flush=True)
    if not args.no_pipeline:
        print()
        print("\n".join(bench_pipeline(args)), flush=True)
    print("\ncold = first call in this process (pays first-touch page faults); warm = median "
          f"of the next {args.repeat}. Timings depend on the machine and its load.")
    return 0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "checkpoint",
        help="main-thread stall of a checkpoint copy, its size, and the restore time",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--users", type=int, default=300_000, help="user rows in use")
    parser.add_argument("--items", type=int, default=20_000, help="item rows in use")
    parser.add_argument("--factors", type=int, default=32, help="latent factors")
    parser.add_argument("--capacity-users", type=int, default=1 << 20,
                        help="user rows allocated (the vocabulary capacity)")
    parser.add_argument("--capacity-items", type=int, default=1 << 18,
                        help="item rows allocated")
    parser.add_argument("--repeat", type=int, default=5, help="warm repetitions")
    parser.add_argument("--pipeline-events", type=int, default=100_000,
                        help="generated events fed to the pipeline before measuring")
    parser.add_argument("--pipeline-users", type=int, default=100_000,
                        help="user population of the pipeline's generated stream")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="measure the learner only")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--big", action="store_true",
                        help="3x the users in use, 4x the capacity, 5x the pipeline events")
    parser.set_defaults(func=run)
