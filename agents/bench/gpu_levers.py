"""Milliseconds per update of the full agent, plain and with each lever that pays on a GPU (``scripts/gpu_check.py``).

The update is the full agent's (``ContinualDQN.train`` with EWC): this agent's Q-network (Nature CNN, per-task
gains, 18 actions), the Double-DQN target, the Huber loss, EWC's closed-form gradient under two anchors, clipping at
norm 10 and fused Adam, on minibatches of 32 frame stacks from a frame replay memory (``cl_rl.frame_replay``).

- ``plain``: as the agent runs it: the minibatch is drawn and stacked on the host (``FrameReplay.sample``), copied to
  the device, and the loss is read back every update (``float``: one host synchronisation per update, as the agent's
  logging does);
- ``device replay``: the memory's frames and links live on the device (``DeviceFrameReplay``): indices are drawn and
  stacks gathered there, so no minibatch crosses the bus;
- ``no host sync``: the losses stay on the device and are read once every ``sync_every`` updates;
- ``torch.compile``: the loss (both forwards of the target, the online forward, Huber) through ``torch.compile``,
  with the two levers above;
- ``CUDA graph``: the whole update (draw, forwards, backward, EWC gradient, clipping, Adam with ``capturable``
  state) captured once and replayed: one launch per update instead of hundreds. CUDA only.

Each variant runs interleaved ``repeats`` times (median); a GPU's clock is read after ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from torch.nn import functional as F

from agents.sb3.policy import ContinualDQNPolicy
from cl_rl.consolidation import QuadraticPenalty
from cl_rl.frame_replay import FrameReplay
from cl_rl.targets import td_target
from cl_rl.task_modulation import shared_parameters

PLAIN = "plain (host replay, loss read every update)"
DEVICE_REPLAY = "replay sampled on the device"
NO_SYNC = "no host sync per update"
BOTH = "device replay + no host sync"
COMPILED = "torch.compile loss (+ device replay, no sync)"
GRAPH = "CUDA graph of the whole update (+ device replay)"
LEVERS = (PLAIN, DEVICE_REPLAY, NO_SYNC, BOTH, COMPILED, GRAPH)


class Batch(NamedTuple):
    observations: th.Tensor  # (B, k, H, W) uint8
    actions: th.Tensor  # (B, 1) int64
    next_observations: th.Tensor
    rewards: th.Tensor  # (B, 1) float32
    dones: th.Tensor  # (B, 1) float32, 1 where the next state is terminal


class DeviceFrameReplay:
    """A copy of a one-env ``FrameReplay`` on a device, sampled there: the same stacks as the host memory's ``get``.

    Indices are drawn with the device's generator and each stack follows the frame links (``prev``) back ``k − 1``
    times, as ``FrameReplay._ancestors`` does on the host. One env only: every transition between ``tail`` and
    ``head`` is then held with all its frames (the host memory evicts the others as it writes), so no index is redrawn.
    """

    def __init__(self, memory: FrameReplay, device: th.device) -> None:
        if memory.n_envs != 1 or len(memory) == 0:
            raise ValueError(f"DeviceFrameReplay copies a filled one-env memory, got n_envs={memory.n_envs}")
        put = lambda a: th.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
        self.frames, self.prev = put(memory.frames), put(memory.prev)
        self.obs_ref, self.next_ref = put(memory.obs_ref), put(memory.next_ref)
        self.actions = put(memory.actions).long().view(memory.capacity, -1)
        self.rewards, self.dones = put(memory.rewards), put(memory.dones)
        self.capacity, self.n_frames, self.stack = memory.capacity, memory.n_frames, memory.stack
        self.tail, self.head, self.device = memory.tail, memory.head, device

    def stacks(self, refs: th.Tensor) -> th.Tensor:
        """(n, k, H, W) observations ending at absolute frame numbers ``refs``."""
        chain = [refs]
        for _ in range(self.stack - 1):
            chain.append(self.prev[chain[-1] % self.n_frames])
        rows = th.stack(chain[::-1], dim=1) % self.n_frames
        return self.frames[rows.view(-1)].view(len(refs), self.stack, *self.frames.shape[1:])

    def get(self, indices: th.Tensor) -> Batch:
        slots = indices % self.capacity
        return Batch(
            self.stacks(self.obs_ref[slots]),
            self.actions[slots],
            self.stacks(self.next_ref[slots]),
            self.rewards[slots].unsqueeze(1),
            self.dones[slots].unsqueeze(1),
        )

    def sample(self, batch_size: int) -> Batch:
        return self.get(th.randint(self.tail, self.head, (batch_size,), device=self.device))


def filled_memory(
    capacity: int, frame_shape: tuple[int, int, int] = (4, 84, 84), seed: int = 0, transitions: int | None = None
) -> FrameReplay:
    """A one-env frame memory of ``capacity`` given ``transitions`` (default: as many) of random frames in episodes
    of 100 steps (more than ``capacity``: the rings wrap)."""
    rng = np.random.default_rng(seed)
    memory = FrameReplay(capacity, frame_shape, action_shape=(1,))
    k = frame_shape[0]
    transitions = capacity if transitions is None else transitions
    frames = rng.integers(0, 256, (transitions + k + 1, *frame_shape[1:]), dtype=np.uint8)
    for t in range(transitions):
        end = (t + 1) % 100 == 0
        memory.add(
            frames[None, t : t + k],
            frames[None, t + 1 : t + k + 1],
            rng.integers(0, 18, (1, 1)),
            rng.random(1, dtype=np.float32),
            np.array([end]),
            np.array([end]),
        )
    return memory


@dataclass
class UpdateTimes:
    ms: dict[str, float]  # median ms per update, by lever
    skipped: dict[str, str]  # lever: why it was not measured
    compile_seconds: float | None = None


class FullAgentUpdate:
    """The full agent's update (see the module docstring) on ``device``, with a plain and a capturable Adam."""

    def __init__(self, device: th.device, anchors: int = 2, batch_size: int = 32, seed: int = 0) -> None:
        th.manual_seed(seed)
        space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
        policy = ContinualDQNPolicy(space, spaces.Discrete(18), lambda _: 1e-4, network="nature")
        self.policy = policy.to(device)
        for _ in range(anchors + 1):
            self.policy.add_task()
        self.task = anchors
        self.policy.set_task(self.task)
        self.q, self.target = self.policy.q_net, self.policy.q_net_target
        params = dict(shared_parameters(self.q))
        self.penalty = QuadraticPenalty("ewc", params, lambda task: {n: th.rand_like(p) for n, p in params.items()})
        for task in range(anchors):
            self.penalty.on_task_switch(task, task + 1)
        self.parameters = [p for p in self.q.parameters()]
        self.adam = th.optim.Adam(self.parameters, lr=1e-4, fused=True)
        self.batch_size, self.device = batch_size, device

    def loss(self, batch: Batch) -> th.Tensor:
        """Huber loss of Q(s, a) against the Double-DQN target (γ = 0.99), as ``ContinualDQN._td_loss``."""
        with th.no_grad():
            next_q_target = self.target(batch.next_observations)
            next_q_online = self.q(batch.next_observations)
            y = td_target(next_q_target, batch.rewards, batch.dones, 0.99, next_q_online)
        return F.smooth_l1_loss(self.q(batch.observations).gather(1, batch.actions), y)

    def step(self, batch: Batch, loss_of: Callable[[Batch], th.Tensor], adam: th.optim.Optimizer) -> th.Tensor:
        """One update: backward, EWC's gradient, clipping, Adam; returns the loss (still on the device)."""
        loss = loss_of(batch)
        adam.zero_grad(set_to_none=True)
        loss.backward()
        self.penalty.add_gradient(self.task)
        th.nn.utils.clip_grad_norm_(self.parameters, 10.0)
        adam.step()
        return loss.detach()


