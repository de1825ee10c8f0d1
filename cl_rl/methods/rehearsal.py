"""Rehearsal of earlier tasks from their own replay memories (CLEAR-style replay; Rolnick et al. 2019).

The strongest simple baseline of continual RL: every update also takes TD terms on minibatches from earlier tasks'
own memories, each under that task's gains and biases and with the targets a DQN of that task would use now (the
agent's target network under the task's parameters, as for GEM). While task t is trained the loss gains

    weight · mean_{k ∈ K_t} L_TD(B_k; k),   B_k ~ D_k,

with K_t up to ``tasks_per_update`` earlier tasks drawn uniformly each update (all of them by default). CLEAR mixes
new and replayed experience in each batch for an off-policy actor-critic and adds behavioural cloning; a DQN's
learning is already off-policy, so the replayed TD term is the whole method here (no cloning term).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from cl_rl.methods.base import AgentPort, ContinualMethod


@dataclass
class RehearsalConfig:
    """Settings of rehearsal."""

    weight: float = 1.0  # mixing ratio: weight of the earlier tasks' TD term against the current task's
    batch_size: int = 32  # transitions of each rehearsed task per update
    tasks_per_update: int = 0  # earlier tasks rehearsed in each update, drawn uniformly (0: all of them)

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if self.batch_size < 1 or self.tasks_per_update < 0:
            raise ValueError(f"batch_size must be >= 1 and tasks_per_update >= 0, got {self}")


class Rehearsal(ContinualMethod):
    """Adds ``weight`` × the mean TD loss of minibatches of earlier tasks' memories to every update."""

    def __init__(self, name: str, config: RehearsalConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent

    def rehearsed_tasks(self, task: int) -> list[int]:
        earlier = [k for k in self.agent.known_tasks() if k != task and self.agent.memory_size(k) > 0]
        n = self.config.tasks_per_update
        return earlier if n == 0 or n >= len(earlier) else sorted(random.sample(earlier, n))

    def penalty(self, task: int) -> dict[str, torch.Tensor]:
        losses = []
        for k in self.rehearsed_tasks(task):
            batch = self.agent.sample(k, self.config.batch_size)
            if batch is not None:
                losses.append(self.agent.td_loss(batch, k))
        if not losses:
            return {}
        return {"td": self.config.weight * torch.stack(losses).mean()}
