"""Training with agent.n_envs > 1: envs switching together, every env's transitions in the right task's replay, the
replay ratio per transition, TensorBoard and checkpoints (agents/run/training.py, envs/sequence.ParallelSequence,
agents/sb3/vector_schedule.py). Real MinAtar games with tiny budgets."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback

from agents.run.checkpoints import list_checkpoints
from agents.run.config import ConfigError, config_from_dict
from agents.run.training import make_agent, make_stream, resume, train
from agents.sb3.vector_schedule import vector_train_schedule
from envs.game_env import make_game_env
from envs.sequence import GameSequence, ParallelSequence, Segment, per_env_sequence
from tests.test_train_script import _scalars

N_ENVS = 4
SEGMENT = 200  # agent steps of all envs together: 50 steps of each env
GAMES = ("MinAtar/Breakout", "MinAtar/SpaceInvaders")
BREAKOUT_CHANNELS = 4  # MinAtar Breakout uses channels 0-3 (paddle, ball, trail, brick); SpaceInvaders 0-5


def _config(n_envs: int = N_ENVS, games: tuple[str, ...] = GAMES, steps: int = SEGMENT, every: int = 100, **agent):
    return config_from_dict(
        {
            "run": {"seed": 0, "progress_bar": False, "checkpoint_every": every, "device": "cpu"},
            "sequence": {"segments": [{"game": game, "steps": steps} for game in games]},
            "env": {"minatar": {"max_episode_steps": 20}},  # several episodes per env and segment
            "task": {"source": "oracle"},
            "agent": {
                "network": "minatar",
                "replay": "sb3",
                "buffer_size": 1000,
                "learning_starts": 64,
                "batch_size": 16,
                "train_freq": 1,
                "target_update_interval": 100,
                "exploration_steps": 100,
                "n_envs": n_envs,
                **agent,
            },
            "eval": {"enabled": False},
        }
    )


class Recorder(BaseCallback):
    """Each vector step's per-env game, segment and segment-end flag, and the update count."""

    def __init__(self) -> None:
        super().__init__()
        self.games: list[list[str]] = []
        self.ends: list[list[bool]] = []
        self.updates: list[tuple[int, int]] = []

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        self.games.append([i["game"] for i in infos])
        self.ends.append([bool(i.get("segment_end")) for i in infos])
        self.updates.append((self.num_timesteps, self.model._n_updates))
        return True


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory) -> tuple[Path, Recorder, object]:
    run_dir = tmp_path_factory.mktemp("runs") / "vector"
    recorder = Recorder()
    result = train(_config(), run_dir, callbacks=[recorder])
    return run_dir, recorder, result


def test_every_env_plays_the_same_game_and_switches_at_the_same_step(vector_run):
    _, recorder, result = vector_run
    assert result.model.num_timesteps == 2 * SEGMENT and result.model.n_envs == N_ENVS
    steps_per_env = SEGMENT // N_ENVS
    assert len(recorder.games) == 2 * steps_per_env
    assert all(row == [row[0]] * N_ENVS for row in recorder.games)
    assert [row[0] for row in recorder.games] == ["MinAtar/Breakout"] * steps_per_env + [
        "MinAtar/SpaceInvaders"
    ] * steps_per_env
    ended = [i for i, row in enumerate(recorder.ends) if any(row)]
    assert ended == [steps_per_env - 1, 2 * steps_per_env - 1]
    assert all(all(recorder.ends[i]) for i in ended)  # all envs at once
    assert result.model.task_switches == 1 and result.model.current_task == 1


def test_replay_holds_every_envs_transitions_under_its_task(vector_run):
    _, _, result = vector_run
    replay = result.model.replay_buffer
    # Transitions, not SB3's rows of n_envs; the sequence's last vector step is stored too (learn ends after it).
    assert replay.sizes() == [SEGMENT, SEGMENT]
    for task, game_channels in ((0, BREAKOUT_CHANNELS), (1, 6)):
        buffer = replay.buffer(task)
        rows = buffer.size()
        assert rows == replay.sizes()[task] // N_ENVS
        obs = buffer.observations[:rows]  # (rows, n_envs, 10, 10, 10)
        assert obs.shape[1] == N_ENVS
        per_env_channels = obs.reshape(rows, N_ENVS, 10, -1).max(axis=(0, 3))  # (n_envs, channels)
        assert (per_env_channels[:, 0] > 0).all(), "an env's column holds no observations"
        assert not per_env_channels[:, game_channels:].any()  # no other game's objects
    # SpaceInvaders' aliens and bullets (channels 4, 5) appear in task 1's buffer only
    task1 = replay.buffer(1).observations[: replay.buffer(1).size()]
    assert task1[:, :, BREAKOUT_CHANNELS:6].any()


