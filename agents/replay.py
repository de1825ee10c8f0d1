"""One replay buffer per task id, behind SB3's ``ReplayBuffer`` interface.

The EWC paper's Atari agent keeps a separate short-term memory per (inferred) task and samples the current task's
memory for its updates (Kirkpatrick et al. 2017, supplementary). SB3 talks to ``model.replay_buffer`` only through
``add``, ``sample`` and ``size``; this class routes those to the active task's buffer, so the rest of SB3's loop is
unchanged. Each per-task buffer is any SB3 ``ReplayBuffer`` class (``buffer_class``).
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize


class PerTaskReplayBuffer(ReplayBuffer):
    """A ``ReplayBuffer`` of ``buffer_size`` transitions *per task*; ``set_task`` picks the one used."""

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        buffer_class: type[ReplayBuffer] = ReplayBuffer,
        buffer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        # Deliberately not calling ReplayBuffer.__init__: it would allocate a buffer that no task uses.
        self.buffer_size = buffer_size
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = get_device(device)
        self.n_envs = n_envs
        self.optimize_memory_usage = optimize_memory_usage
        self.handle_timeout_termination = handle_timeout_termination
        self.buffer_class = buffer_class
        self.buffer_kwargs = dict(buffer_kwargs or {})
        self.buffers: list[ReplayBuffer] = []
        self.active = -1

    # --- task bookkeeping -------------------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.buffers)

    def add_task(self) -> int:
        """Create the buffer of a new task; returns its id."""
        self.buffers.append(
            self.buffer_class(
                self.buffer_size,
                self.observation_space,
                self.action_space,
                device=self.device,
                n_envs=self.n_envs,
                optimize_memory_usage=self.optimize_memory_usage,
                handle_timeout_termination=self.handle_timeout_termination,
                **self.buffer_kwargs,
            )
        )
        return len(self.buffers) - 1

    def set_task(self, task: int) -> None:
        if not 0 <= task < len(self.buffers):
            raise ValueError(f"no replay buffer for task {task} ({len(self.buffers)} exist); add_task() first")
        self.active = task

    def buffer(self, task: int | None = None) -> ReplayBuffer:
        """The buffer of ``task`` (default: the active task)."""
        task = self.active if task is None else task
        if not 0 <= task < len(self.buffers):
            raise ValueError(f"no replay buffer for task {task} ({len(self.buffers)} exist)")
        return self.buffers[task]

    def sizes(self) -> list[int]:
        """Number of transitions held for each task."""
        return [b.size() for b in self.buffers]

    # --- the ReplayBuffer interface SB3 uses ------------------------------------------------------------------
    @property
    def pos(self) -> int:  # type: ignore[override]
        return self.buffer().pos if self.buffers else 0

    @property
    def full(self) -> bool:  # type: ignore[override]
        return self.buffer().full if self.buffers else False

    def size(self) -> int:
        return self.buffer().size() if self.buffers else 0

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.buffer().add(*args, **kwargs)

    def sample(self, batch_size: int, env: VecNormalize | None = None, task: int | None = None) -> ReplayBufferSamples:
        """A minibatch from ``task``'s buffer (default: the active task)."""
        return self.buffer(task).sample(batch_size, env=env)

    def reset(self) -> None:
        for b in self.buffers:
            b.reset()
