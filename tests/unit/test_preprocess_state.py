"""Preprocessor state: exact restore at any cut point, and size proportional to use.

A restored preprocessor must produce bitwise the same examples, rejections, stats and
serving encoding as one that never stopped, whatever was in flight at the cut: ids being
counted for admission, rows evicted and recycled, dedup ids expiring, impressions pending.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.events.decode import decode_batch
from service.examples import ExampleBatch
from service.preprocess import PreprocessConfig, Preprocessor

NOW = 1_795_802_400_000
KINDS = ["impression", "impression", "impression", "click", "purchase", "rating"]
# Tiny bounds so that a few hundred events fill and churn every structure.
TIGHT = {
    "user_capacity": 6, "item_capacity": 5, "user_admit_after": 2, "item_admit_after": 1,
    "user_evict_after_ms": 400, "item_evict_after_ms": 900, "dedup_window_events": 40,
    "dedup_window_ms": 600, "max_pending": 16, "attribution_window_ms": 300,
    "feature_bits": 10, "crosses": ["item*context.device"], "holdout_fraction": 0.2,
    "allowed_lateness_ms": 10**9,
}


def message(i: int, kind: str, user: int, item: int, ts: int, device: str | None) -> bytes:
    event: dict[str, Any] = {"schema_version": 1, "event_id": f"e{i}", "event_type": kind,
                             "user_id": f"u{user}é", "item_id": f"i{item}", "timestamp": ts}
    if kind == "rating":
        event["value"] = 1.0 + (i % 9) / 2
    if device is not None:
        event["context"] = {"device": device, "position": i % 7}
    return json.dumps(event).encode()


def stream(rng: np.random.Generator, n: int) -> list[bytes]:
    """Out-of-order, duplicated events of a few users and items, time moving forward."""
    out = []
    clock = NOW - 10**8
    for i in range(n):
        clock += int(rng.integers(0, 40))
        # Event ids repeat (redeliveries), some long after they were first seen.
        eid = i if rng.random() > 0.15 else int(rng.integers(0, i + 1))
        out.append(message(eid, KINDS[int(rng.integers(len(KINDS)))],
                           int(rng.integers(12)), int(rng.integers(8)),
                           clock - int(rng.integers(0, 200)),
                           [None, "ios", "web"][int(rng.integers(3))]))
    return out


def through_storage(state: tuple[dict[str, np.ndarray], dict[str, Any]]) -> tuple[Any, Any]:
    """As a checkpoint stores it: npz without pickle, and JSON."""
    arrays, meta = state
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    return loaded, json.loads(json.dumps(meta))


def outputs(pre: Preprocessor, values: list[bytes]) -> list[Any]:
    decoded = decode_batch(values, NOW, pre.config)
    out = pre.transform(decoded, NOW)
    x = out.examples
    return [getattr(x, name) for name in ExampleBatch.__slots__] + [
        sorted(out.stats.items()),
        [(r.index, r.reason, r.detail) for r in out.rejections],
    ]


def assert_same(a: list[Any], b: list[Any]) -> None:
    for u, v in zip(a, b, strict=True):
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and np.array_equal(u, v)
        else:
            assert u == v


def run_with_cuts(task: str, values: list[bytes], batch: int, cuts: set[int]) -> Preprocessor:
    """Run ``values`` uninterrupted and, side by side, restarting from a checkpoint after
    each batch index in ``cuts``; every output must match."""
    cfg = PreprocessConfig(**TIGHT, task=task)  # type: ignore[arg-type]
    steady, restarted = Preprocessor(cfg), Preprocessor(cfg)
    for k, start in enumerate(range(0, len(values), batch)):
        chunk = values[start:start + batch]
        assert_same(outputs(steady, chunk), outputs(restarted, chunk))
        if k in cuts:
            fresh = Preprocessor(cfg)
            fresh.set_state(*through_storage(restarted.get_state()))
            restarted = fresh
    (sa, ma), (sb, mb) = steady.get_state(), restarted.get_state()
    assert ma == mb and sa.keys() == sb.keys()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    (ea, aa), (eb, ab) = steady.encoding(), restarted.encoding()
    assert ea == eb and all(np.array_equal(aa[k], ab[k]) for k in aa)
    return steady


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(20, 400), st.integers(1, 60),
       st.sets(st.integers(0, 40), max_size=6), st.sampled_from(["binary", "regression"]))
def test_restore_at_random_cuts_is_bitwise_identical(
    seed: int, n: int, batch: int, cuts: set[int], task: str
) -> None:
    run_with_cuts(task, stream(np.random.default_rng(seed), n), batch, cuts)


def test_the_cut_test_exercises_every_kind_of_churn() -> None:
    # The property above is only as strong as the stream: check that it admits, evicts and
    # recycles rows, fills the vocabulary, expires and matches dedup ids and overflows the
    # pending ring, here on one long stream cut after every batch.
    pre = run_with_cuts("binary", stream(np.random.default_rng(7), 3000), 50, set(range(60)))
    users = pre.users.counters()  # type: ignore[union-attr]
    assert min(users["admitted"], users["evicted"], users["recycled"], users["full"]) > 0
    labels = pre.labels.counters()
    assert labels["pending_evicted"] > 0 and labels["negatives_emitted"] > 0
    assert labels["impressions_converted"] > 0 and labels["late_clicks"] > 0
    assert pre._totals["duplicates"] > 0 and len(pre.dedup) < 40


def state_bytes(pre: Preprocessor) -> int:
    arrays, meta = pre.get_state()
    return sum(a.nbytes for a in arrays.values()) + len(json.dumps(meta))


def test_state_and_memory_follow_what_is_in_use_not_the_capacity() -> None:
    cfg = PreprocessConfig(task="binary", allowed_lateness_ms=10**12)  # 1M users, 1M ids...
    pre = Preprocessor(cfg)
    assert state_bytes(pre) < 20_000
    # Allocated at startup: a few MiB, not the ~200 MiB of full-capacity tables.
    assert sum(p.nbytes for p in (pre.dedup, pre.users, pre.items, pre.labels)) < 40 * 2**20
    values = stream(np.random.default_rng(3), 2000)
    for start in range(0, len(values), 500):
        pre.transform(decode_batch(values[start:start + 500], NOW, cfg), NOW)
    held = len(pre.dedup) + len(pre.users) + len(pre.items) + pre.labels.pending
    assert held > 1000
    # About 16 bytes per dedup id, ~60 per row or pending impression: far below 1 KiB each.
    assert state_bytes(pre) < 200 * held + 20_000


def test_restoring_into_smaller_bounds_is_refused() -> None:
    values = stream(np.random.default_rng(1), 300)
    cfg = PreprocessConfig(**TIGHT, task="binary")  # type: ignore[arg-type]
    pre = Preprocessor(cfg)
    pre.transform(decode_batch(values, NOW, cfg), NOW)
    arrays, meta = pre.get_state()
    meta["format"] = 1
    try:
        Preprocessor(cfg).set_state(arrays, meta)
    except ValueError as exc:
        assert "format" in str(exc)
    else:  # pragma: no cover - the assertion below documents the failure
        raise AssertionError("a state of another format was accepted")


FORMAT_2 = Path(__file__).resolve().parents[1] / "fixtures" / "preprocess" / "format2"


def test_a_format_2_state_is_read() -> None:
    """``tests/fixtures/preprocess/format2`` is a preprocessor state of format 2, written
    once at commit 6627d76 (``TIGHT``, binary, the first 400 events of ``stream`` with
    seed 5 in batches of 50; ``np.savez_compressed`` and ``json.dump``) and committed.
    Never regenerate it: its point is to be old. Checkpoints of deployments that
    upgrade look like it, and a regression one must not cost a cold start."""
    with np.load(FORMAT_2 / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads((FORMAT_2 / "meta.json").read_text())
    assert meta["format"] == 2
    kind, ts = arrays["labels.m_kind"], arrays["labels.m_ts"]
    pending = kind == 1
    assert pending.any() and (kind == 2).any()  # pending impressions and clicked pairs
    cfg = PreprocessConfig(**TIGHT, task="binary")  # type: ignore[arg-type]
    pre = Preprocessor(cfg)
    pre.set_state(arrays, meta)
    assert pre.labels.pending == pending.sum()
    # Past every window: the pending impressions come out as negatives, in order, with
    # their stored features; the clicked pairs (positives emitted then) do not.
    closing = message(10**6, "impression", 0, 0, int(ts.max()) + 10**6, None)
    x = pre.transform(decode_batch([closing], NOW, cfg), NOW).examples
    assert x.y.tolist() == [0.0] * int(pending.sum())
    assert x.ts_ms.tolist() == ts[pending].tolist()
    assert np.diff(x.feat_indptr).tolist() == arrays["labels.m_nf"][pending].tolist()
