"""Builds the consolidation penalty of a ``ContinualDQN`` from its settings (``consolidation:`` in the config).

The penalty itself is plain torch in ``cl_rl.consolidation``; this module only tells it where a task's data lives
(that task's replay buffer) and which scalar's per-sample gradients define the importance.

Which log-likelihood is the Fisher's for a Q-network? A DQN defines no likelihood, so we offer two (``fisher``):
- ``softmax`` (default): log π(a|s) of the Boltzmann policy π = softmax(Q(s, ·)) with a sampled from π. This is the
  *true* Fisher of the distribution the network implies; it needs no targets, does not depend on the target network
  or on rewards, and stays positive where the TD error happens to be small — so it measures how much the network's
  *behaviour* on the task depends on each parameter, which is what EWC should protect.
- ``td``: −½ (Q(s, a) − y)² with a from the replay buffer and y the (Double-)DQN target: the empirical Fisher of a
  unit-variance Gaussian around the TD target; its gradient is the per-sample TD-loss gradient.
MAS uses ‖Q(s, ·)‖²₂ (Aljundi et al. 2018) and needs neither actions nor rewards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from cl_rl.consolidation import QuadraticPenalty
from cl_rl.importance import diagonal_importance, softmax_policy_log_likelihood, squared_output_norm, td_log_likelihood
from cl_rl.targets import double_dqn_target
from cl_rl.task_modulation import shared_parameters

if TYPE_CHECKING:
    from agents.sb3.continual_dqn import ContinualDQN

METHODS = ("none", "ewc", "online_ewc", "mas")


def build_consolidation(model: ContinualDQN, settings: dict[str, Any]) -> QuadraticPenalty | None:
    """The penalty of ``settings['method']`` (None for 'none')."""
    method = settings.get("method", "none")
    if method not in METHODS:
        raise ValueError(f"consolidation.method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "none":
        return None
    params = dict(shared_parameters(model.q_net))
    return QuadraticPenalty(
        method,
        params,
        importance_fn=lambda task: task_importance(model, task, method, settings),
        lam=settings.get("lam", 400.0),
        mode="online" if method == "online_ewc" else "per_task",
        decay=settings.get("online_decay", 1.0),
        normalize=settings.get("normalize", False),
        min_task_steps=settings.get("min_task_steps", 0),
        task_steps=lambda task: model.epsilon.steps.get(task, 0),
    )


def task_importance(model: ContinualDQN, task: int, method: str, settings: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Fisher (EWC) or Ω (MAS) of ``task``'s shared parameters over minibatches of its own replay buffer."""
    params = dict(shared_parameters(model.q_net))
    with model.policy.using_task(task):  # the task's own gains and biases, as when it was trained
        batches = _importance_batches(model, task, method, settings)
        if method == "mas":
            return diagonal_importance(model.q_net, params, squared_output_norm, batches, reduce="abs")
        scalar = td_log_likelihood if settings.get("fisher", "softmax") == "td" else softmax_policy_log_likelihood
        return diagonal_importance(model.q_net, params, scalar, batches, reduce="square")


def _importance_batches(
    model: ContinualDQN, task: int, method: str, settings: dict[str, Any]
) -> Iterator[tuple[torch.Tensor, ...]]:
    buffer = model.replay_buffer.buffer(task)
    for _ in range(settings.get("batches", 100)):
        data = buffer.sample(settings.get("batch_size", 32))
        if method == "mas":
            yield (data.observations,)
            continue
        with torch.no_grad():
            if settings.get("fisher", "softmax") == "td":
                target = double_dqn_target(
                    model.q_net(data.next_observations),
                    model.q_net_target(data.next_observations),
                    data.rewards,
                    data.dones,
                    model.gamma,
                )
                yield data.observations, data.actions.long().squeeze(1), target.squeeze(1)
            else:
                q = model.q_net(data.observations)
                yield data.observations, torch.distributions.Categorical(logits=q).sample()