def host_batch(memory: FrameReplay, batch_size: int, device: th.device) -> Batch:
    """A minibatch drawn on the host and copied to ``device``, as ``FrameStackReplayBuffer.sample`` does."""
    b = memory.sample(batch_size)
    return Batch(
        b.observations.to(device),
        b.actions.long().to(device),
        b.next_observations.to(device),
        b.rewards.unsqueeze(1).to(device),
        b.dones.unsqueeze(1).to(device),
    )


def _sync(device: th.device) -> None:
    if device.type == "cuda":
        th.cuda.synchronize(device)


def _graph_update(agent: FullAgentUpdate, replay: DeviceFrameReplay) -> Callable[[], th.Tensor]:
    """The whole update captured in a CUDA graph (after warm-up on a side stream, as torch's docs show)."""
    adam = th.optim.Adam(agent.parameters, lr=1e-4, fused=True, capturable=True)
    stream = th.cuda.Stream(agent.device)
    stream.wait_stream(th.cuda.current_stream(agent.device))
    with th.cuda.stream(stream):
        for _ in range(3):
            agent.step(replay.sample(agent.batch_size), agent.loss, adam)
    th.cuda.current_stream(agent.device).wait_stream(stream)
    graph = th.cuda.CUDAGraph()
    adam.zero_grad(set_to_none=True)
    with th.cuda.graph(graph):
        static_loss = agent.step(replay.sample(agent.batch_size), agent.loss, adam)

    def replay_graph() -> th.Tensor:
        graph.replay()
        return static_loss

    return replay_graph


