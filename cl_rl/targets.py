"""Bootstrapped TD targets as pure functions (testable without an environment)."""

from __future__ import annotations

import torch


def dqn_target(
    next_q_target: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor, discount: float | torch.Tensor
) -> torch.Tensor:
    """Mnih et al. (2015): y = r + γ (1 − done) max_a Q_target(s', a). Shapes: (B, A), (B, 1), (B, 1) → (B, 1)."""
    return rewards + (1.0 - dones) * discount * next_q_target.max(dim=1, keepdim=True).values


def double_dqn_target(
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    discount: float | torch.Tensor,
) -> torch.Tensor:
    """van Hasselt et al. (2016): y = r + γ (1 − done) Q_target(s', argmax_a Q_online(s', a))."""
    best = next_q_online.argmax(dim=1, keepdim=True)
    return rewards + (1.0 - dones) * discount * next_q_target.gather(1, best)


def td_target(
    next_q_target: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    discount: float | torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """The one target every caller uses: Double DQN when the online net's Q(s', ·) is given, else DQN.

    ``discount`` is γ, or γ^n per sample for n-step returns (SB3's ``discounts``).
    """
    if next_q_online is None:
        return dqn_target(next_q_target, rewards, dones, discount)
    return double_dqn_target(next_q_online, next_q_target, rewards, dones, discount)
