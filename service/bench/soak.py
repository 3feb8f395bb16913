"""``freshrec bench soak``: a long run of the real service, watching memory and losses.

Runs ``python -m service run`` (the production command, full pipeline on) against a fresh
topic while a producer publishes a generated stream with a large user population (a
million distinct users by default). Meanwhile it samples the service process's RSS and
scrapes its ``/metrics``. At the end it checks

* **flatness**: max/min of the *steady* RSS after the warm-up (the first
  ``--warmup-fraction`` of the events, when tables, dedup windows and caches fill) — the
  target is within 10%. Steady RSS is the rolling minimum over ``--floor-window`` seconds:
  what the process keeps. On top of it, every checkpoint (every 10 s) and snapshot
  (every 30 s) holds a copy of the state while it is written in the background and then
  frees it; those transient peaks are reported apart (raw max/min and peak RSS), since a
  leak or an unbounded structure shows in the floor, not in a copy that is freed;
* **nothing lost**: ``applied + rejected == produced`` from the service's own counters.

It prints a table and saves an RSS-over-time plot. The figure quoted in
``docs/performance.md`` is ``freshrec bench soak --events 10000000`` (tens of minutes on
two shared cores at today's throughput); the default (2M events) takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APPLIED = "freshrec_events_applied_total"
REJECTED = "freshrec_events_rejected_total"
CONSUMED = "freshrec_events_consumed_total"


@dataclass(slots=True)
class SoakConfig:
    """Parameters of one soak run (the command-line options, validated)."""

    bootstrap: str = "127.0.0.1:19092"
    events: int = 2_000_000
    users: int = 1_000_000
    items: int = 100_000
    user_skew: float = 0.5
    rate: float = 0.0  # 0: as fast as the producer goes
    chunk: int = 50_000
    warmup_fraction: float = 0.25
    floor_window_s: float = 30.0
    preallocate: bool = True
    sample_interval_s: float = 0.5
    strategy: str = "micro_batch"
    out: Path = Path("bench-results")
    freshrec_env: dict[str, str] = field(default_factory=dict)
    idle_timeout_s: float = 120.0
    plot: bool = True
    seed: int = 11

    def __post_init__(self) -> None:
        if self.events < 1_000:
            raise ValueError(f"--events must be at least 1000, got {self.events}")
        if self.users < 1 or self.items < 1:
            raise ValueError("--users and --items must be at least 1")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.chunk < 1:
            raise ValueError("--chunk must be at least 1")
        if self.floor_window_s < 0:
            raise ValueError(f"--floor-window must be at least 0, got {self.floor_window_s}")


@dataclass(slots=True)
class SoakResult:
    """What the soak measured. Series are aligned by index."""

    produced: int = 0
    applied: int = 0
    rejected: int = 0
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    peak_rss_bytes: int = 0
    returncode: int | None = None
    #: (seconds since start, RSS bytes) of the service process.
    rss: list[tuple[float, int]] = field(default_factory=list)
    #: (seconds since start, events consumed) from /metrics.
    progress: list[tuple[float, float]] = field(default_factory=list)
    warmup_end_s: float = float("nan")
    #: max/min of the steady RSS (rolling minimum) after warm-up: the verdict's figure.
    flatness: float = float("nan")
    #: max/min of the raw RSS samples after warm-up, transient copies included.
    raw_flatness: float = float("nan")
    error: str = ""

    @property
    def lost(self) -> int:
        return self.produced - self.applied - self.rejected

    @property
    def events_per_s(self) -> float:
        return (self.applied + self.rejected) / self.seconds if self.seconds > 0 else float("nan")


def warmup_end(progress: list[tuple[float, float]], produced: int, fraction: float) -> float:
    """The first time at which ``fraction`` of ``produced`` events had been consumed.

    >>> warmup_end([(0.0, 0), (1.0, 100), (2.0, 300), (3.0, 400)], 400, 0.5)
    2.0
    """
    target = produced * fraction
    for t, consumed in progress:
        if consumed >= target:
            return t
    return float("nan")


def rss_flatness_after(rss: list[tuple[float, int]], start_s: float) -> float:
    """max/min of the RSS samples taken at or after ``start_s`` (NaN with fewer than two).

    >>> rss_flatness_after([(0, 10), (1, 100), (2, 105), (3, 102)], 1.0)
    1.05
    """
    from service.bench.measure import flatness

    after = [b for t, b in rss if t >= start_s]
    return flatness(after, 0.0) if len(after) >= 2 else float("nan")


def steady_rss(rss: list[tuple[float, int]], window_s: float) -> list[tuple[float, int]]:
    """The rolling minimum of ``rss`` over the trailing ``window_s`` seconds.

    Periodic background work (a checkpoint copy being written) lifts RSS for a few
    seconds and then frees it; the minimum over a window longer than that period is the
    memory the process keeps.

    >>> steady_rss([(0, 10), (1, 30), (2, 11), (3, 31), (4, 12)], 1.5)
    [(0, 10), (1, 10), (2, 11), (3, 11), (4, 12)]
    """
    out: list[tuple[float, int]] = []
    start = 0
    for k, (t, _) in enumerate(rss):
        while rss[start][0] < t - window_s:
            start += 1
        out.append((t, min(b for _, b in rss[start : k + 1])))
    return out


def accounting_ok(result: SoakResult) -> bool:
    """Every produced event was either applied or rejected, and none twice."""
    return result.produced > 0 and result.lost == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _produce(cfg: SoakConfig, topic: str, done: threading.Event, counter: list[int],
             errors: list[str]) -> None:
    """Generate and publish the stream in chunks, so memory stays flat on this side too."""
    try:
        from service.demo.generator import StreamSpec, SyntheticStream
        from service.demo.publish import make_producer, publish

        stream = SyntheticStream(StreamSpec(n_users=cfg.users, n_items=cfg.items,
                                            user_skew=cfg.user_skew, seed=cfg.seed))
        producer = make_producer(cfg.bootstrap)
        # Event time runs at 1000 events/s and ends about now, inside every lateness bound.
        start_ms = int(time.time() * 1000) - cfg.events
        left = cfg.events
        while left > 0:
            n = min(cfg.chunk, left)
            values = stream.encoded_events(n, start_ms=start_ms)
            publish(producer, topic, values, rate=cfg.rate)
            left -= n
            counter[0] += n
    except Exception as exc:  # reported by the driver, not lost in a thread
        errors.append(f"producer: {exc}")
    finally:
        done.set()


def run(cfg: SoakConfig, *, log: Any = print) -> SoakResult:
    """Start the service, feed it, sample it, stop it; return what was measured."""
    from service.bench.e2e import create_topic, delete_topics
    from service.bench.measure import (
        RssSampler,
        peak_rss_bytes,
        scrape_metrics,
        wait_with_rusage,
    )

    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    topic = f"freshrec-bench-soak-{run_id}"
    create_topic(cfg.bootstrap, topic)
    port = _free_port()
    result = SoakResult()
    cfg.out.mkdir(parents=True, exist_ok=True)
    log_path = cfg.out / "logs" / f"soak-{run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="freshrec-soak-") as data_dir, \
            log_path.open("wb") as service_log:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
        env.update({
            "FRESHREC_KAFKA__BOOTSTRAP_SERVERS": cfg.bootstrap,
            "FRESHREC_KAFKA__TOPIC": topic,
            "FRESHREC_KAFKA__GROUP_ID": f"soak-{run_id}",
            "FRESHREC_LEARNER__STRATEGY": cfg.strategy,
            "FRESHREC_STORAGE__URL": f"file://{data_dir}",
            "FRESHREC_HTTP__PORT": str(port),
            "FRESHREC_LOG_LEVEL": "WARNING",
            # Vocabularies, dedup window and pending impressions at their bounds from the
            # start, as a deployment that wants flat memory runs (see the setting's help);
            # --grow measures the default, where they double as ids arrive up to the bounds.
            "FRESHREC_PREPROCESS__PREALLOCATE": "true" if cfg.preallocate else "false",
            **cfg.freshrec_env,
        })
        proc = subprocess.Popen([sys.executable, "-m", "service", "run"], env=env,
                                stdout=service_log, stderr=subprocess.STDOUT)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        produced_done = threading.Event()
        produced = [0]
        errors: list[str] = []
        producer = threading.Thread(target=_produce, name="soak-producer", daemon=True,
                                    args=(cfg, topic, produced_done, produced, errors))
        sampler = RssSampler(proc.pid, cfg.sample_interval_s)
        t0 = sampler.t0
        first_event_s: float | None = None
        last_progress = (time.monotonic(), -1.0)
        try:
            sampler.start()
            producer.start()
            next_log = time.monotonic() + 10
            while True:
                time.sleep(cfg.sample_interval_s)
                if proc.poll() is not None:
                    result.error = f"service exited early with code {proc.returncode}"
                    break
                try:
                    m = scrape_metrics(metrics_url)
                except OSError:
                    continue  # not serving yet
                consumed = m.get(CONSUMED, 0.0)
                now = time.monotonic()
                result.progress.append((now - t0, consumed))
                result.applied = int(m.get(APPLIED, 0.0))
                result.rejected = int(m.get(REJECTED, 0.0))
                if consumed > 0 and first_event_s is None:
                    first_event_s = now - t0
                if consumed != last_progress[1]:
                    last_progress = (now, consumed)
                elif now - last_progress[0] > cfg.idle_timeout_s:
                    result.error = f"no progress for {cfg.idle_timeout_s:.0f} s"
                    break
                if now >= next_log:
                    next_log = now + 10
                    log(f"  {now - t0:5.0f} s: produced {produced[0]:,}, consumed "
                        f"{consumed:,.0f}, RSS {sampler.samples[-1][1] / 2**20:,.0f} MB")
                if produced_done.is_set() and consumed >= produced[0]:
                    break
            result.produced = produced[0]
            end_s = time.monotonic() - t0
            result.seconds = end_s - (first_event_s or 0.0)
        finally:
            sampler.stop()
            # The service's own high-water mark, read while it still runs.
            result.peak_rss_bytes = max(peak_rss_bytes(proc.pid), sampler.peak_bytes)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            usage = wait_with_rusage(proc, timeout_s=120)
            result.returncode = usage.returncode
            result.cpu_seconds = usage.cpu_seconds
            delete_topics(cfg.bootstrap, [topic, f"{topic}.dlq"])
        if errors:
            result.error = errors[0]
    result.rss = [(t, b) for t, b, _ in sampler.samples]
    result.warmup_end_s = warmup_end(result.progress, result.produced, cfg.warmup_fraction)
    result.raw_flatness = rss_flatness_after(result.rss, result.warmup_end_s)
    # The floor is only meaningful once a whole window lies after the warm-up.
    result.flatness = rss_flatness_after(steady_rss(result.rss, cfg.floor_window_s),
                                         result.warmup_end_s + cfg.floor_window_s)
    return result


TABLE_HEADERS = ("produced", "applied", "rejected", "lost", "events/s", "peak RSS MB",
                 "steady RSS max/min", "raw RSS max/min", "CPU s/M ev")


def report(cfg: SoakConfig, result: SoakResult, command: str) -> str:
    """The table and verdicts; saves ``soak.md``, ``soak.json`` and ``soak.png``."""
    import orjson

    from service.bench.measure import format_markdown_table, format_table, save_line_plot

    handled = result.applied + result.rejected
    row = [result.produced, result.applied, result.rejected, result.lost,
           result.events_per_s, result.peak_rss_bytes / 2**20, result.flatness,
           result.raw_flatness,
           result.cpu_seconds / handled * 1e6 if handled else float("nan")]
    flat_ok = result.flatness <= 1.10
    lost_ok = accounting_ok(result)
    verdicts = [
        f"nothing lost (applied + rejected == produced): {'PASS' if lost_ok else 'FAIL'}",
        f"steady RSS (minimum over {cfg.floor_window_s:.0f} s) flat within 10% after the "
        f"first {cfg.warmup_fraction:.0%} of events: {'PASS' if flat_ok else 'FAIL'} "
        f"(max/min {result.flatness:.3f}; raw samples, background checkpoint copies "
        f"included: {result.raw_flatness:.3f})",
    ]
    if result.error:
        verdicts.append(f"ERROR: {result.error}")
    stamp = time.strftime("%Y-%m-%d %H:%M")
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "soak.md").write_text(
        f"`{command}` on {stamp}\n\n{format_markdown_table(TABLE_HEADERS, [row])}\n\n"
        + "\n".join(f"- {v}" for v in verdicts) + "\n"
    )
    (cfg.out / "soak.json").write_bytes(orjson.dumps({
        "command": command, "date": stamp,
        "config": {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "out": str(cfg.out)},
        "result": {k: getattr(result, k) for k in result.__dataclass_fields__},
    }, option=orjson.OPT_INDENT_2))
    if cfg.plot and result.rss:
        save_line_plot(
            cfg.out / "soak.png",
            f"freshrec bench soak: service RSS, {result.produced:,} events, "
            f"{cfg.users:,} users ({stamp})",
            [t for t, _ in result.rss],
            {"RSS MB": [b / 2**20 for _, b in result.rss],
             f"steady RSS MB (minimum over {cfg.floor_window_s:.0f} s)":
                 [b / 2**20 for _, b in steady_rss(result.rss, cfg.floor_window_s)]},
            xlabel="seconds", ylabel="MB",
            vline=result.warmup_end_s if result.warmup_end_s == result.warmup_end_s else None,
            vline_label=f"{cfg.warmup_fraction:.0%} of events consumed",
        )
    return format_table(TABLE_HEADERS, [row]) + "\n" + "\n".join(verdicts)


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "soak",
        help="long run of the service: RSS flatness and no lost events",
        description=(__doc__ or "").split("\n\n")[1],
    )
    p.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    p.add_argument("--events", type=int, default=2_000_000,
                   help="events to publish (the documented figure uses 10000000)")
    p.add_argument("--users", type=int, default=1_000_000, help="distinct users in the stream")
    p.add_argument("--items", type=int, default=100_000, help="distinct items in the stream")
    p.add_argument("--rate", type=float, default=0.0,
                   help="producer rate, events/s (0: as fast as it can)")
    p.add_argument("--strategy", default="micro_batch", choices=("micro_batch", "per_event"),
                   help="freshrec's update strategy")
    p.add_argument("--warmup-fraction", type=float, default=0.25,
                   help="share of the events left out of the flatness check")
    p.add_argument("--floor-window", type=float, default=30.0, metavar="SECONDS",
                   help="window of the rolling minimum that gives the steady RSS (longer "
                   "than the checkpoint and snapshot intervals)")
    p.add_argument("--grow", action="store_true",
                   help="run with preprocess.preallocate=false (the default setting): "
                   "tables grow by doubling as ids arrive, so RSS rises until they reach "
                   "their bounds")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    p.add_argument("--freshrec-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra FRESHREC_* setting for the service (repeatable)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    env: dict[str, str] = {}
    for item in args.freshrec_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("FRESHREC_"):
            print(f"freshrec bench soak: --freshrec-env takes FRESHREC_NAME=VALUE, got {item!r}",
                  file=sys.stderr)
            return 2
        env[key] = value
    try:
        cfg = SoakConfig(bootstrap=args.bootstrap, events=args.events, users=args.users,
                         items=args.items, rate=args.rate, strategy=args.strategy,
                         warmup_fraction=args.warmup_fraction, out=args.out,
                         floor_window_s=args.floor_window, preallocate=not args.grow,
                         freshrec_env=env, plot=not args.no_plot)
    except ValueError as exc:
        print(f"freshrec bench soak: {exc}", file=sys.stderr)
        return 2
    print(f"soak: {cfg.events:,} events, {cfg.users:,} users, strategy {cfg.strategy}")
    result = run(cfg)
    command = "freshrec bench soak " + " ".join(sys.argv[3:])
    print(report(cfg, result, command.strip()))
    ok = accounting_ok(result) and result.flatness <= 1.10 and not result.error
    return 0 if ok else 1
