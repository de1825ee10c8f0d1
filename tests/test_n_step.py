"""n-step TD targets (``agent.n_step``) on a real MinAtar run: SB3's NStepReplayBuffer per task, checked by hand."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.logger import configure

from agents.run.config import ConfigError, load_config
from agents.run.training import make_agent, make_stream
from agents.sb3.replay import PerTaskReplayBuffer
from tests.conftest import REPO

PRESET = REPO / "configs" / "minatar_table.yaml"
GAMMA = 0.9  # far from 1, so that a wrong power of γ shows


@pytest.fixture(scope="module")
def n_step_run(tmp_path_factory):
    """SpaceInvaders (rewards every few steps) for 600 agent steps with 3-step targets, 40-step episodes."""
    overrides = [
        "sequence.segments=[{game: MinAtar/SpaceInvaders, steps: 600}]",
        "agent.n_step=3",
        f"agent.gamma={GAMMA}",
        "agent.learning_starts=100",
        "agent.buffer_size=1000",
        "env.minatar.max_episode_steps=40",  # time-limit truncations inside the buffer
        "task.source=oracle",
    ]
    config = load_config(PRESET, overrides)
    stream, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    model.set_logger(configure(str(tmp_path_factory.mktemp("tb")), ["tensorboard"]))
    model.learn(600)
    yield model
    stream.close()


def _by_hand(buffer: NStepReplayBuffer, i: int, n: int) -> tuple[float, float, int]:
    """The n-step return, bootstrap discount and index of the bootstrap state of transition i, from the raw arrays."""
    ret, k = 0.0, 0
    for k in range(n):
        ret += GAMMA**k * float(buffer.rewards[i + k, 0])
        if buffer.dones[i + k, 0] or buffer.timeouts[i + k, 0]:
            break
    return ret, GAMMA ** (k + 1), i + k


def test_each_tasks_buffer_gives_n_step_returns_and_the_target_bootstraps_with_gamma_to_the_n(n_step_run):
    model = n_step_run
    buffer = model.replay_buffer.buffer(0)
    assert isinstance(buffer, NStepReplayBuffer) and buffer.n_steps == 3 and buffer.gamma == GAMMA
    assert buffer.rewards[:600].sum() > 0 and buffer.timeouts[:600].any()  # rewards and cut episodes to check
    inds = np.arange(0, 590)
    samples = buffer._get_samples(inds)
    bootstrap_states = []
    for row, i in enumerate(inds):
        ret, discount, last = _by_hand(buffer, int(i), 3)
        assert float(samples.rewards[row]) == pytest.approx(ret, abs=1e-5)
        assert float(samples.discounts[row]) == pytest.approx(discount, rel=1e-6)
        bootstrap_states.append(last)
        terminal = bool(buffer.dones[last, 0]) and not bool(buffer.timeouts[last, 0])
        assert float(samples.dones[row]) == float(terminal)
    assert np.isclose(samples.discounts.numpy(), GAMMA**3).any()  # full 3-step returns
    assert (samples.discounts.numpy() > GAMMA**3 + 1e-6).any()  # some returns cut short by an episode's end
    assert np.array_equal(samples.next_observations.numpy(), buffer.next_observations[bootstrap_states, 0])
    # The agent's target: the n-step return plus γ^k max_a Q_target(s_{t+k}, a), zero past a terminal state.
    batch = model._transitions(samples)
    with torch.no_grad():
        next_q = model.q_net_target(batch.next_observations).max(dim=1, keepdim=True).values
    expected = batch.rewards + batch.discounts * (1 - batch.dones) * next_q
    assert torch.allclose(model.td_target(batch, 0), expected, atol=1e-6)
    one_step = batch.rewards + GAMMA * (1 - batch.dones) * next_q
    assert not torch.allclose(model.td_target(batch, 0), one_step, atol=1e-4)


def test_n_step_needs_sb3_replay_and_n_at_least_one():
    with pytest.raises(ConfigError, match=r"agent\.replay=sb3"):
        load_config(PRESET, ["agent.n_step=3", "agent.replay=frames"])
    with pytest.raises(ConfigError, match=r"agent\.n_step"):
        load_config(PRESET, ["agent.n_step=0"])


def _add(buffer: PerTaskReplayBuffer, reward: float, done: bool = False) -> None:
    obs = np.zeros((1, 1), dtype=np.float32)
    buffer.add(obs, obs + reward, np.zeros((1, 1)), np.array([reward]), np.array([done]), [{}])


def test_an_n_step_return_stops_at_a_mid_episode_switch_and_keeps_a_terminal():
    """Task 0 stores rewards 1, 2 and hands over in mid-episode (an inferred switch); on its revisit it stores 100, 200.

    The revisit's rows follow the old ones in task 0's buffer, but they are other play: the return of the row with
    reward 2 must stop there (2, bootstrapped with γ), not run on into 100 and 200.
    """
    space = gym.spaces.Box(-1e3, 1e3, (1,), np.float32)
    per_task = PerTaskReplayBuffer(
        10, space, gym.spaces.Discrete(2), device="cpu", buffer_class=NStepReplayBuffer,
        buffer_kwargs={"n_steps": 3, "gamma": 0.5},
    )  # fmt: skip
    per_task.add_task(), per_task.add_task()
    per_task.set_task(0)
    _add(per_task, 1.0), _add(per_task, 2.0)
    per_task.set_task(1)
    _add(per_task, 7.0, done=True)
    per_task.set_task(0)  # the revisit
    _add(per_task, 100.0), _add(per_task, 200.0)
    per_task.set_task(1)
    samples = per_task.buffer(0)._get_samples(np.array([0, 1, 2]))
    assert samples.rewards.ravel().tolist() == [1 + 0.5 * 2, 2, 100 + 0.5 * 200]
    assert samples.discounts.ravel().tolist() == [0.25, 0.5, 0.25]
    assert samples.dones.ravel().tolist() == [0, 0, 0]
    terminal = per_task.buffer(1)._get_samples(np.array([0]))  # a row that is done keeps its terminal
    assert terminal.dones.ravel().tolist() == [1] and terminal.rewards.ravel().tolist() == [7]
    # One-step buffers are left alone: only the n-step buffer reads across rows.
    plain = PerTaskReplayBuffer(10, space, gym.spaces.Discrete(2), device="cpu")
    plain.add_task(), plain.add_task()
    plain.set_task(0)
    _add(plain, 1.0)
    plain.set_task(1)
    assert not plain.buffer(0).timeouts.any()


def test_a_resumed_learn_cuts_the_newest_row_of_the_task(n_step_run):
    model = n_step_run
    buffer = model.replay_buffer.buffer(model.current_task)
    newest = (buffer.pos - 1) % buffer.buffer_size
    buffer.timeouts[newest] = buffer.dones[newest] = False  # as if stored in mid-episode
    model._last_obs = None  # a loaded model: its env starts a fresh episode
    model._setup_learn(10, reset_num_timesteps=False)
    assert buffer.timeouts[newest].all()
