"""C-CHAIN: churn reduction against loss of plasticity (Tang et al. 2025, "Mitigating plasticity loss in continual
reinforcement learning by reducing churn"; the value-churn reduction of CHAIN, Tang & Berseth 2024).

Churn is the change of the network's outputs on states outside the minibatch an update trains on. Each update adds

    L_CR(θ_t) = λ · E_{s ∈ B_ref} ‖ Q_{θ_t}(s, ·) − Q_{θ_{t−1}}(s, ·) ‖²,

with B_ref a reference batch of the current task's replay drawn apart from the training minibatch and θ_{t−1} the
weights before the previous update (against θ_t itself the term and its gradient would be zero). The Q-values of
θ_{t−1} are taken one update ahead: at update t−1 the next reference batch is drawn and its Q-values computed, so no
copy of the network is kept. C-CHAIN adapts λ to keep L_CR a set fraction of the main loss; this module keeps λ
fixed (a setting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_rl.methods.base import AgentPort, ContinualMethod, Stats


@dataclass
class CChainConfig:
    """Settings of churn reduction (λ not tuned for this project)."""

    lam: float = 0.1  # λ of the churn-reduction term
    batch_size: int = 32  # states of the reference batch (the training minibatch's size, as the paper)

    def __post_init__(self) -> None:
        if self.lam < 0 or self.batch_size < 1:
            raise ValueError(f"lam must be >= 0 and batch_size >= 1, got {self}")


class CChain(ContinualMethod):
    """Penalises the change of Q(s, ·) on a reference batch over the last update."""

    def __init__(self, name: str, config: CChainConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent
        self.next: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (task, states, Q of those before this update)
        self.current: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def before_update(self, task: int) -> Stats:
        self.current, self.next = self.next, None
        batch = self.agent.sample(task, self.config.batch_size)
        if batch is not None:
            with torch.no_grad():
                self.next = (task, batch.observations, self.agent.q_values(batch.observations, task))
        return {}

    def penalty(self, task: int) -> dict[str, torch.Tensor]:
        if self.current is None or self.current[0] != task:  # the first update of a visit: no previous weights
            return {}
        _, states, q_previous = self.current
        churn = (self.agent.q_values(states, task) - q_previous).pow(2).sum(dim=1).mean()
        return {"churn": self.config.lam * churn}

    def on_task_switch(self, left_task: int, entered_task: int) -> Stats:
        self.current = self.next = None
        return {}