def test_the_run_trains_logs_and_checkpoints(vector_run):
    run_dir, _, result = vector_run
    assert result.model._n_updates > 0
    scalars = _scalars(run_dir)
    for tag in ("train/loss", "task/switches", "game/MinAtar/Breakout/score", "game/MinAtar/SpaceInvaders/score"):
        assert tag in scalars, tag
    steps = [step for step, _ in list_checkpoints(run_dir / "checkpoints")]
    assert steps == [100, 200, 300, 400]


def test_a_vector_run_resumes_from_a_checkpoint(vector_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(vector_run[0], run_dir)
    for step, path in list_checkpoints(run_dir / "checkpoints"):
        if step > 100:
            path.unlink()  # as if killed at step 100, in the first game
    recorder = Recorder()
    result = resume(run_dir, callbacks=[recorder])
    assert result.start_step == 100 and result.model.num_timesteps == 2 * SEGMENT
    assert result.model.n_envs == N_ENVS
    assert [row[0] for row in recorder.games][:25] == ["MinAtar/Breakout"] * 25  # steps 100..199: 25 per env
    assert all(row == [row[0]] * N_ENVS for row in recorder.games)
    assert result.model.task_switches == 1
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [100, 200, 300, 400]


def test_resume_refuses_another_n_envs(vector_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(vector_run[0], run_dir)
    with pytest.raises(ConfigError, match=r"agent\.n_envs"):
        resume(run_dir, overrides=["agent.n_envs=2"])


def test_updates_per_transition_do_not_depend_on_n_envs():
    """The measured update count over the same transitions: gradient_steps / train_freq per transition."""
    for n_envs, train_freq in ((1, 4), (2, 4), (4, 4), (8, 4), (4, 1), (3, 2)):
        config = _config(n_envs, GAMES[:1], 96 * n_envs, 0, train_freq=train_freq, learning_starts=16)
        stream, env = make_stream(config, config.sequence.build())
        model = make_agent(config, env)
        recorder = Recorder()
        model.learn(96 * n_envs, callback=recorder)
        stream.close()
        counts = dict(recorder.updates)
        period = math.lcm(train_freq, n_envs)
        start = -(-64 // period) * period  # past learning_starts in every case
        end = start + 4 * period
        assert counts[end] - counts[start] == (end - start) // train_freq, (n_envs, train_freq)


@pytest.mark.parametrize("train_freq,gradient_steps,n_envs", [(4, 1, 1), (4, 1, 2), (4, 3, 6), (1, 2, 8), (6, 1, 4)])
def test_vector_train_schedule_keeps_the_ratio(train_freq, gradient_steps, n_envs):
    freq, steps = vector_train_schedule(train_freq, gradient_steps, n_envs)
    assert steps * train_freq == gradient_steps * freq * n_envs  # steps / (freq · n) == gradient_steps / train_freq
    assert freq * n_envs == math.lcm(train_freq, n_envs)  # the shortest rollout with whole updates


def test_step_counts_must_be_multiples_of_n_envs():
    with pytest.raises(ConfigError, match=r"segment 0 .* steps=200 is not a multiple of agent.n_envs=3"):
        _config(3, every=0)
    with pytest.raises(ConfigError, match=r"agent\.n_envs must be >= 1"):
        _config(n_envs=0)
    with pytest.raises(ValueError, match="not a multiple of n_envs=3"):
        per_env_sequence(GameSequence((Segment("MinAtar/Breakout", 100),)), 3)


def test_parallel_sequence_seeks_in_steps_of_all_envs():
    sequence = GameSequence((Segment("MinAtar/Breakout", 8), Segment("MinAtar/Freeway", 8)))
    streams = ParallelSequence(sequence, make_game_env, 4)
    assert [s.steps for s in streams.envs[0].sequence.segments] == [2, 2]
    streams.seek(8)
    assert streams.steps_done == 8
    for env in streams.envs:
        _, info = env.reset()
        assert info["game"] == "MinAtar/Freeway"
    with pytest.raises(ValueError, match="multiple of n_envs=4"):
        streams.seek(6)
    streams.close()
    assert np.array_equal(per_env_sequence(sequence, 1).ends, sequence.ends)
