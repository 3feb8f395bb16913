"""``freshrec bench e2e``: freshrec against the loops teams write instead, on a real broker.

The same generated ratings are produced once to a fresh topic (one partition). Then each
contender runs in its own process, with its own consumer group reading from the
beginning, in two phases (see :mod:`service.bench.baselines.protocol`):

* **backlog** — learn the pre-produced events as fast as possible: events/s from topic to
  applied, CPU seconds per million events and the progressive RMSE (predict before learn)
  over the first ``--events`` offsets, which every contender sees identically;
* **live** — the driver publishes at a steady ``--rate`` to the same topic while the
  contender consumes: freshness is the time from each message's Kafka timestamp (set by
  the producer) to the moment the model had learned from it, sampled on every
  ``--sample-every``-th offset, p50 and p99 after ``--warmup-seconds``.

Peak RSS and total CPU come from ``wait4`` on the contender's process, so they are exact and
include everything the process needed (imports, Kafka client, model).

Contenders: freshrec's real service (``Job``) in micro-batch and per-event mode with the
full pipeline on, the scikit-learn tutorial loop and a River ``BiasedMF`` loop
(:mod:`service.bench.baselines`). Ratios are to the faster baseline of the run.

Example
-------
``freshrec bench e2e`` (defaults: 200k events, 20k events/s live for 10 s; about 2 minutes)
``freshrec bench e2e --quick`` (seconds; what the integration test runs)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BASELINES = ("sklearn-tutorial", "river-biasedmf")
FRESHREC = {"freshrec-micro-batch": "micro_batch", "freshrec-per-event": "per_event"}
DEFAULT_CONTENDERS = ("freshrec-micro-batch", "freshrec-per-event", *BASELINES)


@dataclass(slots=True)
class E2EConfig:
    """Parameters of one benchmark run (the command-line options, validated)."""

    bootstrap: str = "127.0.0.1:19092"
    events: int = 200_000
    rate: float = 20_000.0
    live_seconds: float = 10.0
    warmup_seconds: float = 1.0
    sample_every: int = 10
    contenders: tuple[str, ...] = DEFAULT_CONTENDERS
    out: Path = Path("bench-results")
    n_users: int = 50_000
    n_items: int = 5_000
    seed: int = 7
    freshrec_env: dict[str, str] = field(default_factory=dict)
    keep_topic: bool = False
    plot: bool = True
    timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if self.events < 100:
            raise ValueError(f"--events must be at least 100, got {self.events}")
        if self.rate <= 0 or self.live_seconds <= 0:
            raise ValueError("--rate and --live-seconds must be positive")
        if not 0 <= self.warmup_seconds < self.live_seconds:
            raise ValueError("--warmup-seconds must be in [0, --live-seconds)")
        unknown = [c for c in self.contenders if c not in (*FRESHREC, *BASELINES)]
        if unknown:
            raise ValueError(
                f"unknown contender(s) {unknown}; choose from {[*FRESHREC, *BASELINES]}"
            )
        if not self.contenders:
            raise ValueError("--contenders must name at least one contender")

    @classmethod
    def quick(cls, **overrides: Any) -> E2EConfig:
        """A run of a few seconds per contender: for the smoke test and a first look."""
        base: dict[str, Any] = {"events": 20_000, "rate": 5_000.0, "live_seconds": 3.0,
                                "warmup_seconds": 0.5, "n_users": 5_000, "n_items": 1_000}
        base.update(overrides)
        return cls(**base)


@dataclass(slots=True)
class ContenderResult:
    """Every figure measured for one contender (NaN when a phase did not complete)."""

    name: str
    error: str = ""
    events: int = 0
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    rmse: float = float("nan")
    fresh_p50_ms: float = float("nan")
    fresh_p99_ms: float = float("nan")
    fresh_n: int = 0
    live_rate: float = float("nan")
    peak_rss_bytes: int = 0
    cpu_seconds_total: float = float("nan")
    produced: int = 0
    applied: int = 0
    #: (seconds into the live phase, freshness ms) of every kept sample, for the plot.
    fresh_series: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else float("nan")


# -- the topic --------------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str, timeout_s: float = 15.0) -> None:
    """A fresh one-partition topic (one partition: offsets are stream positions)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)],
                                  operation_timeout=timeout_s)
    futures[topic].result(timeout=timeout_s)
    # The controller answers before the partition has a leader in the broker's metadata;
    # producing before that only adds retries, but it would be timed as our latency.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if meta is not None and meta.error is None and all(
            p.leader >= 0 for p in meta.partitions.values()
        ) and meta.partitions:
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {topic} has no partition leader after {timeout_s:.0f} s")


