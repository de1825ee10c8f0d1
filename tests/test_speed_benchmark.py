"""scripts/bench_speed.py end to end with tiny budgets: it runs all variants and prints its last line (no timings)."""

from __future__ import annotations

import re

import pytest

from agents.bench.speed_benchmark import BenchSettings, Stopwatch, agent_config, ewc_protocol_bytes
from scripts.bench_speed import main

LAST_LINE = re.compile(r"^ratio_full_vs_sb3=(\S+) ratio_plain_vs_sb3=(\S+) steps_per_s_full=(\S+)$")


def test_timed_start_is_after_warmup_and_aligned_to_updates() -> None:
    s = BenchSettings(learning_starts=64, warmup=10, train_freq=4)
    assert s.first_timed_step == 76  # 74 rounded up to a multiple of train_freq


def test_full_config_plays_two_setup_games_with_task_inference_and_ewc() -> None:
    s = BenchSettings(setup_steps=50, learning_starts=64, buffer_size=500)
    full, plain = agent_config(s, full=True), agent_config(s, full=False)
    assert [seg.game for seg in full.sequence.build().segments] == ["Breakout", "Freeway", "Pong"]
    assert (full.task.source, full.method.name, full.agent.replay) == ("fmn", "ewc", "frames")
    assert [seg.game for seg in plain.sequence.build().segments] == ["Pong"]
    assert (plain.task.source, plain.method.name) == ("oracle", "none")


def test_frame_replay_needs_far_less_memory_for_the_ewc_protocol() -> None:
    assert ewc_protocol_bytes("frames") < 4 * 2**30 < ewc_protocol_bytes("sb3")


def test_stopwatch_refuses_a_span_that_never_ended() -> None:
    with pytest.raises(AssertionError, match="never ended"):
        _ = Stopwatch(start=10, steps=4).steps_per_s


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must differ"):
        BenchSettings(game="Breakout")
    assert main(["--variants", "sb3,full"]) == 2


@pytest.mark.slow
def test_script_prints_the_last_line_with_positive_figures(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--steps", "8", "--warmup", "4", "--learning-starts", "64", "--buffer-size", "500"]
    assert main([*args, "--setup-steps", "120", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    match = LAST_LINE.match(out[-1])
    assert match is not None, out[-1]
    assert all(float(x) > 0 for x in match.groups())
    assert any("anchors=2" in line for line in out)  # the full variant ran under two EWC anchors
    assert any("B/transition" in line for line in out)
