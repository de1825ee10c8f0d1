"""Diagnostics of plasticity: whether a network can still learn, measured on a fixed probe batch.

Each function is plain torch on tensors the caller gathers (activations of a probe batch, parameters, Q-values):

- **τ-dormant units** (Sokar et al. 2023, "The dormant neuron phenomenon in deep RL", eq. 1): unit i of a layer with
  activations h has the score  s_i = E_x|h_i(x)| / ( (1/H) Σ_j E_x|h_j(x)| ),  and is τ-dormant when s_i ≤ τ. A
  convolutional unit is a channel (its mean over positions and the batch).
- **effective rank** (Kumar et al. 2021, "Implicit under-parameterization", srank_δ): with σ_1 ≥ σ_2 ≥ … the singular
  values of the (B, D) feature matrix Φ,  srank_δ(Φ) = min{ k : Σ_{i≤k} σ_i / Σ_i σ_i ≥ 1 − δ },  δ = 0.01.
- **stable rank** (Lyle et al. 2022; Rudelson & Vershynin 2007):  ‖Φ‖_F² / ‖Φ‖_2² = Σ σ_i² / σ_1².
- **weight norm** ‖θ‖₂, **distance** ‖θ − θ_start‖₂ from the weights at a task's start, **gradient norm** ‖∇L‖₂,
  **feature norm** E_x ‖φ(x)‖₂ (Lyle et al. 2024 watch all four grow or collapse).
- **policy churn** (Tang et al. 2025, C-CHAIN): the fraction of states of a fixed batch, not the update's minibatch,
  whose greedy action argmax_a Q(s, a) changes over one update.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

DORMANT_TAU = 0.025  # Sokar et al. 2023's τ for their DQN experiments
RANK_DELTA = 0.01  # Kumar et al. 2021's δ


def unit_scores(activations: torch.Tensor) -> torch.Tensor:
    """Sokar et al.'s normalised score s_i of every unit of one layer's (B, H) or (B, C, H, W) activations.

    A layer whose units are all silent scores 0 everywhere (every unit dormant), not 0/0.
    """
    magnitude = activations.abs()
    per_unit = magnitude.mean(dim=0) if magnitude.dim() == 2 else magnitude.transpose(0, 1).flatten(1).mean(dim=1)
    layer_mean = per_unit.mean()
    return per_unit / layer_mean if layer_mean > 0 else torch.zeros_like(per_unit)


def dormant_mask(activations: torch.Tensor, tau: float = DORMANT_TAU) -> torch.Tensor:
    """Which units of a layer are τ-dormant (s_i ≤ τ): a bool vector, one entry per unit (channel for conv maps)."""
    return unit_scores(activations) <= tau


def dormant_fraction(activations: torch.Tensor, tau: float = DORMANT_TAU) -> float:
    """The fraction of a layer's units that are τ-dormant."""
    return float(dormant_mask(activations, tau).float().mean())


def effective_rank(features: torch.Tensor, delta: float = RANK_DELTA) -> int:
    """Kumar et al.'s srank_δ of a (B, D) feature matrix: the fewest singular values holding 1 − δ of their sum."""
    return ranks(features, delta)[0]


def stable_rank(features: torch.Tensor) -> float:
    """‖Φ‖_F² / ‖Φ‖_2² of a (B, D) feature matrix (0 for a zero matrix)."""
    return ranks(features)[1]


def ranks(features: torch.Tensor, delta: float = RANK_DELTA) -> tuple[int, float]:
    """(effective rank, stable rank) of a (B, D) feature matrix from one singular value decomposition."""
    sigma = torch.linalg.svdvals(features.double())
    total = sigma.sum()
    if total <= 0:
        return 0, 0.0
    share = torch.cumsum(sigma, 0) / total
    effective = int(torch.searchsorted(share, torch.tensor(1.0 - delta, dtype=share.dtype)).item()) + 1
    return effective, float((sigma.square().sum() / sigma[0].square()).item())


def feature_norm(features: torch.Tensor) -> float:
    """The mean L2 norm of the rows of a (B, D) feature matrix."""
    return float(torch.linalg.vector_norm(features, dim=1).mean())


def l2_norm(tensors: Iterable[torch.Tensor]) -> float:
    """‖(t_1, t_2, …)‖₂: the L2 norm of the tensors taken together as one vector."""
    norms = [torch.linalg.vector_norm(t.detach()) for t in tensors]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def distance(params: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """‖θ − θ_ref‖₂ over the parameters both mappings name."""
    return l2_norm(params[name].detach() - reference[name] for name in params if name in reference)


def policy_churn(q_before: torch.Tensor, q_after: torch.Tensor) -> float:
    """The fraction of states whose greedy action differs between two (B, A) Q-value tables of the same states."""
    return float((q_before.argmax(dim=1) != q_after.argmax(dim=1)).float().mean())


@contextmanager
def captured_activations(module: nn.Module, kinds: tuple[type[nn.Module], ...] = (nn.ReLU,)) -> Iterator[list]:
    """Inside the block, each forward pass of ``module`` appends the output of every ``kinds`` layer to the list
    yielded, in the order they run (the hidden activations; the last ReLU's is the penultimate feature map)."""
    outputs: list[torch.Tensor] = []
    layers = [m for m in module.modules() if isinstance(m, kinds)]
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in layers]
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


def weight_layers(module: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """The convolutional and linear layers of ``module`` in registration order (the order data flows through the
    project's Q-networks: torso, then the Q-value layer)."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def initial_draw(layer: nn.Conv2d | nn.Linear) -> dict[str, torch.Tensor]:
    """A fresh draw of a layer's weight and bias from its initial distribution (``reset_parameters`` of a copy:
    PyTorch's default, Kaiming-uniform weights and uniform biases of bound 1/√fan_in)."""
    fresh = copy.deepcopy(layer)
    with torch.no_grad():
        fresh.reset_parameters()
    return {name: p.detach() for name, p in fresh.named_parameters()}