def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Best effort: a benchmark should not leave its topics behind on a shared broker."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [t for t in topics if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=15).values():
            # Cleanup must never hide the results.
            with contextlib.suppress(Exception):
                future.result(timeout=15)


def high_watermark(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "freshrec-bench-watermark"})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high)
    finally:
        c.close()


def live_producer(bootstrap: str) -> Any:
    """A producer tuned like a product service's: small linger, so events leave at once."""
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 2,
                     "enable.idempotence": True, "queue.buffering.max.messages": 500_000})


# -- one contender ------------------------------------------------------------------------


class Worker:
    """One contender process, its reports and its stderr log."""

    def __init__(self, name: str, spec_json: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.bench.baselines", name, spec_json],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=env, text=True, bufsize=1,
        )
        threading.Thread(target=self._read, name=f"{name}-reports", daemon=True).start()

    def _read(self) -> None:
        from service.bench.baselines.protocol import parse_report

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            report = parse_report(line)
            if report is not None:
                self.reports.put(report)
        self.reports.put({"event": "exited"})

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The next report, which must be ``event``; raises with the log tail otherwise."""
        try:
            report = self.reports.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no {event!r} within {timeout_s:.0f} s") from None
        if report["event"] != event:
            what = "the process exited" if report["event"] == "exited" else report["event"]
            raise RuntimeError(f"{what} before {event!r} (log: {self.log_path})")
        return report

    def send(self, **message: Any) -> None:
        import orjson

        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(message).decode() + "\n")
        self.proc.stdin.flush()

    def log_tail(self, n: int = 15) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def close(self) -> None:
        self._log.close()


def contender_env(name: str, cfg: E2EConfig, topic: str, group: str,
                  data_dir: Path) -> dict[str, str]:
    """The environment of a contender: ours, minus any inherited ``FRESHREC_*`` setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env["PYTHONUNBUFFERED"] = "1"
    if name in FRESHREC:
        env.update({
            "FRESHREC_KAFKA__BOOTSTRAP_SERVERS": cfg.bootstrap,
            "FRESHREC_KAFKA__TOPIC": topic,
            "FRESHREC_KAFKA__GROUP_ID": group,
            "FRESHREC_KAFKA__DLQ_TOPIC": f"{topic}.{name}.dlq",
            "FRESHREC_LEARNER__STRATEGY": FRESHREC[name],
            "FRESHREC_STORAGE__URL": f"file://{data_dir / name}",
            "FRESHREC_HTTP__PORT": "0",
            "FRESHREC_LOG_LEVEL": "WARNING",
        })
        env.update(cfg.freshrec_env)
    return env


