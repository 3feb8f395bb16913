"""The shared measurement helpers of the benchmarks: RSS, CPU, percentiles, tables, plots."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.bench.measure import (
    BarPanel,
    RssSampler,
    cpu_seconds,
    flatness,
    format_markdown_table,
    format_table,
    peak_rss_bytes,
    rss_bytes,
    save_bar_panels,
    save_line_plot,
    save_scatter_plot,
    sum_metric_samples,
    summarize_ms,
    wait_with_rusage,
)

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=200))
def test_summary_matches_numpy_percentiles(samples: list[float]) -> None:
    s = summarize_ms(samples)
    assert s["n"] == len(samples)
    assert s["p50"] == pytest.approx(np.percentile(samples, 50))
    assert s["p99"] == pytest.approx(np.percentile(samples, 99))
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["max"] == max(samples)


def test_summary_of_nothing_is_nan_not_zero() -> None:
    s = summarize_ms([])
    assert s["n"] == 0 and math.isnan(s["p50"]) and math.isnan(s["p99"])


@given(st.lists(st.floats(min_value=1, max_value=1e9), min_size=2, max_size=100),
       st.floats(min_value=0.01, max_value=100))
def test_flatness_is_scale_free_and_at_least_one(values: list[float], scale: float) -> None:
    f = flatness(values, 0.0)
    assert f >= 1.0
    assert flatness([v * scale for v in values], 0.0) == pytest.approx(f)


def test_flatness_ignores_the_warmup_only() -> None:
    growth_then_flat = [10, 20, 40, 80, 100, 104, 101, 102]
    assert flatness(growth_then_flat, 0.5) == pytest.approx(1.04)
    assert flatness(growth_then_flat, 0.0) == pytest.approx(10.4)
    assert math.isnan(flatness([5.0], 0.0))
    with pytest.raises(ValueError, match="warmup_fraction"):
        flatness([1, 2], 1.0)


def test_rss_of_a_process_follows_allocation() -> None:
    # A child of its own: in this long-lived test process the allocator may reuse freed
    # memory, and a new block need not raise RSS at all.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; print('ready', flush=True); sys.stdin.readline(); "
         "b = bytearray(b'x' * (64 * 2**20)); print('grown', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        before = rss_bytes(child.pid)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "grown"
        after = rss_bytes(child.pid)
    finally:
        child.kill()
        child.wait()
    assert after - before > 48 * 2**20
    assert rss_bytes(2**22 + 12345) == 0  # no such pid: 0, not an exception


def test_cpu_seconds_counts_work_not_sleep() -> None:
    start = cpu_seconds()
    time.sleep(0.15)
    slept = cpu_seconds() - start
    # Spin for 0.25 s of this process's CPU time, not of wall time: on a loaded machine a
    # wall-clock spin may get only a fraction of a core.
    t_end = time.process_time() + 0.25
    while time.process_time() < t_end:
        pass
    worked = cpu_seconds() - start - slept
    assert slept < 0.1
    assert worked > 0.15


def test_wait_with_rusage_reports_exit_code_and_cpu() -> None:
    code = (
        "import sys, time\n"
        "end = time.process_time() + 0.2\n"
        "while time.process_time() < end: pass\n"
        "sys.exit(3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    usage = wait_with_rusage(proc, timeout_s=60)
    assert usage.returncode == 3 == proc.returncode
    assert usage.cpu_seconds >= 0.2


def test_peak_rss_is_the_childs_own_not_the_parents() -> None:
    ballast = np.ones(128 * 2**20 // 8)  # the parent's memory must not count
    code = (
        "import numpy as np, sys, time\n"
        "a = np.ones(64 * 2**20 // 8)\n"  # 64 MiB touched, then freed: a peak, not final
        "del a\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        peak, now = peak_rss_bytes(proc.pid), rss_bytes(proc.pid)
        assert peak > 64 * 2**20 > now - 8 * 2**20
        assert peak < 64 * 2**20 + ballast.nbytes  # nothing of the parent's 128 MiB
    finally:
        proc.kill()
        wait_with_rusage(proc)
    assert peak_rss_bytes(2**22 + 12345) == 0


def test_wait_with_rusage_times_out_and_leaves_the_child_running() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(TimeoutError):
            wait_with_rusage(proc, timeout_s=0.1)
        assert proc.poll() is None
    finally:
        proc.kill()
        wait_with_rusage(proc)


def test_sampler_records_a_growing_process() -> None:
    # A child process of its own: in this long-lived test process, freed memory is
    # reused by the allocator and a new block may not raise RSS at all.
    grower = subprocess.Popen([
        sys.executable, "-c",
        "import time; time.sleep(0.5); b = bytearray(b'x' * (64 * 2**20)); time.sleep(30)",
    ])
    try:
        with RssSampler(grower.pid, interval_s=0.01) as sampler:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if sampler.samples and (
                    sampler.peak_bytes - sampler.samples[0][1] > 48 * 2**20
                ):
                    break
                time.sleep(0.02)
    finally:
        grower.kill()
        grower.wait()
    assert len(sampler.samples) >= 3
    times = [t for t, _, _ in sampler.samples]
    assert times == sorted(times)
    assert sampler.peak_bytes - sampler.samples[0][1] > 48 * 2**20
    with pytest.raises(ValueError, match="interval_s"):
        RssSampler(os.getpid(), interval_s=0)


def test_metric_samples_are_summed_over_labels() -> None:
    text = (
        "# HELP x_total things\n# TYPE x_total counter\n"
        'x_total{reason="a"} 2.0\nx_total{reason="b"} 5.0\n'
        "# TYPE g gauge\ng 1.5\n"
    )
    assert sum_metric_samples(text) == {"x_total": 7.0, "g": 1.5}


def test_table_has_every_row_and_aligned_columns() -> None:
    rows = [["alpha", 1234567.0, 0.5], ["b", 2.0, float("nan")]]
    lines = format_table(["name", "events/s", "ratio"], rows).splitlines()
    assert lines[0].split() == ["name", "events/s", "ratio"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("alpha") and "1,234,567" in lines[2]
    assert lines[3].rstrip().endswith("-")  # NaN shows as '-', not 'nan'
    # Right-aligned numbers: the numeric columns end at the same place.
    column_ends = [m.end() for m in re.finditer(r"-+", lines[1])]
    assert lines[2].index("1,234,567") + len("1,234,567") == column_ends[1]
    assert lines[3].index("2.00") + len("2.00") == column_ends[1]
    md = format_markdown_table(["name", "n"], [["a", 1]]).splitlines()
    assert md == ["| name | n |", "|---|---:|", "| a | 1 |"]


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    bars = save_bar_panels(tmp_path / "a" / "bars.png", "t", [
        BarPanel("speed", {"x": 1.0, "y": 2.0}),
        BarPanel("latency", {"x": 1.0}, better="lower", extra={"x": 3.0}, label="p50",
                 extra_label="p99"),
        BarPanel("rss", {"x": 1.0}, better="lower"),
    ])
    line = save_line_plot(tmp_path / "line.png", "t", [0, 1, 2], {"rss": [1, 2, 2]},
                          xlabel="s", ylabel="MB", vline=1.0, vline_label="warm-up")
    scatter = save_scatter_plot(tmp_path / "s.png", "t", {"a": [(0.0, 1.0), (1.0, 30.0)],
                                                          "empty": []},
                                xlabel="s", ylabel="ms")
    for path in (bars, line, scatter):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@settings(max_examples=25)
@given(st.lists(st.lists(st.integers(-10**9, 10**9), min_size=3, max_size=3), min_size=1,
                max_size=5))
def test_table_never_loses_a_row(rows: list[list[int]]) -> None:
    lines = format_table(["a", "b", "c"], [[str(r[0]), r[1], r[2]] for r in rows]).splitlines()
    assert len(lines) == 2 + len(rows)
    for line, row in zip(lines[2:], rows, strict=True):
        assert line.startswith(str(row[0]))
        assert f"{row[2]:,}" in line
