"""The port between continual-learning methods and the agent: what a method may ask, and the hooks it may implement.

A method (EWC, MAS, distillation, GEM, rehearsal, VCL, ...) sees the agent only through ``AgentPort``: the shared
parameters, Q-values of a batch under any task's gains and biases, a sample of any task's replay memory and the
number of steps a task was trained. The agent calls the method's hooks (as Avalanche's plugins are called by its
strategy, Lomonaco et al. 2021), each of which returns statistics for the agent to log; a method never logs and never
learns the agent's type:

- ``before_update(task)``: once per update, before the loss is built (e.g. training a generator alongside);
- ``penalty(task)``: the named loss terms added to the TD loss (pure: no side effects);
- ``after_backward(task)``: once the gradient of the loss is in ``.grad`` and before the optimiser steps (gradient
  surgery: GEM, A-GEM);
- ``on_task_switch(left, entered)``: consolidation when the current task id changes;
- ``on_episode_start(task)`` and ``acting()``: when an episode of the stream begins, and a context around each
  choice of action (not evaluation): a method that explores (Thompson-style sampling of VCL's posterior) uses them;
- ``state_dict`` / ``load_state_dict``: everything the method must keep across a checkpoint.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

Stats = dict[str, float | torch.Tensor]
"""Statistics a hook returns: floats become scalars, 1-D tensors histograms, (C, H, W) tensors images."""


class Transitions(NamedTuple):
    """A minibatch of one task's transitions on the agent's device; ``discounts`` is γ^n per sample (n-step) or None."""

    observations: torch.Tensor
    actions: torch.Tensor  # (B, 1) int64
    next_observations: torch.Tensor
    dones: torch.Tensor  # (B, 1) float
    rewards: torch.Tensor  # (B, 1) float
    discounts: torch.Tensor | None


@runtime_checkable
class AgentPort(Protocol):
    """What a continual-learning method may ask of the agent."""

    @property
    def q_network(self) -> nn.Module:
        """The live (online) Q-network, whose ``TaskAffine`` layers hold every task's gains and biases."""
        ...

    @property
    def device(self) -> torch.device: ...

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation (e.g. (4, 84, 84) for ALE stacks, (10, 10, 10) for MinAtar grids)."""
        ...

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of the online network; a method may clear or edit its per-parameter state (Adam's moments)."""
        ...

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters every task shares (all but the per-task gains and biases), by name."""
        ...

    def using_task(self, task: int) -> AbstractContextManager[None]:
        """Inside the block the networks apply ``task``'s gains and biases; the active task is restored after."""
        ...

    def q_values(self, observations: torch.Tensor, task: int, target: bool = False) -> torch.Tensor:
        """Q(s, ·) of a batch under ``task``'s gains and biases (``target``: the target network's, without grad)."""
        ...

    def td_target(self, batch: Transitions, task: int) -> torch.Tensor:
        """The (B, 1) bootstrapped target the agent's own TD loss uses for ``batch``, under ``task``'s parameters."""
        ...

    def td_loss(self, batch: Transitions, task: int) -> torch.Tensor:
        """The agent's TD loss of ``batch`` under ``task``'s gains and biases (differentiable in the online net)."""
        ...

    def sample(self, task: int, batch_size: int) -> Transitions | None:
        """``batch_size`` transitions of ``task``'s replay memory (None when it holds none)."""
        ...

    def memory_size(self, task: int) -> int:
        """Transitions ``task``'s replay memory holds now."""
        ...

    def task_steps(self, task: int) -> int:
        """Agent steps trained so far on ``task``."""
        ...

    def known_tasks(self) -> list[int]:
        """Every task id created so far."""
        ...


class ContinualMethod:
    """Base of every method: each hook does nothing, so a method implements only the hooks it needs.

    Subclasses set ``name`` (the registry key: it prefixes the method's statistics and names its saved state).
    """

    name: str = "method"

    def before_update(self, task: int) -> Stats:
        return {}

    def penalty(self, task: int) -> dict[str, torch.Tensor]:
        return {}

    def after_backward(self, task: int) -> Stats:
        return {}

    def on_task_switch(self, left_task: int, entered_task: int) -> Stats:
        return {}

    def on_episode_start(self, task: int) -> None:
        return None

    def acting(self) -> AbstractContextManager[None]:
        return nullcontext()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def flat_grad(params: dict[str, nn.Parameter]) -> torch.Tensor:
    """The parameters' ``.grad`` concatenated into one vector (zeros where a parameter has none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params.values()])


def set_flat_grad(params: dict[str, nn.Parameter], vector: torch.Tensor) -> None:
    """Write a flat vector back into the parameters' ``.grad`` (the inverse of ``flat_grad``)."""
    offset = 0
    for p in params.values():
        n = p.numel()
        chunk = vector[offset : offset + n].view_as(p)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n
