"""FrameReplay: stacks rebuilt from single frames equal the env's stacks, across episode boundaries and wrap-around."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.sb3.frame_replay_buffer import FrameStackReplayBuffer
from cl_rl.frame_replay import FrameReplay
from envs.atari import AtariSettings, make_atari_env


def _record(n_envs: int, steps: int, capacity: int, settings: AtariSettings, game: str = "Breakout"):
    """Feed a real ALE stream to SB3's ReplayBuffer and to FrameStackReplayBuffer exactly as SB3's loop does."""
    venv = DummyVecEnv([lambda i=i: make_atari_env(game, settings, seed=i) for i in range(n_envs)])
    venv.seed(0)
    reference = ReplayBuffer(capacity, venv.observation_space, venv.action_space, "cpu", n_envs=n_envs)
    frames = FrameStackReplayBuffer(capacity, venv.observation_space, venv.action_space, "cpu", n_envs=n_envs)
    rng = np.random.default_rng(0)
    obs = venv.reset()
    episode_ends = 0
    for _ in range(steps):
        actions = rng.integers(venv.action_space.n, size=n_envs)
        new_obs, rewards, dones, infos = venv.step(actions)
        next_obs = new_obs.copy()
        for i, done in enumerate(dones):
            if done:
                next_obs[i] = infos[i]["terminal_observation"]
                episode_ends += 1
        for buffer in (reference, frames):
            buffer.add(obs, next_obs, actions.reshape(n_envs, 1), rewards, dones, infos)
        obs = new_obs
    venv.close()
    return reference, frames, episode_ends


def _assert_same_transitions(reference: ReplayBuffer, frames: FrameStackReplayBuffer, n_envs: int) -> None:
    memory = frames.memory
    held = np.arange(memory.tail, memory.head)
    batch = memory.get(held)
    # Transitions are added env by env, so absolute number a is env a % n_envs at SB3 row a // n_envs.
    rows, envs = (held // n_envs) % reference.buffer_size, held % n_envs
    np.testing.assert_array_equal(batch.observations.numpy(), reference.observations[rows, envs])
    np.testing.assert_array_equal(batch.next_observations.numpy(), reference.next_observations[rows, envs])
    np.testing.assert_array_equal(batch.actions, reference.actions[rows, envs])
    np.testing.assert_array_equal(batch.rewards, reference.rewards[rows, envs])
    terminal = reference.dones[rows, envs] * (1 - reference.timeouts[rows, envs])
    np.testing.assert_array_equal(batch.dones, terminal)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_rebuilt_stacks_equal_the_envs_across_episode_ends_and_wrap_around(n_envs):
    # Short episodes (60 agent steps, truncated) and life-loss terminals: many starts, terminals and truncations.
    settings = AtariSettings(max_episode_frames=240, terminal_on_life_loss=True, noop_max=5)
    capacity = 400
    reference, frames, episode_ends = _record(n_envs, steps=700, capacity=capacity, settings=settings)
    assert episode_ends >= 10
    assert frames.memory.head == 700 * n_envs > capacity * n_envs  # wrapped around
    # SB3's buffer holds capacity rows × n_envs; ours holds capacity transitions in all (less the evicted oldest).
    assert capacity - 3 * n_envs <= frames.size() <= capacity
    _assert_same_transitions(reference, frames, n_envs)


def test_samples_are_sb3_samples_of_held_transitions():
    settings = AtariSettings(max_episode_frames=200)
    reference, frames, _ = _record(1, steps=300, capacity=1000, settings=settings, game="Pong")
    np.random.seed(0)
    sample = frames.sample(64)
    assert sample.observations.shape == (64, 4, 84, 84) and sample.observations.dtype.is_floating_point is False
    assert sample.actions.shape == (64, 1) and sample.rewards.shape == (64, 1) and sample.dones.shape == (64, 1)
    # Every sampled observation is one the env produced.
    produced = {reference.observations[i, 0].tobytes() for i in range(reference.pos)}
    assert all(o.numpy().tobytes() in produced for o in sample.observations)


def test_episode_start_padding_and_chain_are_stored_once():
    memory = FrameReplay(10, (4, 2, 2))
    f = [np.full((2, 2), v, np.uint8) for v in range(8)]
    start = np.stack([f[0]] * 4)  # reset padding repeats the first frame
    step1 = np.stack([f[0], f[0], f[0], f[1]])
    memory.add(start[None], step1[None], np.zeros((1,)), np.zeros(1), np.zeros(1, bool), np.zeros(1, bool))
    assert memory.frames_written == 2  # the padded reset stack costs one frame
    step2 = np.stack([f[0], f[0], f[1], f[2]])
    memory.add(step1[None], step2[None], np.zeros((1,)), np.zeros(1), np.ones(1, bool), np.ones(1, bool))
    assert memory.frames_written == 3  # a continuing observation costs no frame
    batch = memory.get(np.array([0, 1]))
    np.testing.assert_array_equal(batch.observations[1], step1)
    np.testing.assert_array_equal(batch.next_observations[1], step2)
    # After an episode end, a new episode's observation starts a new chain even if it looks like the old one.
    fresh = np.stack([f[5], f[5], f[6], f[7]])  # e.g. a stack that is not padded (no repeated leading frames)
    memory.add(fresh[None], fresh[None], np.zeros((1,)), np.zeros(1), np.zeros(1, bool), np.zeros(1, bool))
    np.testing.assert_array_equal(memory.get(np.array([2])).observations[0], fresh)


def test_bytes_per_transition_is_about_one_frame():
    memory = FrameReplay(50_000, (4, 84, 84))
    assert 84 * 84 <= memory.bytes_per_transition < 7.3 * 1024
    sb3_bytes = 2 * 4 * 84 * 84  # obs and next_obs per transition, before actions and rewards
    assert sb3_bytes / memory.bytes_per_transition > 7.5


def test_bad_spaces_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="stack, height, width"):
        FrameStackReplayBuffer(10, spaces.Box(0, 255, (84, 84), np.uint8), spaces.Discrete(4))
    with pytest.raises(ValueError, match="Discrete"):
        FrameStackReplayBuffer(10, spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="empty"):
        FrameReplay(4, (4, 2, 2)).sample(1)


def test_pickled_memory_keeps_one_copy_of_the_frames_and_samples_the_same():
    import pickle

    memory = FrameReplay(50, (4, 8, 8))
    rng = np.random.default_rng(0)
    for step in range(60):
        obs = rng.integers(0, 255, size=(1, 4, 8, 8), dtype=np.uint8)
        memory.add(obs, obs, np.zeros(1), np.ones(1), np.zeros(1, bool), np.array([step % 7 == 0]))
    data = pickle.dumps(memory)
    assert len(data) < 1.5 * memory.nbytes  # the torch view of the frames is not pickled as a second copy
    loaded = pickle.loads(data)
    indices = memory.sample_indices(16, np.random.default_rng(1).integers)
    np.testing.assert_array_equal(loaded.get(indices).observations, memory.get(indices).observations)
    loaded.frames[:] = 0  # the gathering view follows the loaded frames
    assert int(loaded.get(indices).observations.sum()) == 0