def run_contender(name: str, cfg: E2EConfig, topic: str, stream: Any,
                  data_dir: Path, run_id: str) -> ContenderResult:
    """Both phases for one contender; failures become a result with ``error`` set."""
    from service.bench.baselines.protocol import WorkerSpec
    from service.bench.measure import summarize_ms, wait_with_rusage
    from service.demo.publish import publish

    result = ContenderResult(name)
    group = f"bench-{run_id}-{name}"
    backlog_end = high_watermark(cfg.bootstrap, topic)
    spec = WorkerSpec(cfg.bootstrap, topic, group, measure_events=cfg.events,
                      backlog_end=backlog_end, sample_every=cfg.sample_every)
    worker = Worker(name, spec.to_json(), contender_env(name, cfg, topic, group, data_dir),
                    cfg.out / "logs" / f"{run_id}-{name}.log")
    try:
        # Startup (imports, compilation, group join) is not timed; only a hang is.
        backlog = worker.expect("backlog_done", cfg.timeout_s)
        result.events = int(backlog["events"])
        result.seconds = float(backlog["seconds"])
        result.cpu_seconds = float(backlog["cpu_seconds"])
        result.rmse = float(backlog["rmse"])
        catch_up_s = cfg.timeout_s + (backlog_end - cfg.events) / 5_000
        worker.expect("caught_up", catch_up_s)

        n_live = int(cfg.rate * cfg.live_seconds)
        values = live_values(stream, n_live, cfg.rate)
        producer = live_producer(cfg.bootstrap)
        live_started_ms = time.time() * 1000.0
        t0 = time.perf_counter()
        publish(producer, topic, values, rate=cfg.rate)
        result.live_rate = n_live / (time.perf_counter() - t0)
        result.produced = high_watermark(cfg.bootstrap, topic)
        worker.send(stop_at=result.produced)
        done = worker.expect("done", cfg.timeout_s)
        result.applied = int(done.get("applied", done["position"]))
        warm = live_started_ms + cfg.warmup_seconds * 1000.0
        kept = [(ts, ms) for ts, ms in done["fresh"] if ts >= warm]
        fresh = [ms for _, ms in kept]
        result.fresh_series = [((ts - live_started_ms) / 1000.0, ms) for ts, ms in kept]
        stats = summarize_ms(fresh)
        result.fresh_p50_ms, result.fresh_p99_ms = stats["p50"], stats["p99"]
        result.fresh_n = len(fresh)
        result.peak_rss_bytes = int(done["peak_rss_bytes"])
        usage = wait_with_rusage(worker.proc, timeout_s=cfg.timeout_s)
        result.cpu_seconds_total = usage.cpu_seconds
        if usage.returncode != 0:
            result.error = f"exit code {usage.returncode}"
    except (TimeoutError, RuntimeError, ValueError) as exc:
        result.error = str(exc).split(" (log: ")[0]
        print(f"{name}: {exc}; its log ends with:\n{worker.log_tail()}", file=sys.stderr)
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
    finally:
        worker.close()
    return result


def encoded(stream: Any, n: int, *, start_ms: int, events_per_second: float = 1000.0,
            chunk: int = 20_000) -> list[bytes]:
    """The stream's next ``n`` encoded events, generated a chunk at a time.

    The generator builds a dict per event before encoding it; chunking keeps those
    transient dicts (several times the size of the bytes) from piling up in the driver.
    """
    out: list[bytes] = []
    while len(out) < n:
        out.extend(stream.encoded_events(min(chunk, n - len(out)), start_ms=start_ms,
                                         events_per_second=events_per_second))
    return out


def live_values(stream: Any, n: int, rate: float) -> list[bytes]:
    """The stream's next ``n`` events, their event times starting now at ``rate``/s."""
    now_ms = int(time.time() * 1000)
    # The generator stamps start_ms + position/rate: shift so the first one is "now".
    start_ms = now_ms - int(stream.position * 1000.0 / rate)
    return encoded(stream, n, start_ms=start_ms, events_per_second=rate)


# -- the whole run ------------------------------------------------------------------------


def run(cfg: E2EConfig, *, topic: str | None = None, log: Any = print) -> list[ContenderResult]:
    """Produce the backlog once, run every contender, return their results.

    ``topic``: an existing, empty, one-partition topic to use (and leave in place);
    by default a fresh one is created and deleted at the end.
    """
    from service.demo.generator import StreamSpec, SyntheticStream
    from service.demo.publish import make_producer, publish

    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    owned = topic is None
    if topic is None:
        topic = f"freshrec-bench-e2e-{run_id}"
        create_topic(cfg.bootstrap, topic)
    elif high_watermark(cfg.bootstrap, topic) != 0:
        raise ValueError(f"topic {topic} is not empty: the benchmark needs a fresh topic")
    stream = SyntheticStream(StreamSpec(n_users=cfg.n_users, n_items=cfg.n_items, seed=cfg.seed))
    t0 = time.perf_counter()
    start_ms = int(time.time() * 1000) - cfg.events  # 1000 events/s of event time, ends now
    backlog = encoded(stream, cfg.events, start_ms=start_ms)
    producer = make_producer(cfg.bootstrap)
    publish(producer, topic, backlog)
    del backlog
    log(f"produced {cfg.events:,} events to {topic} in {time.perf_counter() - t0:.1f} s")
    results: list[ContenderResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="freshrec-bench-") as data_dir:
            for name in cfg.contenders:
                log(f"running {name} ...")
                r = run_contender(name, cfg, topic, stream, Path(data_dir), run_id)
                results.append(r)
                log(f"  {name}: {r.events_per_s:,.0f} events/s, freshness p99 "
                    f"{r.fresh_p99_ms:.1f} ms{'  ERROR: ' + r.error if r.error else ''}")
    finally:
        if not cfg.keep_topic:
            dlqs = [f"{topic}.{n}.dlq" for n in cfg.contenders if n in FRESHREC]
            delete_topics(cfg.bootstrap, [topic, *dlqs] if owned else dlqs)
    return results


