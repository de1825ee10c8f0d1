"""scripts/bench_speed.py end to end with tiny budgets: it runs all variants and prints its last line (no timings)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.bench.speed_benchmark import (
    BenchSettings,
    MinAtarCNN,
    Stopwatch,
    agent_config,
    ewc_protocol_bytes,
    run_variant,
    setup_games,
    time_bare_steps,
    time_update_levers,
    with_vectors,
)
from agents.sb3.networks import TaskModulatedCNN
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


def test_eight_anchor_variant_plays_eight_other_games_first() -> None:
    s = BenchSettings(setup_steps=50, learning_starts=64, buffer_size=500)
    games = [seg.game for seg in agent_config(s, full=True, anchors=8).sequence.build().segments]
    assert len(set(games[:-1])) == 8 and games[-1] == "Pong" and "Pong" not in games[:-1]
    assert setup_games(s, 2) == ("Breakout", "Freeway")


def test_minatar_mode_gives_both_agents_the_same_network_and_one_update_per_step() -> None:
    minatar = pytest.importorskip("envs.minatar")
    s = BenchSettings.for_minatar(setup_steps=50, learning_starts=64, buffer_size=500)
    full = agent_config(s, full=True)
    assert [seg.game for seg in full.sequence.build().segments] == [
        "MinAtar/SpaceInvaders",
        "MinAtar/Freeway",
        "MinAtar/Breakout",
    ]
    a = full.agent
    assert (a.network, a.replay, a.train_freq, a.double_dqn) == ("minatar", "sb3", 1, False)
    space = spaces.Box(0, 255, minatar.OBSERVATION_SHAPE, np.uint8)
    stock, ours = MinAtarCNN(space), TaskModulatedCNN(space, network="minatar")
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    shapes = [[p.shape for m in n.modules() if isinstance(m, layers) for p in m.parameters()] for n in (stock, ours)]
    assert shapes[0] == shapes[1] and stock.features_dim == ours.features_dim == 128
    with pytest.raises(ValueError, match="does not fit"):
        BenchSettings(game="MinAtar/Breakout")


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
    # warmup: the task inference detects the switch to the timed game a few steps late, and the timed span must hold
    # only updates (the benchmark refuses a span with fewer than one per train_freq steps)
    args = ["--steps", "8", "--warmup", "64", "--learning-starts", "64", "--buffer-size", "500"]
    args += ["--setup-steps", "120", "--repeats", "1", "--threads", "1", "--variants", "sb3,plain,full"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    match = LAST_LINE.match(out[-1])
    assert match is not None, out[-1]
    assert all(float(x) > 0 for x in match.groups())
    assert any("anchors=2" in line for line in out)  # the full variant ran under two EWC anchors
    assert any("B/transition" in line for line in out)


def test_n_envs_keeps_the_updates_per_transition_and_aligns_the_timed_span() -> None:
    s = BenchSettings.for_minatar(setup_steps=50, learning_starts=64, buffer_size=500, warmup=10, n_envs=8)
    assert s.period == 8 and s.first_timed_step == 80  # 74 rounded up to whole vector steps
    config = agent_config(s, full=True)
    assert config.agent.n_envs == 8 and config.agent.train_freq == 1
    assert all(seg.steps % 8 == 0 for seg in config.sequence.build().segments)
    assert BenchSettings(n_envs=6, train_freq=4).period == 12


@pytest.mark.slow
def test_script_prints_a_table_per_n_envs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("envs.minatar")
    args = ["--minatar", "--n-envs", "1,2", "--steps", "8", "--warmup", "64", "--learning-starts", "64"]
    args += ["--buffer-size", "500", "--setup-steps", "60", "--repeats", "1", "--threads", "1"]
    assert main([*args, "--variants", "sb3,plain,full"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-3].split() == [
        "n_envs",
        "sb3",
        "steps/s",
        "plain",
        "steps/s",
        "full",
        "steps/s",
        "plain/sb3",
        "full/sb3",
    ]
    for line, n in zip(out[-2:], (1, 2), strict=True):
        cells = line.split()
        assert int(cells[0]) == n and all(float(c.rstrip("x")) > 0 for c in cells[1:])
    assert main([*args[:2], "0,2"]) == 2


def test_update_levers_time_every_variant() -> None:
    times = time_update_levers("nature", repeats=1, iters=1)
    assert len(times) == 8 and all(ms > 0 for ms in times.values())
    assert {"Adam fused", "fused + EWC 8 anchors, autograd", "fused + EWC 8 anchors, closed form"} <= set(times)


def test_bare_steps_time_both_networks():
    times = time_bare_steps(repeats=1, iters=2)
    assert set(times) == {"this agent", "sb3"} and all(0 < ms < 10_000 for ms in times.values())


def test_bare_steps_with_compile_time_the_compiled_step_too_and_need_bare():
    times = time_bare_steps(repeats=1, iters=2, compile=True)
    assert set(times) == {"this agent", "sb3", "this agent, compiled", "compile seconds"}
    assert all(0 < v < 10_000 for v in times.values())
    assert main(["--compile"]) == 2  # --compile without --bare: refused with a message


def test_cpp_vector_twins_run_this_agent_on_the_cpp_env() -> None:
    assert with_vectors(("sb3", "plain", "full"), ("python",)) == ("sb3", "plain", "full")
    twins = with_vectors(("sb3", "plain", "full"), ("python", "cpp"))
    assert twins == ("sb3", "plain", "plain_cpp", "full", "full_cpp")
    s = BenchSettings(setup_steps=50, learning_starts=64, buffer_size=500, n_envs=2, vector="cpp")
    assert agent_config(s, full=True).agent.vector == "cpp" and agent_config(s, full=False).agent.n_envs == 2
    with pytest.raises(ValueError, match="vector must be python, or cpp for ALE games"):
        BenchSettings.for_minatar(vector="cpp")
    assert main(["--vector", "cpp"]) == 2 and main(["--minatar", "--vector", "python,cpp"]) == 2


@pytest.mark.slow
def test_a_cpp_twin_times_this_agent_on_the_cpp_vector_env() -> None:
    s = BenchSettings(steps=8, warmup=8, learning_starts=64, buffer_size=500, n_envs=2)
    result = run_variant("plain_cpp", s)
    assert result.name == "plain_cpp" and result.steps_per_s > 0 and result.notes["tasks"] == 1
