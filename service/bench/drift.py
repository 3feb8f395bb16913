"""``freshrec bench drift``: detection delay and false alarms of the drift detectors.

Two modes. With ``--real KIND:PATH`` (repeatable), real rating streams are replayed
through the pipeline, with nothing planted and with a change planted halfway, and
freshrec's detectors are compared with River's on the pipeline's own loss stream
(:mod:`service.bench.drift_real`). Without it, the synthetic scenarios below run.

Every detector is run on many seeded loss streams (exponential, as per-example losses are
skewed) with a known change: an abrupt jump of the mean (small and large), a gradual ramp,
and no change at all. For each detector and scenario the table gives the share of streams
where the change was detected, the delay in events from the change to the first detection
after it, and the false alarms (detections before the change, or anywhere in a stationary
stream) per million events. A second table compares throughput with River's per-event
detectors on the same stream. A bar chart is saved under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.bench import drift_real
from service.bench.measure import BarPanel, format_table, save_bar_panels
from service.drift.adwin import ADWIN
from service.drift.base import DriftDetector
from service.drift.config import DriftConfig
from service.drift.monitor import adwin_from_config, page_hinkley_from_config
from service.drift.page_hinkley import PageHinkley
from service.drift.psi import RollingPSI


@dataclass(frozen=True, slots=True)
class Scenario:
    """A family of streams: mean loss ``base`` that moves by ``shift`` from ``change_at``."""

    name: str
    shift: float
    ramp: int  # events over which the shift is reached (0: abrupt)


SCENARIOS = (
    Scenario("abrupt +50%", 0.25, 0),
    Scenario("abrupt +200%", 1.0, 0),
    Scenario("gradual +200% over 10k", 1.0, 10_000),
    Scenario("stationary", 0.0, 0),
)
BASE_MEAN = 0.5


def _detectors(cfg: DriftConfig) -> dict[str, Callable[[], DriftDetector]]:
    s = cfg.psi
    return {
        # Built as the monitor builds them, so the table measures what the service runs.
        "adwin": lambda: adwin_from_config(cfg.adwin),
        "page_hinkley": lambda: page_hinkley_from_config(cfg.page_hinkley),
        # River's defaults on raw loss values, to show what standardising buys.
        "page_hinkley_river_defaults": lambda: PageHinkley(mode="up"),
        "psi_on_loss": lambda: RollingPSI("numeric", s.n_bins, 2000, 8, 2, s.threshold),
    }


def stream(rng: np.random.Generator, n: int, change_at: int, sc: Scenario) -> np.ndarray:
    """Exponential losses with mean ``BASE_MEAN`` plus the scenario's shift from change_at."""
    x = rng.exponential(BASE_MEAN, n)
    if sc.shift:
        t = np.arange(n - change_at, dtype=np.float64)
        ramp = np.minimum(1.0, (t + 1) / sc.ramp) if sc.ramp else np.ones_like(t)
        x[change_at:] += sc.shift * ramp
    return x


@dataclass(slots=True)
class Row:
    detector: str
    scenario: str
    streams: int
    detected_pct: float
    median_delay: float
    p90_delay: float
    false_alarms_per_1m: float


def evaluate(
    n_streams: int, length: int, change_at: int, seed: int, cfg: DriftConfig
) -> list[Row]:
    rows: list[Row] = []
    for name, make in _detectors(cfg).items():
        for si, sc in enumerate(SCENARIOS):
            delays: list[int] = []
            false_alarms = 0
            pre_events = 0
            for k in range(n_streams):
                rng = np.random.default_rng([seed, si, k])
                x = stream(rng, length, change_at, sc)
                hits = make().update(x)
                if sc.shift:
                    false_alarms += int(np.sum(hits < change_at))
                    pre_events += change_at
                    after = hits[hits >= change_at]
                    if len(after):
                        delays.append(int(after[0] - change_at))
                else:
                    false_alarms += len(hits)
                    pre_events += length
            d = np.asarray(delays, dtype=np.float64)
            rows.append(
                Row(
                    detector=name,
                    scenario=sc.name,
                    streams=n_streams,
                    detected_pct=100.0 * len(d) / n_streams if sc.shift else float("nan"),
                    median_delay=float(np.median(d)) if len(d) else float("nan"),
                    p90_delay=float(np.percentile(d, 90)) if len(d) else float("nan"),
                    false_alarms_per_1m=1e6 * false_alarms / max(pre_events, 1),
                )
            )
    return rows


def throughput(n: int, seed: int) -> list[list[Any]]:
    """Events per second: freshrec's batch kernels vs River's per-event update loop."""
    x = np.random.default_rng(seed).exponential(BASE_MEAN, n)
    out: list[list[Any]] = []
    ours = {"adwin": ADWIN, "page_hinkley": PageHinkley}
    for name, cls in ours.items():
        cls().update(x[:100])  # compile (or load the cached kernel) outside the timing
        t0 = time.perf_counter()
        cls().update(x)
        ours_eps = n / (time.perf_counter() - t0)
        river_eps = float("nan")
        try:
            from river import drift as river_drift

            ref = river_drift.ADWIN() if name == "adwin" else river_drift.PageHinkley()
            m = min(n, 200_000)
            values = x[:m].tolist()
            t0 = time.perf_counter()
            for v in values:
                ref.update(v)
            river_eps = m / (time.perf_counter() - t0)
        except ImportError:
            pass
        out.append([name, ours_eps, river_eps, ours_eps / river_eps])
    return out