def faster_baseline(results: Sequence[ContenderResult]) -> ContenderResult | None:
    ok = [r for r in results if r.name in BASELINES and not r.error and r.seconds > 0]
    return max(ok, key=lambda r: r.events_per_s, default=None)


TABLE_HEADERS = ("contender", "events/s", "x base", "fresh p50 ms", "fresh p99 ms",
                 "peak RSS MB", "CPU s/M ev", "RMSE", "applied/produced")


def table_rows(results: Sequence[ContenderResult]) -> list[list[Any]]:
    """One row per contender; ``x base`` is throughput over the faster baseline's."""
    base = faster_baseline(results)
    rows: list[list[Any]] = []
    for r in results:
        ratio = r.events_per_s / base.events_per_s if base else float("nan")
        name = r.name + (" *" if base is r else "") + (f" [{r.error}]" if r.error else "")
        rows.append([name, r.events_per_s, f"{ratio:.2f}x", r.fresh_p50_ms, r.fresh_p99_ms,
                     r.peak_rss_bytes / 2**20, r.cpu_s_per_million, r.rmse,
                     f"{r.applied:,}/{r.produced:,}"])
    return rows


def report(cfg: E2EConfig, results: Sequence[ContenderResult], command: str) -> str:
    """Print-ready table, and the markdown, JSON and plot files under ``cfg.out``."""
    import orjson

    from service.bench.measure import BarPanel, format_markdown_table, format_table

    rows = table_rows(results)
    text = format_table(TABLE_HEADERS, rows)
    note = ("* = faster baseline; x base = events/s over its events/s. Freshness at a steady "
            f"{cfg.rate:,.0f} events/s offered for {cfg.live_seconds:g} s.")
    cfg.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    (cfg.out / "e2e.md").write_text(
        f"`{command}` on {stamp}\n\n{format_markdown_table(TABLE_HEADERS, rows)}\n\n{note}\n"
    )
    payload = {"command": command, "date": stamp, "config": {**asdict(cfg), "out": str(cfg.out)},
               "results": [{**asdict(r), "events_per_s": r.events_per_s,
                            "cpu_s_per_million": r.cpu_s_per_million} for r in results]}
    (cfg.out / "e2e.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2
                                                    | orjson.OPT_SERIALIZE_NUMPY))
    if cfg.plot:
        from service.bench.measure import save_bar_panels

        ok = [r for r in results if not r.error]
        save_bar_panels(cfg.out / "e2e.png", f"freshrec bench e2e ({stamp})", [
            BarPanel("events/s, topic to applied", {r.name: r.events_per_s for r in ok}),
            BarPanel("freshness ms", {r.name: r.fresh_p50_ms for r in ok}, better="lower",
                     extra={r.name: r.fresh_p99_ms for r in ok}, label="p50",
                     extra_label="p99"),
            BarPanel("peak RSS MB", {r.name: r.peak_rss_bytes / 2**20 for r in ok},
                     better="lower"),
            BarPanel("CPU s per million events", {r.name: r.cpu_s_per_million for r in ok},
                     better="lower"),
            BarPanel("progressive RMSE", {r.name: r.rmse for r in ok}, better="lower"),
        ])
        series = [r for r in ok if r.fresh_series]
        if series:
            from service.bench.measure import save_scatter_plot

            save_scatter_plot(
                cfg.out / "e2e-freshness.png",
                f"freshness of sampled live events at {cfg.rate:,.0f} events/s ({stamp})",
                {r.name: r.fresh_series for r in series},
                xlabel="seconds into the live phase", ylabel="ms from produce to learned",
            )
    return f"{text}\n{note}"


