"""L2 Init, regenerative regularisation (Kumar et al. 2023, "Maintaining plasticity in continual learning via
regenerative regularization").

A penalty pulls the shared weights towards their values at initialisation, rather than towards zero as weight decay:

    R(θ) = λ ‖θ − θ_0‖²,     ∇R = 2λ (θ − θ_0),

with θ_0 the network's weights when the method is built (the agent's initial weights). The paper's λ lies in
1e-2 … 1e-5 depending on the benchmark; the default here is not tuned for this project.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_rl.methods.base import AgentPort, ContinualMethod


@dataclass
class L2InitConfig:
    """Settings of L2 Init."""

    lam: float = 1e-3  # λ of λ‖θ − θ_0‖², added to the TD loss (a mean Huber loss per sample)

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


class L2Init(ContinualMethod):
    """Adds λ‖θ − θ_0‖² over the shared parameters to every update's loss."""

    def __init__(self, name: str, config: L2InitConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent
        self.initial = {name: p.detach().clone() for name, p in agent.shared_parameters().items()}

    def penalty(self, task: int) -> dict[str, torch.Tensor]:
        params = self.agent.shared_parameters()
        squares = [torch.sum((params[name] - start) ** 2) for name, start in self.initial.items()]
        return {"l2_init": self.config.lam * torch.stack(squares).sum()}

    def state_dict(self) -> dict:
        return {"initial": self.initial}

    def load_state_dict(self, state: dict) -> None:
        self.initial = {name: value.to(self.agent.device) for name, value in state["initial"].items()}