def _main(args: argparse.Namespace) -> int:
    if args.real:
        return drift_real.main(args)
    cfg = DriftConfig.model_validate({})
    n_streams = args.streams or (400 if args.full else 100)
    length = args.length or (200_000 if args.full else 40_000)
    change_at = length // 2
    t0 = time.perf_counter()
    rows = evaluate(n_streams, length, change_at, args.seed, cfg)
    tp = throughput(2_000_000 if args.full else 500_000, args.seed)
    elapsed = time.perf_counter() - t0

    headers = ["detector", "scenario", "streams", "detected %", "median delay",
               "p90 delay", "false alarms / 1M ev"]
    print(f"Drift detection on {n_streams} seeded streams of {length:,} exponential losses "
          f"(mean {BASE_MEAN}), change at event {change_at:,}; delays in events.\n")
    print(format_table(headers, [[r.detector, r.scenario, r.streams, r.detected_pct,
                                  r.median_delay, r.p90_delay, r.false_alarms_per_1m]
                                 for r in rows]))
    print("\nThroughput, events/s (freshrec: one batch call; River: one update per event)\n")
    print(format_table(["detector", "freshrec", "river", "speedup"], tp))
    print(f"\n({elapsed:.1f} s)")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.json").write_text(json.dumps(
        {"streams": n_streams, "length": length, "change_at": change_at, "seed": args.seed,
         "rows": [asdict(r) for r in rows],
         "throughput": [dict(zip(["detector", "freshrec_eps", "river_eps", "speedup"], t,
                                 strict=True)) for t in tp]},
        indent=2, default=float))
    if not args.no_plot:
        panels = []
        for sc in SCENARIOS[:-1]:
            sel = [r for r in rows if r.scenario == sc.name]
            panels.append(BarPanel(
                title=f"median delay, {sc.name} (events)",
                values={r.detector: r.median_delay for r in sel},
                better="lower",
                extra={r.detector: r.p90_delay for r in sel},
                label="median", extra_label="p90",
            ))
        panels.append(BarPanel(
            title="false alarms per 1M stationary events",
            values={r.detector: r.false_alarms_per_1m for r in rows
                    if r.scenario == "stationary"},
            better="lower",
        ))
        path = save_bar_panels(out / "drift.png", "freshrec drift detectors", panels)
        print(f"plot: {path}")
    return 0


_DESCRIPTION = """\
Detection delay and false alarms of the drift detectors, in one of two modes.

Real streams (--real KIND:PATH, repeatable): a ratings file is read in time order and
replayed through the Pipeline as events, once with nothing planted and once per planted
change (item ids permuted from halfway on; half the users rating on the reversed scale
from halfway on). The pipeline's per-example progressive loss, with both loss detectors
in 'alert' mode, is fed to freshrec's ADWIN and Page-Hinkley (the run's settings: the
service's defaults unless --settings says otherwise) and to River's drift.ADWIN() and
drift.PageHinkley() with River's defaults; the pipeline's PSI detectors get a row each,
and freshrec-any is the first detection of any freshrec detector. The table gives, per
stream and detector, false alarms per million events (nothing planted, or before the
change), the delay from the change to the first detection after it, and whether it was
missed. Each stream is replayed again with the 'adapt' and 'reset' reactions, and a
second table gives the progressive RMSE of each reaction next to alert's. A third
table gives the minutes the shipped alert rules (FreshrecDriftDetected,
FreshrecLossRegression) fire when promtool evaluates them on the series the service
would export, one sample a minute (needs promtool on PATH). Written under --out as
drift-real.md, drift-real.json and drift-real.png.

Synthetic scenarios (no --real): seeded exponential loss streams with an abrupt jump,
a gradual ramp or no change; detection rate, median and p90 delay, false alarms, and
throughput against River's per-event detectors (drift.json, drift.png).
"""

_EPILOG = """\
real kinds (--real KIND:PATH):
  movielens   u.data, ratings.dat or ratings.csv (timestamps in seconds)
  jester      the long Jester file, user_id,joke_id,rating on -10..10 (no timestamps:
              file order, 1 s apart; the decoder's rating range is set to -10..10)
  csv, jsonl  any ratings file, through --columns user=..,item=..,timestamp=..,value=..

examples:
  freshrec bench drift
  freshrec bench drift --real movielens:ml-100k/u.data \\
      --real jester:jester-1/jester_ratings_long.csv --out bench-results/drift
  freshrec bench drift --real movielens:u.data --plants none,invert --reactions alert \\
      --settings drift.adwin.min_rise=0
"""


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "drift",
        help="detection delay and false alarms of the drift detectors (synthetic or real)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synthetic = p.add_argument_group("synthetic scenarios (without --real)")
    synthetic.add_argument("--streams", type=int,
                           help="streams per scenario (default 100; --full 400)")
    synthetic.add_argument("--length", type=int,
                           help="events per stream (default 40000; --full 200000)")
    synthetic.add_argument("--full", action="store_true",
                           help="the bigger run (several minutes)")
    real = p.add_argument_group("real streams")
    drift_real.add_arguments(real)
    p.add_argument("--seed", type=int, default=0,
                   help="base seed of the synthetic streams, and of the plants' draws")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="folder for the tables and plots (default: bench-results)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=_main)
