"""ReDo: recycling dormant units (Sokar et al. 2023, "The dormant neuron phenomenon in deep reinforcement learning").

Every ``every`` updates, on a batch of the current task's replay, each hidden unit i of layer ℓ gets the score

    s_i^ℓ = E_x|h_i^ℓ(x)| / ( (1/H^ℓ) Σ_j E_x|h_j^ℓ(x)| )        (eq. 1; a conv unit is a channel)

and every τ-dormant unit (s_i^ℓ ≤ τ) is recycled: its incoming weights and bias are drawn again from the layer's
initial distribution, its outgoing weights are set to zero (so the network's output is unchanged at that moment), and
the optimiser's moments of those weights are cleared. The per-task gains and biases are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cl_rl import plasticity
from cl_rl.methods.base import AgentPort, ContinualMethod, Stats


@dataclass
class ReDoConfig:
    """Settings of ReDo (the paper's DQN values: τ = 0.025, recycling every 1,000 updates)."""

    tau: float = 0.025  # a unit is recycled when its normalised score is <= tau
    every: int = 1_000  # updates between two recyclings
    batch_size: int = 256  # states of the current task's replay the scores are taken on

    def __post_init__(self) -> None:
        if self.tau < 0 or self.every < 1 or self.batch_size < 2:
            raise ValueError(f"ReDo needs tau >= 0, every >= 1 and batch_size >= 2, got {self}")


def outgoing_columns(layer: nn.Conv2d | nn.Linear, units: int) -> int:
    """Input columns of ``layer`` per unit of the layer before it: 1, or H·W when a conv map was flattened into it."""
    inputs = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
    assert inputs % units == 0, f"{inputs} inputs are not a whole number per unit of {units}"
    return inputs // units


@torch.no_grad()
def recycle(
    layers: Sequence[nn.Conv2d | nn.Linear],
    activations: Sequence[torch.Tensor],
    tau: float,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[torch.Tensor]:
    """Recycle the τ-dormant units of ``layers[i]``, scored on ``activations[i]`` (its post-activation outputs).

    ``layers[i + 1]`` is the layer the units feed. Returns each layer's dormant mask.
    """
    masks = []
    for layer, following, hidden in zip(layers, layers[1:], activations, strict=False):
        mask = plasticity.dormant_mask(hidden, tau)
        masks.append(mask)
        if not mask.any():
            continue
        fresh = plasticity.initial_draw(layer)
        for name, param in layer.named_parameters():
            param[mask] = fresh[name][mask]
        block = outgoing_columns(following, len(mask))
        columns = mask.repeat_interleave(block)
        following.weight[:, columns] = 0
        if optimizer is not None:
            for param in layer.parameters():
                clear_moments(optimizer, param, (mask,))
            clear_moments(optimizer, following.weight, (slice(None), columns))
    return masks


def clear_moments(optimizer: torch.optim.Optimizer, param: torch.Tensor, index: tuple) -> None:
    """Zero the optimiser's per-weight state (Adam's first and second moments) of ``param[index]``."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value[index] = 0


class ReDo(ContinualMethod):
    """Recycles the current task's τ-dormant units every ``every`` updates (under that task's gains and biases)."""

    def __init__(self, name: str, config: ReDoConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent
        self.updates = 0

    def before_update(self, task: int) -> Stats:
        self.updates += 1
        if self.updates % self.config.every:
            return {}
        batch = self.agent.sample(task, self.config.batch_size)
        if batch is None:
            return {}
        net = self.agent.q_network
        with torch.no_grad(), plasticity.captured_activations(net) as hidden:
            self.agent.q_values(batch.observations, task)
        masks = recycle(plasticity.weight_layers(net), hidden, self.config.tau, self.agent.optimizer)
        recycled = torch.cat(masks).float()
        return {"recycled": float(recycled.sum()), "recycled_fraction": float(recycled.mean())}

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