def time_update_levers(
    device: th.device,
    capacity: int = 10_000,
    iters: int = 50,
    repeats: int = 3,
    sync_every: int = 100,
    compile: bool = True,
    deadline: float = float("inf"),
) -> UpdateTimes:
    """Median ms per update of each lever in ``LEVERS`` (CUDA graph: CUDA only; torch.compile: when ``compile``).

    Rounds stop at ``deadline`` (a ``time.perf_counter()`` value) once every variant has at least one round.
    """
    agent = FullAgentUpdate(device)
    memory = filled_memory(capacity)
    on_device = DeviceFrameReplay(memory, device)
    skipped: dict[str, str] = {}
    from_host = lambda: host_batch(memory, agent.batch_size, device)  # noqa: E731
    from_device = lambda: on_device.sample(agent.batch_size)  # noqa: E731
    eager: dict[str, tuple[Callable[[], Batch], Callable[[Batch], th.Tensor], int]] = {
        PLAIN: (from_host, agent.loss, 1),
        DEVICE_REPLAY: (from_device, agent.loss, 1),
        NO_SYNC: (from_host, agent.loss, sync_every),
        BOTH: (from_device, agent.loss, sync_every),
    }
    compile_seconds = None
    if compile:
        compiled = th.compile(agent.loss)
        started = time.perf_counter()
        try:
            agent.step(from_device(), compiled, agent.adam)
            _sync(device)
        except Exception as err:  # a compiler missing on the machine must not cost the other levers' figures
            skipped[COMPILED] = f"torch.compile failed: {type(err).__name__}: {str(err)[:200]}"
        else:
            compile_seconds = time.perf_counter() - started
            eager[COMPILED] = (from_device, compiled, sync_every)
    else:
        skipped[COMPILED] = "not asked: --no-compile, or not on CUDA (on a CPU compiling outlasts the part's budget)"

    def run_eager(draw: Callable[[], Batch], loss_of: Callable[[Batch], th.Tensor], read_every: int) -> None:
        losses: list[th.Tensor] = []
        for _ in range(iters):
            losses.append(agent.step(draw(), loss_of, agent.adam))
            if len(losses) == read_every:
                float(th.stack(losses).mean())  # what the agent logs: a host synchronisation
                losses = []
        if losses:
            float(th.stack(losses).mean())

    variants: dict[str, Callable[[], None]] = {
        name: functools.partial(run_eager, *args) for name, args in eager.items()
    }
    if device.type == "cuda":
        try:
            replay_graph = _graph_update(agent, on_device)
        except Exception as err:
            skipped[GRAPH] = f"capture failed: {type(err).__name__}: {str(err)[:200]}"
        else:

            def run_graph() -> None:
                losses = [replay_graph().clone() for _ in range(iters)]
                float(th.stack(losses).mean())

            variants[GRAPH] = run_graph
    else:
        skipped[GRAPH] = "needs a CUDA device"
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        if r and time.perf_counter() > deadline:
            break
        for name, run in variants.items():
            run()  # warm-up: the first round of each variant also fills Adam's state and cuDNN's choices
            _sync(device)
            started = time.perf_counter()
            run()
            _sync(device)
            times[name].append((time.perf_counter() - started) / iters * 1e3)
    return UpdateTimes({name: float(np.median(t)) for name, t in times.items()}, skipped, compile_seconds)
