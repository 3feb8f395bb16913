"""The e2e benchmark driver's pure parts: options, environment, live events, the table."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from service.bench import e2e
from service.bench.e2e import ContenderResult, E2EConfig
from service.cli.bench import build_parser
from service.demo.generator import StreamSpec, SyntheticStream


def parse(*argv: str) -> E2EConfig:
    args = build_parser().parse_args(["e2e", *argv])
    assert args.func is e2e._main
    return e2e.config_from_args(args)


def test_options_reach_the_config() -> None:
    cfg = parse("--events", "5000", "--rate", "1000", "--live-seconds", "4",
                "--contenders", "river-biasedmf,freshrec-per-event",
                "--freshrec-env", "FRESHREC_KAFKA__BATCH_SIZE=1000", "--out", "/tmp/x")
    assert (cfg.events, cfg.rate, cfg.live_seconds) == (5000, 1000.0, 4.0)
    assert cfg.contenders == ("river-biasedmf", "freshrec-per-event")
    assert cfg.freshrec_env == {"FRESHREC_KAFKA__BATCH_SIZE": "1000"}
    assert cfg.out == Path("/tmp/x")
    default = parse()
    assert default.events == 200_000 and default.rate == 20_000
    assert set(default.contenders) == {*e2e.FRESHREC, *e2e.BASELINES}


def test_quick_is_small_but_explicit_options_win() -> None:
    quick = parse("--quick")
    assert quick.events < E2EConfig().events and quick.live_seconds < E2EConfig().live_seconds
    assert parse("--quick", "--events", "3000").events == 3000


@pytest.mark.parametrize(("argv", "message"), [
    (["--contenders", "kafka-streams"], "unknown contender"),
    (["--events", "10"], "--events"),
    (["--warmup-seconds", "20"], "--warmup-seconds"),
    (["--rate", "0"], "--rate"),
    (["--freshrec-env", "KAFKA=1"], "FRESHREC_NAME=VALUE"),
])
def test_bad_options_say_what_to_do(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(*argv)


def test_bad_options_exit_2_without_touching_kafka(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["e2e", "--contenders", "nope"])
    assert args.func(args) == 2
    assert "unknown contender" in capsys.readouterr().err


def test_contender_env_is_clean_and_complete(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("FRESHREC_KAFKA__TOPIC", "someone-elses")
    monkeypatch.setenv("FRESHREC_CONFIG", "/nonexistent.toml")
    cfg = E2EConfig(freshrec_env={"FRESHREC_KAFKA__BATCH_SIZE": "777"})
    env = e2e.contender_env("freshrec-per-event", cfg, "topic-x", "group-y", tmp_path)
    assert "FRESHREC_CONFIG" not in env
    assert env["FRESHREC_KAFKA__TOPIC"] == "topic-x"
    assert env["FRESHREC_KAFKA__GROUP_ID"] == "group-y"
    assert env["FRESHREC_LEARNER__STRATEGY"] == "per_event"
    assert env["FRESHREC_KAFKA__BATCH_SIZE"] == "777"
    assert env["FRESHREC_STORAGE__URL"].startswith("file://" + str(tmp_path))
    micro = e2e.contender_env("freshrec-micro-batch", cfg, "t", "g", tmp_path)
    assert micro["FRESHREC_LEARNER__STRATEGY"] == "micro_batch"
    assert micro["FRESHREC_KAFKA__DLQ_TOPIC"] != env["FRESHREC_KAFKA__DLQ_TOPIC"]
    baseline = e2e.contender_env("river-biasedmf", cfg, "t", "g", tmp_path)
    assert not any(k.startswith("FRESHREC_") for k in baseline)


def test_freshrec_env_settings_are_real_settings(tmp_path: Path) -> None:
    """Every variable the driver sets must exist, or the service would refuse to start."""
    from service.config import env_var_names

    env = e2e.contender_env("freshrec-micro-batch", E2EConfig(), "t", "g", tmp_path)
    assert {k for k in env if k.startswith("FRESHREC_")} <= env_var_names()


def test_live_events_start_now_and_continue_the_stream() -> None:
    stream = SyntheticStream(StreamSpec(n_users=50, n_items=20, seed=1))
    stream.encoded_events(1000, start_ms=0)  # the backlog
    values = e2e.live_values(stream, 200, rate=2_000.0)
    events = [orjson.loads(v) for v in values]
    now_ms = time.time() * 1000
    assert abs(events[0]["timestamp"] - now_ms) < 2_000
    assert events[1]["timestamp"] - events[0]["timestamp"] in (0, 1)  # 0.5 ms apart
    assert events[-1]["timestamp"] - events[0]["timestamp"] == pytest.approx(100, abs=1)
    assert events[0]["event_id"] == "r-1-1000"  # continues: no id repeats the backlog


def result(name: str, eps: float, p99: float = 10.0, error: str = "") -> ContenderResult:
    return ContenderResult(name, error=error, events=100_000, seconds=100_000 / eps,
                           cpu_seconds=1.0, rmse=0.9, fresh_p50_ms=1.0, fresh_p99_ms=p99,
                           peak_rss_bytes=200 * 2**20, produced=150_000, applied=150_000)


def test_table_ratios_are_to_the_faster_baseline() -> None:
    results = [result("freshrec-micro-batch", 500_000), result("freshrec-per-event", 200_000),
               result("sklearn-tutorial", 40_000), result("river-biasedmf", 50_000)]
    assert e2e.faster_baseline(results) is results[3]
    rows = e2e.table_rows(results)
    assert [r[0] for r in rows] == ["freshrec-micro-batch", "freshrec-per-event",
                                    "sklearn-tutorial", "river-biasedmf *"]
    assert [r[2] for r in rows] == ["10.00x", "4.00x", "0.80x", "1.00x"]
    assert rows[0][6] == pytest.approx(10.0)  # CPU s per million events
    assert rows[0][-1] == "150,000/150,000"


def test_a_failed_contender_stays_in_the_table_and_is_no_baseline() -> None:
    results = [result("freshrec-micro-batch", 500_000),
               result("river-biasedmf", 90_000, error="exit code 1"),
               result("sklearn-tutorial", 40_000)]
    assert e2e.faster_baseline(results) is results[2]
    rows = e2e.table_rows(results)
    assert rows[1][0] == "river-biasedmf [exit code 1]"
    assert e2e.faster_baseline([results[0]]) is None
    assert e2e.table_rows([results[0]])[0][2] == "nanx"


def test_report_writes_markdown_and_json(tmp_path: Path) -> None:
    cfg = E2EConfig(out=tmp_path, plot=False)
    results = [result("freshrec-micro-batch", 500_000), result("river-biasedmf", 50_000)]
    text = e2e.report(cfg, results, "freshrec bench e2e --quick")
    assert "freshrec-micro-batch" in text and "river-biasedmf *" in text
    md = (tmp_path / "e2e.md").read_text()
    assert md.startswith("`freshrec bench e2e --quick` on ")
    assert "| freshrec-micro-batch | 500,000 | 10.00x |" in md
    saved = orjson.loads((tmp_path / "e2e.json").read_bytes())
    assert [r["name"] for r in saved["results"]] == ["freshrec-micro-batch", "river-biasedmf"]
    assert saved["results"][0]["events_per_s"] == pytest.approx(500_000)


def test_chunked_generation_gives_exactly_n_consecutive_events() -> None:
    stream = SyntheticStream(StreamSpec(n_users=50, n_items=20, seed=2))
    values = e2e.encoded(stream, 2_345, start_ms=0, chunk=1_000)
    ids = [orjson.loads(v)["event_id"] for v in values]
    assert ids == [f"r-2-{i}" for i in range(2_345)]
    assert stream.position == 2_345
