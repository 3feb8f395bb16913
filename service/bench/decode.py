"""``freshrec bench decode``: events per second from raw bytes through decode and preprocessing.

Measures, on the same generated messages (JSON bytes as a producer sends them, from
:mod:`service.demo.generator`), cumulative stages of the hot path on one core:

* ``decode``: validation of every message and the columnar batch (:func:`decode_batch`);
* ``+dedup``: plus hashing ``event_id`` and the dedup window;
* ``+encode``: plus the whole :class:`~service.preprocess.Preprocessor` (ids to rows,
  side features, labels, holdout) — the batch the learner receives.

Each figure is the best of ``--repeat`` passes, so a noisy neighbour on a shared machine
lowers it less. ``--soak`` instead streams ``--events`` (10 million by default in that
mode) with ``--users`` (a million) distinct users in chunks through decode and
preprocessing, and prints the process RSS, the bytes the bounded structures hold and the
rest of the RSS (what a leak would raise) and the sizes of the structures as it goes; it
fails (exit status 1) if any structure exceeds its configured bound.

``--state`` measures what a checkpoint costs the preprocessor: with default settings
(capacity for about a million users, a million dedup ids, 200k pending impressions), it
streams two impressions per user for ``--state-users`` (20 thousand and 1 million by
default) and prints the size of ``get_state()`` and the time it takes on the main
thread, part by part, then the time ``set_state()`` takes to restore it.

Examples::

    freshrec bench decode                      # 200k events, about half a minute
    freshrec bench decode --mode ratings --events 1000000
    freshrec bench decode --soak               # 10M events, 1M users: a few minutes
    freshrec bench decode --soak --preallocate # the same, structures at their bounds
    freshrec bench decode --state              # 20k and 1M users: about a minute
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from service.demo.generator import StreamSpec, SyntheticStream
from service.events.decode import decode_batch
from service.preprocess import PreprocessConfig, Preprocessor
from service.preprocess.hashing import hash_packed
from service.preprocess.vocabulary import Vocabulary

START_MS = 1_800_000_000_000
EVENTS_PER_SECOND = 1000.0


def _messages(mode: str, n: int, users: int, items: int, seed: int,
              start_ms: int = START_MS) -> list[bytes]:
    stream = SyntheticStream(StreamSpec(n_users=users, n_items=items, mode=mode,  # type: ignore[arg-type]
                                        seed=seed))
    out: list[bytes] = []
    while len(out) < n:
        out += stream.encoded_events(min(50_000, n - len(out)), start_ms=start_ms,
                                     events_per_second=EVENTS_PER_SECOND)
    return out[:n]


def _config(mode: str, users: int, items: int, preallocate: bool = False) -> PreprocessConfig:
    return PreprocessConfig(
        preallocate=preallocate,
        task="binary" if mode == "behaviour" else "regression",
        user_capacity=max(1 << 10, 1 << int(np.ceil(np.log2(users + 1)))),
        item_capacity=max(1 << 10, 1 << int(np.ceil(np.log2(items + 1)))),
        crosses=["item*context.device"],
        allowed_lateness_ms=10 * 365 * 86_400_000,
    )


def _rate(run: Callable[[Preprocessor], None], cfg: PreprocessConfig, n: int,
          repeat: int) -> tuple[float, float]:
    """Best events per wall second and per CPU second (the latter ignores time spent
    waiting for a core that neighbours hold)."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        pre = Preprocessor(cfg)  # a fresh state per pass, built outside the timing
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        run(pre)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return n / best_wall, n / best_cpu


def throughput(args: argparse.Namespace) -> int:
    print(f"generating {args.events:,} {args.mode} events for {args.users:,} users...",
          flush=True)
    values = _messages(args.mode, args.events, args.users, args.items, args.seed)
    n = len(values)
    now = START_MS + int(n / EVENTS_PER_SECOND * 1000) + 60_000
    # As the service runs by default: structures start small and grow by doubling (the
    # growth is inside the timing). The last row preallocates them at their bounds, as
    # every run did before they grew lazily.
    cfg = _config(args.mode, args.users, args.items)
    preallocated = _config(args.mode, args.users, args.items, preallocate=True)
    batches = [values[k:k + args.batch] for k in range(0, n, args.batch)]
    mean_bytes = sum(map(len, values)) / n

    def decode_only(pre: Preprocessor) -> None:
        for b in batches:
            decode_batch(b, now, cfg)

    def with_dedup(pre: Preprocessor) -> None:
        seed = pre._seed["event_id"]
        for b in batches:
            d = decode_batch(b, now, cfg)
            pre.dedup.observe(hash_packed(d.packed_ids("event_id"), seed), d.ts_ms)

    examples = 0

    def full(pre: Preprocessor) -> None:
        nonlocal examples
        examples = 0
        for b in batches:
            examples += len(pre.transform(decode_batch(b, now, cfg), now).examples)

    # Warm up: load (or compile) every kernel once, outside the timings.
    Preprocessor(cfg).transform(decode_batch(values[:2000], now, cfg), now)
    rows = [("decode", _rate(decode_only, cfg, n, args.repeat)),
            ("+dedup", _rate(with_dedup, cfg, n, args.repeat)),
            ("+encode", _rate(full, cfg, n, args.repeat))]
    fixed = _rate(full, preallocated, n, args.repeat)
    print(f"\n{n:,} events ({args.mode}, {mean_bytes:.0f} bytes each on average), "
          f"batches of {args.batch}, task={cfg.task}, best of {args.repeat}")
    print(f"{'stage':10s} {'events/s':>12s} {'events/cpu-s':>13s} {'cpu ns/event':>13s} "
          f"{'stage ns':>9s}")
    previous = 0.0
    for name, (rate, cpu_rate) in rows:
        ns = 1e9 / cpu_rate
        print(f"{name:10s} {rate:12,.0f} {cpu_rate:13,.0f} {ns:13.0f} {ns - previous:9.0f}")
        previous = ns
    print(f"{'prealloc.':10s} {fixed[0]:12,.0f} {fixed[1]:13,.0f} {1e9 / fixed[1]:13.0f}   (all "
          "stages, preprocess.preallocate=true)")
    print(f"examples produced: {examples:,}")
    return 0


