"""Shrink & Perturb at task switches (Ash & Adams 2020, "On warm-starting neural network training").

When the current task changes, every shared weight and bias is shrunk towards zero and perturbed with noise from the
layer's own initial distribution:

    θ ← λ θ + σ ε,   ε ~ p_init(θ)      (for each conv and linear layer; the per-task gains and biases are kept)

so E[θ'] = λθ and Var[θ'] = σ² Var_init. Ash & Adams show that a warm-started network generalises worse than a fresh
one and that S&P closes the gap; in RL it restores plasticity at a task change (Lyle et al. 2023). The target network
is left as it is, so the next TD targets still come from the weights before the switch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cl_rl import plasticity
from cl_rl.methods.base import AgentPort, ContinualMethod, Stats


@dataclass
class ShrinkPerturbConfig:
    """Settings of Shrink & Perturb (not tuned for this project: λ and σ in the range of Ash & Adams' sweeps)."""

    shrink: float = 0.8  # λ: the weights are multiplied by it
    perturb: float = 0.1  # σ: the scale of the initial-distribution noise added

    def __post_init__(self) -> None:
        if not 0 <= self.shrink <= 1 or self.perturb < 0:
            raise ValueError(f"shrink must lie in [0, 1] and perturb be >= 0, got {self}")


@torch.no_grad()
def shrink_perturb(module: torch.nn.Module, shrink: float, perturb: float) -> None:
    """θ ← λθ + σε with ε a fresh initial draw, for every conv and linear layer of ``module``."""
    for layer in plasticity.weight_layers(module):
        noise = plasticity.initial_draw(layer)
        for name, param in layer.named_parameters():
            param.mul_(shrink).add_(noise[name], alpha=perturb)


class ShrinkPerturb(ContinualMethod):
    """Shrinks and perturbs the online network's shared layers at every task switch."""

    def __init__(self, name: str, config: ShrinkPerturbConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent

    def on_task_switch(self, left_task: int, entered_task: int) -> Stats:
        before = plasticity.l2_norm(self.agent.shared_parameters().values())
        shrink_perturb(self.agent.q_network, self.config.shrink, self.config.perturb)
        return {
            "weight_norm_before": before,
            "weight_norm_after": plasticity.l2_norm(self.agent.shared_parameters().values()),
        }
