"""Backfill then go live, on the real broker: the model learns every event exactly once.

History is in a file; its continuation is on a topic. ``freshrec backfill`` learns the
file and writes the group's checkpoint with the topic's offsets, then ``freshrec run``
goes on from it. The reference is one ``freshrec run`` that reads history and
continuation from a single topic: both end in the same state, array for array. The same
holds when the history is the live topic itself (backfill reads it up to its end, live
goes on from there), and with several passes the stream's state is still the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.demo.generator import StreamSpec, SyntheticStream
from service.demo.publish import make_producer, publish
from tests.service_process import REPO_ROOT, ServiceProcess
from tests.streams import (
    env_storage,
    file_storage,
    newest_checkpoint,
    read_topic,
    service_env,
)

pytestmark = pytest.mark.integration

N_HISTORY, N_LIVE = 12_000, 6_000


def _run_to_idle(env: dict[str, str], log: Path) -> None:
    service = ServiceProcess(env, log, ("--stop-when-idle", "4")).start()
    assert service.proc is not None
    try:
        assert service.proc.wait(180) == 0, service.log()
    finally:
        service.kill()


def _backfill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", "backfill", *args],
                          env={**_plain_env(), **env}, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def _plain_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}


def test_backfill_then_run_learns_every_event_once(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    stream = SyntheticStream(StreamSpec(n_users=300, n_items=120, seed=5))
    start = int(time.time() * 1000) - 3_600_000  # an hour ago: history, then the live tail
    events = stream.encoded_events(N_HISTORY + N_LIVE, start_ms=start,
                                   events_per_second=10.0)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(events[:N_HISTORY]) + b"\n")

    # Backfill + live: the history from the file, its continuation from the topic.
    live_topic = unique_topic()
    assert publish(make_producer(kafka_bootstrap), live_topic, events[N_HISTORY:]) == N_LIVE
    env = service_env(kafka_bootstrap, live_topic, file_storage(str(tmp_path / "handover")))
    done = _backfill(env, "--data", f"events:{history}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ETA" in done.stderr and f"{N_HISTORY:,} events" in done.stdout
    # The backfilled model passed the gate: serving can start from it at once.
    assert "snapshot" in done.stdout and "published (" in done.stdout, done.stdout
    offsets, _, meta = newest_checkpoint(env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"],
                                         live_topic)
    # The live events were produced after the last history event: read from the first.
    assert offsets == {0: 0}
    assert meta["pipeline"]["extra"]["totals"]["consumed"] == N_HISTORY
    # A second backfill on top of that model is refused, with what to do instead.
    again = _backfill(env, "--data", f"events:{history}")
    assert again.returncode == 2 and "already holds checkpoint" in again.stderr
    _run_to_idle(env, tmp_path / "live.log")
    offsets, handed, handed_meta = newest_checkpoint(
        env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"], live_topic)
    assert offsets == {0: N_LIVE}

    # Reference: one run over history and continuation, all on one topic.
    whole_topic = unique_topic()
    assert publish(make_producer(kafka_bootstrap), whole_topic, events) == len(events)
    ref_env = service_env(kafka_bootstrap, whole_topic, file_storage(str(tmp_path / "ref")))
    _run_to_idle(ref_env, tmp_path / "ref.log")
    _, ref, ref_meta = newest_checkpoint(env_storage(ref_env),
                                         ref_env["FRESHREC_KAFKA__GROUP_ID"], whole_topic)

    assert handed.keys() == ref.keys()
    differ = [k for k in ref if handed[k].shape != ref[k].shape
              or np.asarray(handed[k]).tobytes() != np.asarray(ref[k]).tobytes()]
    assert not differ, f"{len(differ)} of {len(ref)} arrays differ: {differ[:8]}"
    # Everything but where the events came from is the same (partition counts differ:
    # the history was not read from a partition).
    for part in (handed_meta, ref_meta):
        part["pipeline"]["extra"].pop("applied_per_partition", None)
    assert json.dumps(handed_meta, sort_keys=True) == json.dumps(ref_meta, sort_keys=True)
    totals = handed_meta["pipeline"]["extra"]["totals"]
    assert totals["consumed"] == N_HISTORY + N_LIVE
    assert totals["applied"] + totals["rejected"] + totals["deduplicated"] == totals["consumed"]


def test_a_backfill_without_the_live_topic_says_what_to_do(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    history = tmp_path / "h.jsonl"
    stream = SyntheticStream(StreamSpec(n_users=20, n_items=10, seed=1))
    history.write_bytes(b"\n".join(stream.encoded_events(50, start_ms=1_700_000_000_000)))
    env = service_env(kafka_bootstrap, f"absent-{uuid.uuid4().hex[:8]}",
                      file_storage(str(tmp_path / "s")))
    done = _backfill(env, "--data", f"events:{history}")
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr


def test_backfill_from_the_live_topic_then_run_goes_on_where_the_history_ended(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    """History on the live topic itself: backfill reads it up to its end, live goes on
    from there. One pass ends in the state of one run over everything; three passes hand
    over the same stream state (nothing doubled or skipped), with a better-trained model."""
    stream = SyntheticStream(StreamSpec(n_users=300, n_items=120, seed=7))
    start = int(time.time() * 1000) - 3_600_000
    events = stream.encoded_events(N_HISTORY + N_LIVE, start_ms=start,
                                   events_per_second=10.0)
    bad = [b"{not json", b"[]"]  # rejected as in run: to the dead-letter topic, with reasons
    history = [*events[:N_HISTORY // 2], *bad, *events[N_HISTORY // 2:N_HISTORY]]
    live = events[N_HISTORY:]

    topic = unique_topic()
    assert publish(make_producer(kafka_bootstrap), topic, history) == len(history)
    once = service_env(kafka_bootstrap, topic, file_storage(str(tmp_path / "once")))
    thrice = service_env(kafka_bootstrap, topic, file_storage(str(tmp_path / "thrice")))
    done = _backfill(once, "--data", f"topic:{topic}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ETA" in done.stderr and "2 rejects copied" in done.stdout, done.stdout
    copies = read_topic(kafka_bootstrap, f"{topic}.dlq")
    assert sorted((dict(c.headers())["freshrec.reason"], dict(c.headers())[
        "freshrec.source.offset"]) for c in copies) == [
        (b"not_json", str(N_HISTORY // 2).encode()),
        (b"not_object", str(N_HISTORY // 2 + 1).encode())]
    done = _backfill(thrice, "--data", f"topic:{topic}", "--passes", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pass 3: " in done.stdout and "training (on seen data)" in done.stdout
    for env in (once, thrice):
        offsets, _, meta = newest_checkpoint(env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"],
                                             topic)
        assert offsets == {0: len(history)}  # where the history ended, by default
        assert meta["pipeline"]["extra"]["totals"]["rejected"] == len(bad)

    # The live tail arrives after the backfill; run goes on from the history's end.
    assert publish(make_producer(kafka_bootstrap), topic, live) == N_LIVE
    handed = {}
    for name, env in (("once", once), ("thrice", thrice)):
        _run_to_idle(env, tmp_path / f"{name}.log")
        offsets, arrays, meta = newest_checkpoint(
            env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"], topic)
        assert offsets == {0: len(history) + N_LIVE}
        handed[name] = (arrays, meta)

    # Reference: one run over history and continuation.
    whole = unique_topic()
    assert publish(make_producer(kafka_bootstrap), whole, [*history, *live]) == len(
        history) + N_LIVE
    ref_env = service_env(kafka_bootstrap, whole, file_storage(str(tmp_path / "ref")))
    _run_to_idle(ref_env, tmp_path / "ref.log")
    _, ref, ref_meta = newest_checkpoint(env_storage(ref_env),
                                         ref_env["FRESHREC_KAFKA__GROUP_ID"], whole)

    arrays, meta = handed["once"]
    assert arrays.keys() == ref.keys()
    differ = [k for k in ref if arrays[k].shape != ref[k].shape
              or np.asarray(arrays[k]).tobytes() != np.asarray(ref[k]).tobytes()]
    assert not differ, f"{len(differ)} of {len(ref)} arrays differ: {differ[:8]}"
    assert json.dumps(meta, sort_keys=True) == json.dumps(ref_meta, sort_keys=True)

    # Three passes: the stream's state is the same (dedup window, vocabularies, counts of
    # events and of examples learned live); only what the model learned differs.
    arrays, meta = handed["thrice"]
    stream_state = [k for k in ref if k.startswith("preprocess.")]
    assert stream_state and all(
        np.asarray(arrays[k]).tobytes() == np.asarray(ref[k]).tobytes() for k in stream_state)
    assert meta["preprocess"] == ref_meta["preprocess"]
    assert meta["pipeline"]["extra"] == ref_meta["pipeline"]["extra"]
    assert meta["pipeline"]["examples_trained"] == ref_meta["pipeline"]["examples_trained"]
    learner = [k for k in ref if k.startswith("learner.")]
    assert any(np.asarray(arrays[k]).tobytes() != np.asarray(ref[k]).tobytes()
               for k in learner)