def soak(args: argparse.Namespace) -> int:
    from service.bench.measure import rss_bytes

    # Load (or compile) every kernel first, on a small throwaway stream.
    small = _config(args.mode, 1000, 1000)
    Preprocessor(small).transform(decode_batch(
        _messages(args.mode, 2000, 100, 100, args.seed + 1), START_MS + 10**7, small),
        START_MS + 10**7)
    cfg = _config(args.mode, args.users, args.items, preallocate=args.preallocate)
    pre = Preprocessor(cfg)
    stream = SyntheticStream(StreamSpec(n_users=args.users, n_items=args.items,
                                        mode=args.mode, seed=args.seed))  # type: ignore[arg-type]
    print(f"soak: {args.events:,} {args.mode} events, {args.users:,} users, chunks of "
          f"{args.chunk:,}, preallocate={cfg.preallocate}; bounds: dedup "
          f"{cfg.dedup_window_events:,} ids, users {cfg.user_capacity - 1:,}, items "
          f"{cfg.item_capacity - 1:,}, pending {cfg.max_pending:,}", flush=True)
    print("ev/cpu-s: decode + preprocess of the chunk per CPU second (generation excluded); "
          "state: bytes the bounded structures hold now (they grow by doubling up to their "
          "bounds unless preallocated); other: RSS minus state, what a leak would raise.")
    print(f"{'events':>12s} {'ev/cpu-s':>9s} {'RSS MiB':>8s} {'state MiB':>9s} "
          f"{'other MiB':>9s} {'dedup':>10s} {'users':>10s} {'items':>8s} {'pending':>8s} "
          f"{'recycled':>9s} {'admit-full':>10s}")
    done = 0
    rss: list[int] = []
    other: list[int] = []
    ok = True
    started = time.perf_counter()
    busy = 0.0
    next_report = 0
    peak = [0, 0, 0, 0]
    bounds = (cfg.dedup_window_events, cfg.user_capacity - 1, cfg.item_capacity - 1,
              cfg.max_pending)
    while done < args.events:
        # In behaviour mode a draw of n impressions yields more than n events.
        chunk = stream.encoded_events(args.chunk, start_ms=START_MS,
                                      events_per_second=EVENTS_PER_SECOND)
        chunk = chunk[: args.events - done]
        now = START_MS + int(stream.position / EVENTS_PER_SECOND * 1000) + 60_000
        t0 = time.process_time()
        for k in range(0, len(chunk), args.batch):
            pre.transform(decode_batch(chunk[k:k + args.batch], now, cfg), now)
        spent = max(time.process_time() - t0, 1e-9)
        busy += spent
        done += len(chunk)
        state = sum(getattr(pre, part).nbytes for part in ("dedup", "users", "items",
                                                            "labels"))
        rss.append(rss_bytes())
        other.append(rss[-1] - state)
        sizes = (len(pre.dedup), len(pre.users), len(pre.items), pre.labels.pending)
        peak = [max(p, s) for p, s in zip(peak, sizes, strict=True)]
        ok &= all(s <= b for s, b in zip(sizes, bounds, strict=True))
        if done >= next_report or done >= args.events:
            next_report = done + args.report_every
            counters = pre.users.counters() if isinstance(pre.users, Vocabulary) else {}
            print(f"{done:12,d} {len(chunk) / spent:9,.0f} {rss[-1] / 2**20:8.0f} "
                  f"{state / 2**20:9.0f} {other[-1] / 2**20:9.0f} {sizes[0]:10,d} "
                  f"{sizes[1]:10,d} {sizes[2]:8,d} {sizes[3]:8,d} "
                  f"{counters.get('recycled', 0):9,d} {counters.get('full', 0):10,d}",
                  flush=True)
    warm = slice(len(rss) // 4, None)
    growth = max(rss[warm]) / max(min(rss[warm]), 1)
    other_growth = max(other[warm]) / max(min(other[warm]), 1)
    print(f"\n{done:,} events in {time.perf_counter() - started:.0f}s "
          f"({done / busy:,.0f} events per CPU second in decode+preprocess, generation "
          "excluded)")
    print("largest sizes seen / bounds: " + ", ".join(
        f"{name} {p:,}/{b:,}" for name, p, b in zip(
            ("dedup", "users", "items", "pending"), peak, bounds, strict=True)))
    print(f"RSS after the first quarter: {min(rss[warm]) / 2**20:.0f}-"
          f"{max(rss[warm]) / 2**20:.0f} MiB (max/min {growth:.3f}); outside the bounded "
          f"structures: {min(other[warm]) / 2**20:.0f}-{max(other[warm]) / 2**20:.0f} MiB "
          f"(max/min {other_growth:.3f}); structures within their bounds: "
          f"{'yes' if ok else 'NO'}")
    return 0 if ok else 1


def _state_messages(users: int, start_ms: int) -> list[bytes]:
    """Two impressions per user, back to back (the second admits the user), 1000/s."""
    template = (b'{"schema_version":1,"event_id":"s-%d","event_type":"impression",'
                b'"user_id":"u%d","item_id":"i%d","timestamp":%d,'
                b'"context":{"device":"ios","position":%d}}')
    return [template % (k, k >> 1, (k * 7919) % 10_000, start_ms + k, k % 10)
            for k in range(2 * users)]


def _best(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t0)
    return best, out


def state(args: argparse.Namespace) -> int:
    print(f"{'users seen':>11s} {'in vocab':>9s} {'dedup ids':>10s} {'pending':>8s} "
          f"{'state MiB':>10s} {'get_state ms':>13s} {'set_state ms':>13s}  per part (MiB / ms)")
    for users in args.state_users:
        cfg = PreprocessConfig(task="binary", allowed_lateness_ms=10 * 365 * 86_400_000)
        pre = Preprocessor(cfg)
        values = _state_messages(users, START_MS)
        now = START_MS + len(values) + 60_000
        for k in range(0, len(values), args.batch):
            pre.transform(decode_batch(values[k:k + args.batch], now, cfg), now)
        del values
        seconds, (arrays, meta) = _best(pre.get_state, args.repeat)
        size = sum(a.nbytes for a in arrays.values())
        parts = []
        for part in ("dedup", "users", "items", "labels"):
            obj = getattr(pre, part)
            part_s, (part_arrays, _) = _best(obj.get_state, args.repeat)
            part_mb = sum(a.nbytes for a in part_arrays.values()) / 2**20
            parts.append(f"{part} {part_mb:.1f}/{part_s * 1e3:.1f}")
        restored = Preprocessor(cfg)
        restore_s, _ = _best(partial(restored.set_state, arrays, meta), args.repeat)
        print(f"{users:11,d} {len(pre.users):9,d} {len(pre.dedup):10,d} "
              f"{pre.labels.pending:8,d} {size / 2**20:10.1f} {seconds * 1e3:13.1f} "
              f"{restore_s * 1e3:13.1f}  {', '.join(parts)}", flush=True)
    print("get_state runs on the main thread between batches (copies; the writing happens in "
          "the background); set_state once, at recovery.")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=None,
                        help="events to generate (default 200000; 10000000 with --soak)")
    parser.add_argument("--users", type=int, default=None,
                        help="distinct users (default 100000; 1000000 with --soak)")
    parser.add_argument("--items", type=int, default=10_000, help="distinct items")
    parser.add_argument("--mode", choices=("behaviour", "ratings"), default="behaviour",
                        help="'behaviour': impressions, clicks, carts, purchases (binary "
                        "task); 'ratings': ratings only (regression task)")
    parser.add_argument("--batch", type=int, default=5000, help="messages per batch")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is kept")
    parser.add_argument("--soak", action="store_true",
                        help="memory mode: stream many events, print RSS and structure sizes")
    parser.add_argument("--preallocate", action="store_true",
                        help="--soak with preprocess.preallocate=true: every bounded "
                        "structure at its bound from the start")
    parser.add_argument("--chunk", type=int, default=20_000,
                        help="impressions (or ratings) generated at a time in --soak mode")
    parser.add_argument("--report-every", type=int, default=500_000,
                        help="events between two lines of the --soak table")
    parser.add_argument("--state", action="store_true",
                        help="checkpoint mode: get_state() size and time, set_state() time")
    parser.add_argument("--state-users", type=int, nargs="+", default=[20_000, 1_000_000],
                        help="distinct users streamed before measuring, in --state mode")
    parser.add_argument("--seed", type=int, default=3)


def main(args: argparse.Namespace) -> int:
    if args.events is None:
        args.events = 10_000_000 if args.soak else 200_000
    if args.users is None:
        args.users = 1_000_000 if args.soak else 100_000
    for name in ("events", "users", "items", "batch", "repeat", "chunk", "report_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if args.state:
        if min(args.state_users) < 1:
            raise SystemExit("--state-users must be at least 1")
        return state(args)
    return soak(args) if args.soak else throughput(args)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="events/s of decode, dedup and preprocessing from raw bytes; --soak for memory",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=main)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser()
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args(sys.argv[1:] if len(sys.argv) > 1 else [])))
