"""Scale-out on the real stack: two shards on a 4-partition topic learn as well as one.

One stream with known structure (planted low-rank ratings, keyed by user id as producers
must) is produced once, at a steady rate, while three services read it: (a) one instance
(``shards=1``) and (b) two shards (``shards=2``, ``shard=0`` and ``shard=1``), each setup
with its own group and storage prefix. The shards exchange shared parameters through the
real S3 server.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from service.demo.generator import StreamSpec, SyntheticStream
from service.demo.publish import make_producer, publish
from tests.service_process import ServiceProcess
from tests.services import S3Endpoint
from tests.streams import env_storage, newest_checkpoint, sample, service_env

pytestmark = pytest.mark.integration

N_EVENTS = 60_000
RATE = 5_000  # events/s: the stream lasts ~12 s, so the shards exchange ~12 times
MERGE_INTERVAL_S = 0.5


def _checkpoint(env: dict[str, str], folder: str = "",
                ) -> tuple[dict[int, int], dict[str, npt.NDArray[Any]]]:
    offsets, arrays, _ = newest_checkpoint(env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"],
                                           env["FRESHREC_KAFKA__TOPIC"], folder)
    return offsets, arrays


def _item_bias_by_key(arrays: dict[str, npt.NDArray[Any]]) -> dict[int, float]:
    """Item bias of every item the shard has a row for, keyed by the item's id hash."""
    bias = arrays["learner.item_bias"]
    keys = arrays["preprocess.items.row_key"][: len(bias)]
    return {int(k): float(b) for k, b in zip(keys, bias[: len(keys)], strict=True) if k}


def _rmse(service: ServiceProcess) -> tuple[float, float]:
    """(cumulative progressive RMSE, examples trained) of one service."""
    m = service.metrics()
    rmse = sample(m, "freshrec_progressive_loss", metric="rmse", window="cumulative")
    return rmse, sample(m, "freshrec_examples_trained_total")


