"""Plasticity diagnostics of a run (``cl_rl.plasticity``) logged to TensorBoard under ``plasticity/…``.

Every ``every`` agent steps, and at every task switch (then for the task just left, at the end of its visit), on a
fixed probe batch of the task's own replay memory (drawn once, the first time the memory holds ``probe_size``
transitions, with a seed of its own: the training's random streams are left as they were):

- ``plasticity/dormant`` (all hidden units) and ``plasticity/dormant/layer_<i>``: fraction of τ-dormant units;
- ``plasticity/effective_rank``, ``plasticity/stable_rank``, ``plasticity/feature_norm``: of the penultimate features;
- ``plasticity/weight_norm`` (shared weights) and ``…/layer_<i>``; ``plasticity/distance`` (from the shared weights
  at the task's start) and ``…/layer_<i>``;
- ``plasticity/grad_norm`` and ``…/layer_<i>``: of the TD loss of the probe batch (before clipping);
- ``plasticity/churn``: the fraction of the task's probe states whose greedy action changes over the next training
  call (one update at the usual ``gradient_steps = 1``), and ``plasticity/churn_other_tasks`` on the other tasks'
  probes (each under its own gains and biases), the interference of the update.

Layers are numbered in the network's order: for MinAtar's network layer_0 is the conv layer, layer_1 the fully
connected one, layer_2 the Q-value layer (no activation: no dormant fraction). The values are dumped at once, so each
is logged at the agent step it was measured. The cost at the default cadence is measured by
``scripts/bench_speed.py --plasticity-every`` (docs/PLASTICITY.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from cl_rl import plasticity
from cl_rl.methods import Transitions

if TYPE_CHECKING:
    from agents.sb3.continual_dqn import ContinualDQN

PROBE_SEED = 20_231  # the probe batches' own seed (task k draws with PROBE_SEED + k)


class PlasticityCallback(BaseCallback):
    """Logs ``cl_rl.plasticity``'s diagnostics every ``every`` agent steps (0: only at task switches)."""

    model: ContinualDQN

    def __init__(self, every: int = 1_000, probe_size: int = 256, tau: float = plasticity.DORMANT_TAU) -> None:
        super().__init__()
        self.every, self.probe_size, self.tau = every, probe_size, tau
        self.probes: dict[int, Transitions] = {}
        self.task = -1
        self.task_start: dict[str, th.Tensor] = {}
        self.churn_from: tuple[int, dict[int, th.Tensor]] | None = None  # (updates then, greedy actions per task)
        self.cpu_seconds = 0.0  # this process's CPU time spent in the diagnostics (the speed benchmark reads it)

    def _on_training_start(self) -> None:
        self.task = self.model.current_task
        self.task_start = self._shared_snapshot()

    def _on_step(self) -> bool:
        started = time.process_time()
        self._diagnose()
        self.cpu_seconds += time.process_time() - started
        return True

    def _diagnose(self) -> None:
        task = self.model.current_task
        if task != self.task:
            if self.task >= 0 and self.measure(self.task):
                self.logger.dump(self.num_timesteps)
            self.task, self.task_start, self.churn_from = task, self._shared_snapshot(), None
        if self.churn_from is not None and self.model._n_updates > self.churn_from[0]:
            self._record_churn(task)
            self.logger.dump(self.num_timesteps)
        n = self.training_env.num_envs
        crossed = self.every and self.num_timesteps // self.every > (self.num_timesteps - n) // self.every
        if crossed and self.measure(task):
            self.churn_from = (self.model._n_updates, self._greedy_actions())
            self.logger.dump(self.num_timesteps)

    # --- measuring ------------------------------------------------------------------------------------------------
    def probe(self, task: int) -> Transitions | None:
        """The task's fixed probe batch (drawn the first time its memory holds ``probe_size`` transitions)."""
        if task not in self.probes and self.model.memory_size(task) >= self.probe_size:
            saved = np.random.get_state()  # SB3's buffers draw from numpy's global stream: keep training's draws
            try:
                np.random.seed(PROBE_SEED + task)
                self.probes[task] = self.model._transitions(
                    self.model.replay_buffer.buffer(task).sample(self.probe_size)
                )
            finally:
                np.random.set_state(saved)
        return self.probes.get(task)

    def measure(self, task: int) -> bool:
        """Record every diagnostic of ``task`` on its probe batch; False when it has none yet."""
        batch = self.probe(task)
        if batch is None:
            return False
        record = self.logger.record
        net = self.model.q_net
        with th.no_grad(), self.model.using_task(task), plasticity.captured_activations(net) as hidden:
            net(batch.observations)
        units = [plasticity.dormant_mask(h, self.tau) for h in hidden]
        for i, mask in enumerate(units):
            record(f"plasticity/dormant/layer_{i}", float(mask.float().mean()))
        record("plasticity/dormant", float(th.cat(units).float().mean()))
        features = hidden[-1].flatten(1)
        effective_rank, stable_rank = plasticity.ranks(features)
        record("plasticity/effective_rank", effective_rank)
        record("plasticity/stable_rank", stable_rank)
        record("plasticity/feature_norm", plasticity.feature_norm(features))

        shared = self.model.shared_parameters()
        grads = th.autograd.grad(self.model.td_loss(batch, task), list(shared.values()), allow_unused=True)
        gradient = {
            name: g if g is not None else th.zeros_like(p) for (name, p), g in zip(shared.items(), grads, strict=True)
        }
        record("plasticity/weight_norm", plasticity.l2_norm(shared.values()))
        record("plasticity/distance", plasticity.distance(shared, self.task_start))
        record("plasticity/grad_norm", plasticity.l2_norm(gradient.values()))
        for i, names in enumerate(self._layers()):
            record(f"plasticity/weight_norm/layer_{i}", plasticity.l2_norm(shared[n] for n in names))
            start = {n: self.task_start[n] for n in names}
            record(f"plasticity/distance/layer_{i}", plasticity.distance(shared, start))
            record(f"plasticity/grad_norm/layer_{i}", plasticity.l2_norm(gradient[n] for n in names))
        return True

    def _record_churn(self, task: int) -> None:
        assert self.churn_from is not None, "churn without a reference"
        before, now = self.churn_from[1], self._greedy_actions()
        self.churn_from = None
        changed = {k: float((before[k] != now[k]).float().mean()) for k in before if k in now}
        if task in changed:
            self.logger.record("plasticity/churn", changed.pop(task))
        if changed:
            self.logger.record("plasticity/churn_other_tasks", sum(changed.values()) / len(changed))

    def _greedy_actions(self) -> dict[int, th.Tensor]:
        actions = {}
        with th.no_grad():
            for task, batch in self.probes.items():
                actions[task] = self.model.q_values(batch.observations, task).argmax(dim=1)
        return actions

    def _layers(self) -> list[list[str]]:
        """The shared parameter names of each conv or linear layer of the Q-network, in the network's order."""
        layers = []
        for prefix, module in self.model.q_net.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                layers.append([f"{prefix}.{name}" for name, _ in module.named_parameters()])
        return layers

    def _shared_snapshot(self) -> dict[str, th.Tensor]:
        return {name: p.detach().clone() for name, p in self.model.shared_parameters().items()}
