"""backfill(): history through the pipeline, a checkpoint with the given offsets, refusals.

The broker is replaced by the offsets function only (``offsets_for``): finding offsets on
a real topic is tested in tests/integration/test_backfill.py.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.checkpoint.manager import CheckpointManager
from service.cli.backfill import read_history
from service.config import Settings
from service.runtime.backfill import BackfillRefused, backfill
from service.storage import open_store


def _settings(tmp_path: Path) -> Settings:
    return Settings(storage={"url": f"file://{tmp_path / 'store'}"},  # type: ignore[arg-type]
                    preprocess={"user_capacity": 256, "item_capacity": 128},  # type: ignore[arg-type]
                    kafka={"batch_size": 100})  # type: ignore[arg-type]


def _events(n: int) -> list[bytes]:
    # Years ago, in time order: history is accepted (lateness follows the stream).
    return [orjson.dumps({"schema_version": 1, "event_id": f"e{k}", "event_type": "rating",
                          "user_id": f"u{k % 17}", "item_id": f"i{k % 7}",
                          "timestamp": 1_000_000_000_000 + 60_000 * k,
                          "value": 1.0 + k % 5}) for k in range(n)]


def test_history_is_learned_and_checkpointed_with_the_live_offsets(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    seen: list[object] = []

    def offsets(_s: Settings, live_from: str | int, last: int | None) -> dict[int, int]:
        seen.append((live_from, last))
        return {0: 42, 1: 7}

    values = [*_events(450), b"{not json", _events(1)[0]]  # a broken line and a repeat
    report = backfill(settings, values, progress=None, offsets_for=offsets)
    assert seen == [("after-history", 1_000_000_000_000 + 60_000 * 449)]
    assert (report.messages, report.rejected, report.deduplicated) == (452, 1, 1)
    assert report.applied == 450 and report.rejections == {"not_json": 1}
    # 450 ratings are too few for the gate (snapshot.min_new_events 1,000): no snapshot,
    # and the report says why.
    assert report.snapshot is None
    assert report.snapshot_decision.startswith("not_enough_events")
    manager = CheckpointManager(open_store(settings.storage), settings.checkpoint,
                                group_id=settings.kafka.group_id, topic=settings.kafka.topic)

    class Capture:
        def set_state(self, arrays: object, meta: dict[str, object]) -> None:
            self.meta = meta

    capture = Capture()
    restored = manager.restore_latest(capture)  # type: ignore[arg-type]
    assert restored is not None and restored.offsets == {0: 42, 1: 7}
    totals = capture.meta["pipeline"]["extra"]["totals"]  # type: ignore[index]
    assert totals == {"consumed": 452, "applied": 450, "rejected": 1, "deduplicated": 1}
    # On top of that model, a second backfill is refused.
    with pytest.raises(BackfillRefused, match="already holds checkpoint"):
        backfill(settings, values, progress=None, offsets_for=offsets)


def test_history_files_are_read_in_stream_order(tmp_path: Path) -> None:
    lines = _events(5)
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    assert read_history(f"events:{path}", None, None) == lines
    assert read_history(f"events:{path}", None, 2) == lines[:2]
    ratings = tmp_path / "u.data"
    ratings.write_text("1\t10\t4\t300\n2\t11\t3\t100\n1\t11\t5\t200\n")
    got = [orjson.loads(v) for v in read_history(f"movielens:{ratings}", None, None)]
    assert [(e["user_id"], e["value"]) for e in got] == [("2", 3.0), ("1", 5.0), ("1", 4.0)]
    with pytest.raises(FileNotFoundError):
        read_history(f"events:{tmp_path / 'missing'}", None, None)
