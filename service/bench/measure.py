"""Measurement helpers shared by the benchmarks: RSS, CPU time, percentiles, tables, plots.

Benchmarks compare processes, so everything here measures *another* process by its pid
(or a child by waiting on it) through ``/proc`` and ``wait4``: no third-party dependency,
and the measuring process's own memory never pollutes the figures.

Example
-------
>>> summarize_ms([1.0, 2.0, 3.0, 4.0, 100.0])["p50"]
3.0
>>> print(format_table(["name", "n"], [["a", 1], ["bb", 22]]))
name   n
----  --
a      1
bb    22
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- one process, right now -----------------------------------------------------------


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process) in bytes, or 0 if it is gone.

    Read from ``/proc/<pid>/statm``: cheap enough to sample every few milliseconds.
    """
    try:
        with open(f"/proc/{pid or os.getpid()}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


def peak_rss_bytes(pid: int | None = None) -> int:
    """High-water mark of the resident set of ``pid`` since it started its program.

    ``VmHWM`` from ``/proc/<pid>/status``, or 0 if the process is gone. Unlike the
    ``ru_maxrss`` that ``wait4`` returns, it does not include the memory the child
    inherited from its parent between ``fork`` and ``exec``: a benchmark driver holding a
    large dataset would otherwise be counted as every contender's peak.
    """
    try:
        with open(f"/proc/{pid or os.getpid()}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by every thread of ``pid`` (0.0 if gone).

    Counts librdkafka's background threads too, which ``time.process_time`` of a worker
    also does: a Kafka client's cost is part of the loop's cost.
    """
    try:
        with open(f"/proc/{pid or os.getpid()}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLK_TCK


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """What a finished child process used, from ``wait4``: exact, not sampled.

    There is deliberately no peak RSS here: ``wait4``'s ``ru_maxrss`` counts the parent's
    memory that the child held between ``fork`` and ``exec``. Use :func:`peak_rss_bytes`
    on the running child (or have it report its own) instead.
    """

    returncode: int
    cpu_seconds: float


def wait_with_rusage(proc: subprocess.Popen[Any], timeout_s: float | None = None) -> ResourceUsage:
    """Wait for ``proc`` and return its exit code and CPU seconds (user + system).

    ``Popen.wait`` discards the child's resource usage; ``os.wait4`` returns it. The
    ``returncode`` of ``proc`` is set as ``wait`` would set it, so the object stays usable.
    Raises ``TimeoutError`` (and leaves the child running) if it does not exit in time.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        flags = 0 if deadline is None else os.WNOHANG
        pid, status, usage = os.wait4(proc.pid, flags)
        if pid == proc.pid:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"process {proc.pid} did not exit within {timeout_s} s")
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    return ResourceUsage(code, usage.ru_utime + usage.ru_stime)


class RssSampler:
    """Samples the RSS (and CPU seconds) of a process on a background thread.

    Parameters
    ----------
    pid
        The process to watch.
    interval_s
        Time between samples. Sampling reads two small ``/proc`` files, so 10 ms is fine.

    Example
    -------
    >>> with RssSampler(os.getpid(), interval_s=0.01) as s:
    ...     time.sleep(0.05)
    >>> len(s.samples) >= 2 and s.peak_bytes > 0
    True
    """

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.pid = pid
        self.interval_s = interval_s
        self.t0 = time.monotonic()
        #: (seconds since start, RSS bytes, CPU seconds) per sample.
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> int:
        """Take one sample now (also usable without the thread); returns the RSS."""
        rss = rss_bytes(self.pid)
        if rss:
            self.samples.append((time.monotonic() - self.t0, rss, cpu_seconds(self.pid)))
        return rss

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def peak_bytes(self) -> int:
        return max((s[1] for s in self.samples), default=0)


# -- statistics ----------------------------------------------------------------------


def summarize_ms(samples: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Count, p50, p90, p99 and max of latency samples (NaN for an empty list).

    Percentiles use numpy's default linear interpolation, so they are comparable between
    contenders summarised by this same function.
    """
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        nan = float("nan")
        return {"n": 0.0, "p50": nan, "p90": nan, "p99": nan, "max": nan}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": float(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(a.max())}


def flatness(values: Sequence[float] | np.ndarray, warmup_fraction: float) -> float:
    """max/min of ``values`` after dropping the first ``warmup_fraction`` of them.

    1.0 is perfectly flat; 1.10 means the series moved within 10% after warm-up. NaN if
    fewer than two values remain.

    >>> flatness([10, 50, 100, 101, 105], warmup_fraction=0.4)
    1.05
    """
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    a = np.asarray(values, dtype=np.float64)
    rest = a[math.floor(len(a) * warmup_fraction):]
    if rest.size < 2 or rest.min() <= 0:
        return float("nan")
    return float(rest.max() / rest.min())


# -- Prometheus text ---------------------------------------------------------------------


def scrape_metrics(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Fetch a Prometheus ``/metrics`` page; see :func:`sum_metric_samples`."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        text = resp.read().decode("utf-8")
    return sum_metric_samples(text)


def sum_metric_samples(text: str) -> dict[str, float]:
    """Every sample name in a Prometheus exposition, summed over its label sets.

    ``freshrec_events_rejected_total{reason="..."}`` lines become one total under
    ``freshrec_events_rejected_total``: benchmarks check totals, not breakdowns.

    >>> sum_metric_samples('a_total{r="x"} 2\\na_total{r="y"} 3\\n# HELP b b\\nb 1.5\\n')
    {'a_total': 5.0, 'b': 1.5}
    """
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


# -- presentation ------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                          strict=True)]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def format_markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The same table as GitHub markdown, for pasting into ``docs/performance.md``."""
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


@dataclass(slots=True)
class BarPanel:
    """One panel of a bar chart: a value per contender."""

    title: str
    values: Mapping[str, float]
    better: str = "higher"  # or "lower": written under the title so nobody has to guess
    extra: Mapping[str, float] = field(default_factory=dict)  # a second bar (e.g. p99)
    extra_label: str = ""
    label: str = ""
    # Written upright at the foot of a bar whose value is NaN, so that "no value" (a
    # change missed) is not read as a bar of height zero.
    missing_text: str = ""


def save_bar_panels(path: Path, title: str, panels: Sequence[BarPanel]) -> Path:
    """Save a grid of bar charts (one per figure) as a PNG, with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        names = list(panel.values)
        x = np.arange(len(names))
        width = 0.4 if panel.extra else 0.7
        series = [(x - (width / 2 if panel.extra else 0), [panel.values[n] for n in names],
                   panel.label)]
        if panel.extra:
            series.append((x + width / 2, [panel.extra.get(n, np.nan) for n in names],
                           panel.extra_label))
        for at, heights, label in series:
            bars = ax.bar(at, heights, width, label=label or None)
            if panel.missing_text:
                for xi, h in zip(at, heights, strict=True):
                    if h != h:  # NaN
                        ax.text(xi, 0, panel.missing_text, rotation=90, ha="center",
                                va="bottom", fontsize=7, color=bars.patches[0].get_facecolor())
        if panel.extra:
            ax.legend(fontsize=8)
        if len(names) > 5:  # long names: slanted, each ending under its own bar
            ax.set_xticks(x, names, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
        else:
            ax.set_xticks(x, names, rotation=15, fontsize=8)
        ax.set_title(f"{panel.title} ({panel.better} is better)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.3 / (3.6 * rows)))  # room for the title
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_line_plot(
    path: Path,
    title: str,
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    vline: float | None = None,
    vline_label: str = "",
) -> Path:
    """Save one line chart (several series over the same x) as a PNG, Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, y in ys.items():
        ax.plot(x, y, label=name)
    if vline is not None:
        ax.axvline(vline, color="grey", linestyle="--", label=vline_label or None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_scatter_plot(
    path: Path,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str,
    log_y: bool = True,
) -> Path:
    """Save (x, y) points of several series on one chart, Agg backend; log y by default
    so that rare spikes and the typical value are both visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, points in series.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=3, alpha=0.5, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, markerscale=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