# -- profiling the hot path -------------------------------------------------------------------


def profile_pipeline(events: int = 200_000, batch_size: int = 5_000,
                     strategy: str = "micro_batch", top: int = 25) -> str:
    """cProfile of ``Pipeline.process`` on generated events, no broker: the hot path alone.

    The first batch is processed before profiling starts (numba compilation, first-touch
    allocations). Returns the throughput line and the functions with the most own time.
    """
    import cProfile
    import io
    import pstats

    from service.config import Settings
    from service.demo.generator import StreamSpec, SyntheticStream
    from service.runtime.pipeline import Pipeline

    settings = Settings(learner={"strategy": strategy})  # type: ignore[arg-type]
    pipeline = Pipeline(settings)
    stream = SyntheticStream(StreamSpec(n_users=50_000, n_items=5_000, seed=7))
    now_ms = int(time.time() * 1000)
    values = stream.encoded_events(events, start_ms=now_ms - events)
    batches = [values[i:i + batch_size] for i in range(0, len(values), batch_size)]
    pipeline.process(batches[0], now_ms=now_ms)
    profiler = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    profiler.enable()
    for batch in batches[1:]:
        pipeline.process(batch, now_ms=now_ms)
    profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = sum(len(b) for b in batches[1:])
    out = io.StringIO()
    out.write(f"Pipeline.process, strategy {strategy}, batches of {batch_size}: {n:,} events, "
              f"{n / wall:,.0f} events/s wall, {n / cpu:,.0f} events/s per CPU second "
              "(under cProfile, which slows Python-level code)\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# -- command line ---------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "e2e",
        help="end to end on the real broker: freshrec vs the River and scikit-learn loops",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    p.add_argument("--events", type=int, help="pre-produced events (default 200000)")
    p.add_argument("--rate", type=float, help="steady live rate, events/s (default 20000)")
    p.add_argument("--live-seconds", type=float, help="length of the live phase (default 10)")
    p.add_argument("--warmup-seconds", type=float,
                   help="live seconds left out of the freshness figures (default 1)")
    p.add_argument("--sample-every", type=int, default=10,
                   help="sample freshness on every Nth live offset")
    p.add_argument("--contenders", help=f"comma-separated subset of {','.join(DEFAULT_CONTENDERS)}")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="folder for the table, JSON, plot and logs")
    p.add_argument("--freshrec-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra FRESHREC_* setting for the freshrec contenders (repeatable)")
    p.add_argument("--quick", action="store_true", help="a few seconds per contender")
    p.add_argument("--keep-topic", action="store_true", help="do not delete the topics")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--profile", action="store_true",
                   help="instead: cProfile Pipeline.process on --events generated events "
                        "(no broker) and print the top costs")
    p.set_defaults(func=_main)


def config_from_args(args: argparse.Namespace) -> E2EConfig:
    overrides: dict[str, Any] = {"bootstrap": args.bootstrap, "out": args.out,
                                 "sample_every": args.sample_every,
                                 "keep_topic": args.keep_topic, "plot": not args.no_plot}
    for name in ("events", "rate", "live_seconds", "warmup_seconds"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.contenders:
        overrides["contenders"] = tuple(c.strip() for c in args.contenders.split(",") if c)
    env: dict[str, str] = {}
    for item in args.freshrec_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("FRESHREC_"):
            raise ValueError(f"--freshrec-env takes FRESHREC_NAME=VALUE, got {item!r}")
        env[key] = value
    overrides["freshrec_env"] = env
    return E2EConfig.quick(**overrides) if args.quick else E2EConfig(**overrides)


def _main(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"freshrec bench e2e: {exc}", file=sys.stderr)
        return 2
    if args.profile:
        strategy = "per_event" if cfg.contenders == ("freshrec-per-event",) else "micro_batch"
        print(profile_pipeline(cfg.events, strategy=strategy))
        return 0
    results = run(cfg)
    command = "freshrec bench e2e " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else \
        "freshrec bench e2e"
    print(report(cfg, results, command.strip()))
    print(f"saved {cfg.out / 'e2e.md'}, {cfg.out / 'e2e.json'}"
          + (f", {cfg.out / 'e2e.png'}" if cfg.plot else ""))
    return 1 if any(r.error for r in results) else 0