def test_two_shards_learn_as_well_as_one_instance(
    kafka_bootstrap: str,
    s3_endpoint: S3Endpoint,
    unique_topic: Callable[..., str],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    topic = unique_topic(partitions=4)

    def env(name: str, group: str, **extra: str) -> dict[str, str]:
        storage = {
            "FRESHREC_STORAGE__URL": f"s3://{s3_endpoint.bucket}/{unique_prefix}{name}",
            "FRESHREC_STORAGE__ENDPOINT_URL": s3_endpoint.url,
            "FRESHREC_STORAGE__ACCESS_KEY": s3_endpoint.access_key,
            "FRESHREC_STORAGE__SECRET_KEY": s3_endpoint.secret_key,
        }
        return service_env(kafka_bootstrap, topic, storage,
                           FRESHREC_KAFKA__GROUP_ID=group,
                           FRESHREC_KAFKA__AUTO_OFFSET_RESET="earliest",
                           FRESHREC_KAFKA__BATCH_SIZE="2000",
                           # Drift reactions ('adapt' raises the learning rate) fire at
                           # points that depend on batch timing: with them the single
                           # instance's own RMSE moved 0.69-0.77 between runs, more than
                           # the difference this test looks for.
                           FRESHREC_DRIFT__ENABLED="false", **extra)

    single_env = env("single", f"one-{uuid.uuid4().hex[:8]}")
    group = f"two-{uuid.uuid4().hex[:8]}"
    shard_envs = [env("sharded", group, FRESHREC_SCALE__SHARDS="2",
                      FRESHREC_SCALE__SHARD=str(i),
                      FRESHREC_SCALE__MERGE_INTERVAL_S=str(MERGE_INTERVAL_S))
                  for i in range(2)]
    services = [ServiceProcess(e, tmp_path / f"{name}.log")
                for name, e in (("single", single_env), ("shard0", shard_envs[0]),
                                ("shard1", shard_envs[1]))]
    single, *shards = services
    for s in services:
        s.start()
    try:
        for s in services:
            s.wait_ready()

        # The stream, keyed by user id (what puts a user's events in one partition).
        stream = SyntheticStream(StreamSpec(n_users=3000, n_items=400, seed=5))
        values = stream.encoded_events(N_EVENTS, start_ms=int(time.time() * 1000) - N_EVENTS)
        sent = publish(make_producer(kafka_bootstrap), topic, values, rate=RATE,
                       key=lambda v: orjson.loads(v)["user_id"].encode())
        assert sent == N_EVENTS

        def total(name: str, of: list[ServiceProcess]) -> float:
            return sum(s.total(name) for s in of)

        for group_of in ([single], shards):
            group_of[0].wait_until(
                f"{N_EVENTS} events applied or rejected",
                lambda g=group_of: total("freshrec_events_applied_total", g)  # type: ignore[misc]
                + total("freshrec_events_rejected_total", g) >= N_EVENTS)
        for s in services:
            assert s.total("freshrec_events_rejected_total") == 0, s.log()
        assert single.total("freshrec_events_applied_total") == N_EVENTS
        assert total("freshrec_events_applied_total", shards) == N_EVENTS

        # The final exchange: each shard has cut and written everything it learned, and
        # the other shard has folded it.
        def settled() -> bool:
            m = [s.metrics() for s in shards]
            for i in (0, 1):
                written = sample(m[i], "freshrec_shared_last_written_block")
                if not (written > 0
                        and sample(m[i], "freshrec_shared_unsent_examples") == 0
                        and sample(m[i], "freshrec_shared_last_cut_block") == written
                        and sample(m[1 - i], "freshrec_shared_last_folded_block",
                                   shard=str(i)) == written):
                    return False
            return True

        shards[0].wait_until("the shards to fold each other's last blocks", settled)
        rmse_single, n_single = _rmse(single)
        rmse_shards = [_rmse(s) for s in shards]
        merges = [s.total("freshrec_shared_merges_total") for s in shards]
        folded = [s.total("freshrec_shared_blocks_folded_total") for s in shards]
    finally:
        for s in services:
            if s.alive():
                s.terminate()
    for s in services:
        assert s.proc is not None and s.proc.returncode == 0, s.log()

    # Every event applied exactly once across the shards: shard i read exactly the
    # partitions p % 2 == i, to their ends (the single instance read all four).
    single_offsets, _ = _checkpoint(single_env)
    assert sorted(single_offsets) == [0, 1, 2, 3]
    assert sum(single_offsets.values()) == N_EVENTS
    shard_state = [_checkpoint(e, f"shard-{i}") for i, e in enumerate(shard_envs)]
    for i, (offsets, _) in enumerate(shard_state):
        assert sorted(offsets) == [p for p in range(4) if p % 2 == i]
        assert offsets == {p: single_offsets[p] for p in offsets}

    # Together they learn as well as one instance (count-weighted progressive RMSE).
    n_total = sum(n for _, n in rmse_shards)
    assert n_total == n_single
    combined = math.sqrt(sum(n * r * r for r, n in rmse_shards) / n_total)
    print(f"progressive RMSE: one instance {rmse_single:.4f}, two shards {combined:.4f} "
          f"({combined / rmse_single:.3f}x); merges {merges}, blocks folded {folded}")
    # Measured with the default learner (AdaGrad) and drift reactions off: 1.025-1.027x,
    # the cost of shared rows arriving about one exchange (~1 s, ~5k events) late; at
    # half the rate (twice the exchanges per event) 1.019-1.020x. Without merging each
    # shard learns every item from half the users.
    assert combined <= 1.04 * rmse_single
    assert min(merges) > 0 and min(folded) > 0

    # Merging matters: the shards' item biases agree. Learned apart, each shard's bias of
    # an item comes from a disjoint half of the users; with merging switched off
    # (merge_interval_s=1e5) this measure was 0.69 on this stream, with merging 0.03-0.05:
    # what is left are deltas dropped before an item had a row in use in a shard.
    bias = [_item_bias_by_key(arrays) for _, arrays in shard_state]
    common = sorted(set(bias[0]) & set(bias[1]))
    assert len(common) > 200
    a = np.array([bias[0][k] for k in common])
    b = np.array([bias[1][k] for k in common])
    disagreement = float(np.abs(a - b).mean() / np.abs(np.concatenate([a, b])).mean())
    print(f"item-bias disagreement between the shards: {disagreement:.3f} "
          f"over {len(common)} items")
    assert disagreement < 0.1
