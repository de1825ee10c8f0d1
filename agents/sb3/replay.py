"""One replay buffer per task id, behind SB3's ``ReplayBuffer`` interface.

The EWC paper's Atari agent keeps a separate short-term memory per (inferred) task and samples the current task's
memory for its updates (Kirkpatrick et al. 2017, supplementary). SB3 talks to ``model.replay_buffer`` only through
``add``, ``sample`` and ``size``; this class routes those to the active task's buffer, so the rest of SB3's loop is
unchanged. Each per-task buffer is any SB3 ``ReplayBuffer`` class (``buffer_class``; the default for Atari is
``FrameStackReplayBuffer``, which stores each frame once).

``memory_budget`` (bytes, 0: none) bounds the memory of all buffers together: when a new task's buffer would exceed
it, the buffers of the tasks least recently active are freed (their transitions are lost; the task gets an empty
buffer if it comes back). A budget smaller than one buffer is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize


def set_buffer_settings(
    buffer: ReplayBuffer,
    buffer_size: int,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    device: torch.device | str,
    n_envs: int,
    optimize_memory_usage: bool,
    handle_timeout_termination: bool,
) -> None:
    """The settings SB3's ``ReplayBuffer`` constructor records, without the arrays it allocates.

    For ``ReplayBuffer`` subclasses that keep their transitions elsewhere (per task, or each frame once) and expose
    ``pos`` and ``full`` as properties, which ``BaseBuffer.__init__`` would try to assign.
    """
    buffer.buffer_size = buffer_size
    buffer.observation_space = observation_space
    buffer.action_space = action_space
    buffer.obs_shape = getattr(observation_space, "shape", ())
    buffer.action_dim = 1
    buffer.device = get_device(device)
    buffer.n_envs = n_envs
    buffer.optimize_memory_usage = optimize_memory_usage
    buffer.handle_timeout_termination = handle_timeout_termination


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
        memory_budget: int = 0,
    ) -> None:
        # Not ReplayBuffer.__init__: it would allocate a buffer that no task uses.
        set_buffer_settings(
            self, buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination,
        )  # fmt: skip
        self.buffer_class = buffer_class
        self.buffer_kwargs = dict(buffer_kwargs or {})
        self.memory_budget = memory_budget
        self.buffers: list[ReplayBuffer | None] = []
        self.last_active: list[int] = []  # per task: the activation count when it was last made active
        self.activations = 0
        self.freed = 0  # buffers freed to stay within the budget
        self.active = -1

    # --- task bookkeeping -------------------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.buffers)

    def add_task(self) -> int:
        """Create the buffer of a new task (freeing old ones if the memory budget requires it); returns its id."""
        self.buffers.append(self._new_buffer())
        self.last_active.append(self.activations)
        self._enforce_budget(keep=len(self.buffers) - 1)
        return len(self.buffers) - 1

    def _new_buffer(self) -> ReplayBuffer:
        buffer = self.buffer_class(
            self.buffer_size,
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            optimize_memory_usage=self.optimize_memory_usage,
            handle_timeout_termination=self.handle_timeout_termination,
            **self.buffer_kwargs,
        )
        if self.memory_budget and buffer_nbytes(buffer) > self.memory_budget:
            raise ValueError(
                f"one task's replay buffer needs {buffer_nbytes(buffer) / 2**20:.1f} MiB but the memory budget is "
                f"{self.memory_budget / 2**20:.1f} MiB: raise the budget or lower the buffer size"
            )
        return buffer

    def _enforce_budget(self, keep: int) -> None:
        """Free the least recently active buffers (never ``keep`` or the active one) until within the budget."""
        while self.memory_budget and self.nbytes > self.memory_budget:
            held = [t for t, b in enumerate(self.buffers) if b is not None and t not in (keep, self.active)]
            if not held:
                break
            oldest = min(held, key=lambda t: self.last_active[t])
            self.buffers[oldest] = None
            self.freed += 1

    def set_task(self, task: int) -> None:
        if not 0 <= task < len(self.buffers):
            raise ValueError(f"no replay buffer for task {task} ({len(self.buffers)} exist); add_task() first")
        if task != self.active:
            self.cut()  # an inferred switch may come in mid-episode: the old task's next rows are other play
        self.active = task
        self.activations += 1
        self.last_active[task] = self.activations
        if self.buffers[task] is None:  # freed for the budget: start an empty one
            self.buffers[task] = self._new_buffer()
            self._enforce_budget(keep=task)

    def cut(self) -> None:
        """Mark the active buffer's newest row (every env's) as a truncation, so that no n-step return runs past it.

        Needed where the rows stored next in this buffer do not continue that play: a task switch in mid-episode (an
        inferred task changes while the game goes on; on a revisit its rows follow the old ones) and a resumed run
        (it starts a fresh episode). As SB3's ``NStepReplayBuffer`` does for the row being written: a row that is done
        keeps its terminal, one that is not becomes a timeout (its return bootstraps from its own next observation).
        Only the n-step buffer reads across rows, so only it is marked: one-step buffers stay as they were.
        """
        buffer = self.buffers[self.active] if 0 <= self.active < len(self.buffers) else None
        if not isinstance(buffer, NStepReplayBuffer) or buffer.size() == 0:
            return
        row = (buffer.pos - 1) % buffer.buffer_size
        buffer.timeouts[row] = np.logical_or(buffer.timeouts[row], np.logical_not(buffer.dones[row]))

    def buffer(self, task: int | None = None) -> ReplayBuffer:
        """The buffer of ``task`` (default: the active task)."""
        task = self.active if task is None else task
        if not 0 <= task < len(self.buffers):
            raise ValueError(f"no replay buffer for task {task} ({len(self.buffers)} exist)")
        buffer = self.buffers[task]
        if buffer is None:
            raise ValueError(f"task {task}'s replay buffer was freed to stay within the memory budget")
        return buffer

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all held buffers."""
        return sum(buffer_nbytes(b) for b in self.buffers if b is not None)

    def sizes(self) -> list[int]:
        """Number of transitions held for each task (0 for a freed buffer)."""
        return [0 if b is None else stored_transitions(b) for b in self.buffers]

    def transitions(self) -> int:
        """Transitions the active task's buffer holds, from all envs (``size()`` counts SB3's rows of n_envs)."""
        return stored_transitions(self.buffer()) if self.buffers else 0

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
            if b is not None:
                b.reset()


def stored_transitions(buffer: ReplayBuffer) -> int:
    """Transitions ``buffer`` holds: SB3's ``size()`` counts rows of ``n_envs`` transitions (one per vector step);
    a buffer that counts transitions itself says so through a ``transitions()`` method (``FrameStackReplayBuffer``)."""
    count = getattr(buffer, "transitions", None)
    return int(count()) if callable(count) else buffer.size() * buffer.n_envs


def buffer_nbytes(buffer: ReplayBuffer) -> int:
    """Bytes of the numpy arrays a replay buffer allocated."""
    if hasattr(buffer, "nbytes"):
        return int(buffer.nbytes)
    return sum(v.nbytes for v in vars(buffer).values() if isinstance(v, np.ndarray))
