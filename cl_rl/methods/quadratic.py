"""EWC, online EWC and MAS as methods: the quadratic penalty of ``cl_rl.consolidation`` fed with importances.

The penalty (Kirkpatrick et al. 2017, eq. 3; Schwarz et al. 2018, eq. 9; Aljundi et al. 2018) and the per-sample
importance estimators (``cl_rl.importance``) are pure maths; this module says where a task's data comes from (its own
replay memory, through the ``AgentPort``) and which scalar's per-sample gradients define the importance.

Which log-likelihood is the Fisher's for a Q-network? A DQN defines no likelihood, so two are offered (``fisher``):
- ``softmax`` (default): log π(a|s) of the Boltzmann policy π = softmax(Q(s, ·)) with a sampled from π. This is the
  *true* Fisher of the distribution the network implies; it needs no targets and stays positive where the TD error
  happens to be small, so it measures how much the network's *behaviour* on the task depends on each parameter.
- ``td``: −½ (Q(s, a) − y)² with a from the replay memory and y the agent's own TD target (``AgentPort.td_target``,
  the very target of its loss: Double DQN or not, n-step discounts included): the empirical Fisher of a unit-variance
  Gaussian around the TD target.
MAS uses ‖Q(s, ·)‖²₂ and needs neither actions nor rewards.

Speed (``closed_form``, default on): the penalty enters no autograd graph; ``after_backward`` adds its closed-form
gradient λ Σ_k F_k ⊙ (θ − θ*_k) from two merged tensors per parameter (``QuadraticPenalty.add_gradient``), so an
update costs the same with 1 or 10 anchors. Each anchor's value is computed only every ``log_every`` updates (and at
the first update of a task) and returned as the statistic ``penalty/<term>``, which the agent logs as
``train/penalty/<name>/<term>`` like any penalty term; it is then not part of ``train/loss``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from cl_rl.consolidation import QuadraticPenalty
from cl_rl.importance import diagonal_importance, softmax_policy_log_likelihood, squared_output_norm, td_log_likelihood
from cl_rl.methods.base import AgentPort, ContinualMethod, Stats


@dataclass
class MASConfig:
    """Memory Aware Synapses (Aljundi et al. 2018): Ω = E|∂‖Q(s,·)‖²/∂θ| in the quadratic penalty."""

    lam: float = 400.0  # λ of the quadratic penalty (the EWC paper's Atari agent: 400)
    batches: int = 100  # minibatches of the left task's memory per importance estimate (the EWC paper: 100)
    batch_size: int = 32  # samples per such minibatch (the EWC paper: 32)
    min_task_steps: int = 0  # agent steps a task is trained before it gets an anchor (the EWC paper: 5M)
    normalize: bool = False  # divide each task's importance by its mean, so λ means the same for every game
    closed_form: bool = True  # gradient of the merged anchors added after backward (False: autograd, anchor by anchor)
    log_every: int = 100  # updates between the anchors' logged values, closed form only (and at a task's first update)

    def __post_init__(self) -> None:
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        for name in ("batches", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_task_steps < 0:
            raise ValueError(f"min_task_steps must be >= 0, got {self.min_task_steps}")


@dataclass
class EWCConfig(MASConfig):
    """Elastic weight consolidation with one anchor per earlier task (Kirkpatrick et al. 2017)."""

    fisher: Literal["softmax", "td"] = "softmax"  # which log-likelihood the Fisher is taken of (module docstring)


@dataclass
class OnlineEWCConfig(EWCConfig):
    """Online EWC (Schwarz et al. 2018): one accumulated Fisher F* ← γ F* + F_new at the latest anchor."""

    decay: float = 1.0  # γ of eq. 9

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {self.decay}")


class QuadraticMethod(ContinualMethod):
    """EWC, online EWC or MAS (by ``name``): a ``QuadraticPenalty`` whose importances come from the task's memory."""

    def __init__(self, name: str, config: MASConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent
        self.core = QuadraticPenalty(
            name,
            agent.shared_parameters(),
            importance_fn=self.importance,
            lam=config.lam,
            mode="online" if isinstance(config, OnlineEWCConfig) else "per_task",
            decay=config.decay if isinstance(config, OnlineEWCConfig) else 1.0,
            normalize=config.normalize,
            min_task_steps=config.min_task_steps,
            task_steps=agent.task_steps,
        )
        self._since_logged: int | None = None  # updates since the values were last logged (None: not on this task)
        self._logged_task = -1

    def penalty(self, task: int) -> dict[str, torch.Tensor]:
        return {} if self.config.closed_form else self.core.penalty(task)

    def after_backward(self, task: int) -> Stats:
        """Closed form: add the merged anchors' gradient; every ``log_every`` updates, each anchor's value."""
        if not self.config.closed_form or not self.core.add_gradient(task):
            return {}
        if task != self._logged_task or self._since_logged is None or self._since_logged + 1 >= self.config.log_every:
            self._logged_task, self._since_logged = task, 0
            with torch.no_grad():
                return {f"penalty/{key}": value for key, value in self.core.penalty(task).items()}
        self._since_logged += 1
        return {}

    def on_task_switch(self, left_task: int, entered_task: int) -> Stats:
        if self.agent.memory_size(left_task) == 0:  # its memory was freed (replay budget): nothing to measure on
            return {"skipped_task": float(left_task)}
        stats = self.core.on_task_switch(left_task, entered_task)
        return {**stats, "lambda": self.core.lam}

    def state_dict(self) -> dict:
        return self.core.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.core.load_state_dict(state)

    def importance(self, task: int) -> dict[str, torch.Tensor]:
        """Fisher (EWC) or Ω (MAS) of ``task``'s shared parameters over minibatches of its own memory."""
        params = self.agent.shared_parameters()
        net = self.agent.q_network
        with self.agent.using_task(task):  # the task's own gains and biases, as when it was trained
            if not isinstance(self.config, EWCConfig):
                return diagonal_importance(net, params, squared_output_norm, self._batches(task), reduce="abs")
            scalar = td_log_likelihood if self.config.fisher == "td" else softmax_policy_log_likelihood
            return diagonal_importance(net, params, scalar, self._batches(task), reduce="square")

    def _batches(self, task: int) -> Iterator[tuple[torch.Tensor, ...]]:
        for _ in range(self.config.batches):
            data = self.agent.sample(task, self.config.batch_size)
            assert data is not None, f"task {task}'s memory is empty"
            if not isinstance(self.config, EWCConfig):
                yield (data.observations,)
            elif self.config.fisher == "td":
                target = self.agent.td_target(data, task)
                yield data.observations, data.actions.long().squeeze(1), target.squeeze(1)
            else:
                with torch.no_grad():
                    q = self.agent.q_values(data.observations, task)
                yield data.observations, torch.distributions.Categorical(logits=q).sample()
