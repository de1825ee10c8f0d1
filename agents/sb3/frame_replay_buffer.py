"""SB3's ``ReplayBuffer`` interface over ``cl_rl.frame_replay.FrameReplay`` (each frame stored once).

Plugs in wherever SB3 takes a ``replay_buffer_class`` (and as each task's buffer in ``PerTaskReplayBuffer``) and
returns SB3's ``ReplayBufferSamples``, so ``DQN.train`` is unchanged. ~7.2 KB per transition for 4×84×84 frames
against SB3's 56 KB (28 KB with ``optimize_memory_usage``): ``scripts/bench_replay.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from agents.sb3.replay import set_buffer_settings
from cl_rl.frame_replay import FrameReplay


class FrameStackReplayBuffer(ReplayBuffer):
    """A ``ReplayBuffer`` for stacked-frame image observations (k, H, W) uint8 that stores each frame once."""

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        # Deliberately not calling ReplayBuffer.__init__: it would allocate obs and next_obs arrays.
        shape = getattr(observation_space, "shape", None)
        if not isinstance(observation_space, spaces.Box) or shape is None or len(shape) != 3:
            raise ValueError(
                f"FrameStackReplayBuffer needs (stack, height, width) image observations, got {observation_space}; "
                "use SB3's ReplayBuffer for other spaces"
            )
        if observation_space.dtype != np.uint8:
            raise ValueError(f"FrameStackReplayBuffer stores uint8 frames, got dtype {observation_space.dtype}")
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"FrameStackReplayBuffer supports Discrete actions (DQN), got {action_space}")
        # optimize_memory_usage is recorded but irrelevant here: frames are never stored twice.
        set_buffer_settings(
            self, buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination,
        )  # fmt: skip
        self.memory = FrameReplay(buffer_size, shape, n_envs=n_envs, action_shape=(1,))

    @property
    def pos(self) -> int:  # type: ignore[override]
        return self.memory.head % self.buffer_size

    @property
    def full(self) -> bool:  # type: ignore[override]
        return len(self.memory) == self.buffer_size

    def size(self) -> int:
        return len(self.memory)

    def transitions(self) -> int:
        """Transitions held, from all envs (``size()`` too counts transitions here, not SB3's rows of n_envs)."""
        return len(self.memory)

    @property
    def nbytes(self) -> int:
        return self.memory.nbytes

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        done = np.asarray(done, dtype=bool).reshape(self.n_envs)
        terminal = done.copy()
        if self.handle_timeout_termination:
            terminal &= ~np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
        self.memory.add(
            np.asarray(obs).reshape(self.n_envs, *self.obs_shape),
            np.asarray(next_obs).reshape(self.n_envs, *self.obs_shape),
            np.asarray(action).reshape(self.n_envs, 1),
            np.asarray(reward, dtype=np.float32).reshape(self.n_envs),
            terminal,
            done,
        )

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        if env is not None:
            raise ValueError("FrameStackReplayBuffer does not normalise observations (VecNormalize): Atari needs none")
        batch = self.memory.sample(batch_size)
        return ReplayBufferSamples(
            observations=batch.observations.to(self.device),
            actions=batch.actions.to(self.device),
            next_observations=batch.next_observations.to(self.device),
            dones=batch.dones.unsqueeze(1).to(self.device),
            rewards=batch.rewards.unsqueeze(1).to(self.device),
        )

    def reset(self) -> None:
        self.memory.reset()
