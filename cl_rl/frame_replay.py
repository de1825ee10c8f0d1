"""A replay memory that stores each frame once and rebuilds frame stacks when sampling (as Dopamine does).

An Atari observation is a stack of the last ``k`` frames, so consecutive observations share k − 1 frames. Storing
``obs`` and ``next_obs`` per transition (SB3's ``ReplayBuffer``) keeps every frame up to 2k times: 56 KB per
transition for 4×84×84. Here each frame is stored once, with a link to the frame before it in the same episode; a
stack is rebuilt by following k − 1 links, so a transition costs one 84×84 frame (7 KB) plus a few numbers.

Episode boundaries come for free: an episode's first frame links to itself, so a stack that reaches back past the
start repeats the first frame, exactly as gymnasium's ``FrameStackObservation`` pads at reset; frames of another
episode are never reachable. An observation that does not continue the chain (the first of an episode, or any that
does not match the stored previous next-observation) starts a new chain from its own frames, and a terminal or
truncated transition keeps its own final next-observation frame, so bootstrapping from a truncation is exact.

Frames live in a ring slightly larger than the transition ring (episode starts cost one extra frame). A transition
whose oldest frame is overwritten leaves the memory (it is always among the oldest). Sampling is a few vectorised
gathers; nothing is copied twice. The frames are gathered by torch's ``index_select`` on a tensor that shares the
numpy ring's memory: about twice as fast as numpy's fancy indexing for 32×4 frames here (``scripts/bench_replay.py``).
Numpy and torch only: ``agents.sb3.frame_replay_buffer.FrameStackReplayBuffer`` serves it to SB3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FrameBatch:
    """A sampled minibatch as CPU tensors (stacks are (batch, k, H, W) uint8)."""

    observations: torch.Tensor
    actions: torch.Tensor
    next_observations: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor  # 1.0 where the next state is terminal (not merely truncated)
    indices: np.ndarray  # absolute transition numbers


class FrameReplay:
    """Ring of ``capacity`` transitions over a ring of single frames.

    :param capacity: transitions kept (the oldest leave first).
    :param frame_shape: (k, H, W) of an observation: k stacked frames, newest last.
    :param n_envs: parallel envs whose transitions interleave; each keeps its own frame chain.
    :param extra_frames: frames beyond ``capacity`` in the frame ring (default: capacity/64 + 8·n_envs + 8), room for
        the first frames of episodes and for chains still being extended.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int, int],
        n_envs: int = 1,
        action_shape: tuple[int, ...] = (),
        action_dtype: np.dtype | type = np.int64,
        extra_frames: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 transition, got {capacity}")
        if len(frame_shape) != 3:
            raise ValueError(f"frame_shape must be (stack, height, width), got {frame_shape}")
        self.capacity = capacity
        self.stack = frame_shape[0]
        self.n_envs = n_envs
        extra = self.default_extra_frames(capacity, n_envs) if extra_frames is None else extra_frames
        self.n_frames = capacity + extra
        self.frames = np.zeros((self.n_frames, *frame_shape[1:]), dtype=np.uint8)
        self._frames_tensor = torch.from_numpy(self.frames)  # the same memory
        self.prev = np.zeros(self.n_frames, dtype=np.int64)  # absolute number of the previous frame of its episode
        # Transitions (absolute numbers; ring slot = number % capacity).
        self.obs_ref = np.zeros(capacity, dtype=np.int64)
        self.next_ref = np.zeros(capacity, dtype=np.int64)
        self.oldest_ref = np.zeros(capacity, dtype=np.int64)  # the oldest frame the transition needs
        self.actions = np.zeros((capacity, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.frames_written = 0  # absolute number of the next frame
        self.head = 0  # absolute number of the next transition
        self.tail = 0  # absolute number of the oldest transition kept
        self._chain_end = np.full(n_envs, -1, dtype=np.int64)  # newest frame of each env's current chain

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_frames_tensor"]  # a view of `frames`: pickling it would store the frames twice
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._frames_tensor = torch.from_numpy(self.frames)

    # --- size -----------------------------------------------------------------------------------------------------
    @staticmethod
    def bytes_needed(capacity: int, frame_shape: tuple[int, int, int], n_envs: int = 1, action_bytes: int = 8) -> int:
        """Bytes a memory of this capacity allocates (as ``nbytes`` once built), without building it."""
        n_frames = capacity + FrameReplay.default_extra_frames(capacity, n_envs)
        per_frame = frame_shape[1] * frame_shape[2] + 8  # pixels, link
        per_transition = 3 * 8 + action_bytes + 4 + 4  # refs, action, reward, done
        return n_frames * per_frame + capacity * per_transition

    @staticmethod
    def default_extra_frames(capacity: int, n_envs: int) -> int:
        return capacity // 64 + 8 * n_envs + 8

    def __len__(self) -> int:
        return self.head - self.tail

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory's arrays (allocated up front)."""
        arrays = (self.frames, self.prev, self.obs_ref, self.next_ref, self.oldest_ref, self.actions)
        return sum(a.nbytes for a in arrays) + self.rewards.nbytes + self.dones.nbytes

    @property
    def bytes_per_transition(self) -> float:
        return self.nbytes / self.capacity

    # --- writing --------------------------------------------------------------------------------------------------
    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        terminal: np.ndarray,
        episode_end: np.ndarray,
    ) -> None:
        """Add one transition per env: arrays with a leading ``n_envs`` axis.

        ``terminal``: the next state is terminal (no bootstrapping). ``episode_end``: the episode ended (terminal or
        truncated), so the env's next ``obs`` starts a new chain. For a truncation ``next_obs`` is the real final
        observation (SB3 passes ``infos[i]['terminal_observation']``).
        """
        for e in range(self.n_envs):
            obs_ref = self._continue_or_start_chain(e, obs[e])
            next_ref = self._write_frame(next_obs[e, -1], previous=obs_ref)
            slot = self.head % self.capacity
            if len(self) == self.capacity:
                self.tail += 1
            self.obs_ref[slot], self.next_ref[slot] = obs_ref, next_ref
            self.oldest_ref[slot] = self._ancestors(np.array([obs_ref]))[0, 0]
            self.actions[slot] = action[e]
            self.rewards[slot] = reward[e]
            self.dones[slot] = terminal[e]
            self.head += 1
            self._chain_end[e] = -1 if episode_end[e] else next_ref
        self._evict_overwritten()

    def _continue_or_start_chain(self, env: int, obs: np.ndarray) -> int:
        """Absolute number of ``obs``'s newest frame, writing its frames first unless they continue ``env``'s chain."""
        end = self._chain_end[env]
        if (
            end >= 0
            and self.frames_written - end <= self.n_frames
            and np.array_equal(self.frames[end % self.n_frames], obs[-1])
        ):
            return int(end)
        # A new chain: the leading run of identical frames (reset padding) is stored once, linked to itself.
        first = 0
        while first + 1 < self.stack and np.array_equal(obs[first + 1], obs[0]):
            first += 1
        ref = self._write_frame(obs[0], previous=None)
        for k in range(first + 1, self.stack):
            ref = self._write_frame(obs[k], previous=ref)
        return ref

    def _write_frame(self, frame: np.ndarray, previous: int | None) -> int:
        ref = self.frames_written
        slot = ref % self.n_frames
        self.frames[slot] = frame
        self.prev[slot] = ref if previous is None else previous
        self.frames_written += 1
        return ref

    def _evict_overwritten(self) -> None:
        """Drop the oldest transitions whose frames the ring has overwritten."""
        lowest_kept = self.frames_written - self.n_frames
        while self.tail < self.head and self.oldest_ref[self.tail % self.capacity] < lowest_kept:
            self.tail += 1

    # --- reading --------------------------------------------------------------------------------------------------
    def _ancestors(self, refs: np.ndarray) -> np.ndarray:
        """(n, k) absolute frame numbers of the stacks ending at ``refs``, oldest first."""
        chain = np.empty((len(refs), self.stack), dtype=np.int64)
        chain[:, -1] = refs
        for k in range(self.stack - 2, -1, -1):
            chain[:, k] = self.prev[chain[:, k + 1] % self.n_frames]
        return chain

    def stacks(self, refs: np.ndarray) -> torch.Tensor:
        """(n, k, H, W) observations ending at frames ``refs``."""
        rows = torch.from_numpy((self._ancestors(refs) % self.n_frames).reshape(-1))
        return self._frames_tensor.index_select(0, rows).view(len(refs), self.stack, *self.frames.shape[1:])

    def valid(self, indices: np.ndarray) -> np.ndarray:
        """Which absolute transition numbers are still held with all their frames."""
        held = (indices >= self.tail) & (indices < self.head)
        return held & (self.oldest_ref[indices % self.capacity] >= self.frames_written - self.n_frames)

    def sample_indices(self, batch_size: int, randint: Callable[..., np.ndarray] = np.random.randint) -> np.ndarray:
        """``batch_size`` absolute transition numbers drawn uniformly from those held (with replacement).

        ``randint(low, high, size)`` draws the integers: numpy's global generator by default (as SB3's buffers do,
        so SB3's seeding covers it), or a ``Generator``'s ``integers``.
        """
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay memory")
        indices = randint(self.tail, self.head, size=batch_size)
        bad = ~self.valid(indices)
        while bad.any():  # only with several envs, when an old chain's frames were overwritten out of order
            indices[bad] = randint(self.tail, self.head, size=int(bad.sum()))
            bad = ~self.valid(indices)
        return indices

    def get(self, indices: np.ndarray) -> FrameBatch:
        slots = indices % self.capacity
        return FrameBatch(
            observations=self.stacks(self.obs_ref[slots]),
            actions=torch.from_numpy(self.actions[slots]),
            next_observations=self.stacks(self.next_ref[slots]),
            rewards=torch.from_numpy(self.rewards[slots]),
            dones=torch.from_numpy(self.dones[slots]),
            indices=indices,
        )

    def sample(self, batch_size: int, randint: Callable[..., np.ndarray] = np.random.randint) -> FrameBatch:
        return self.get(self.sample_indices(batch_size, randint))

    def reset(self) -> None:
        self.frames_written = self.head = self.tail = 0
        self._chain_end[:] = -1
