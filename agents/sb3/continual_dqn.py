"""A continual DQN on stable-baselines3: per-task gains/biases, ε timers and replay, and a consolidation hook.

Follows the Atari agent of the EWC paper (Kirkpatrick et al., PNAS 2017): a (Double) DQN whose current task id
comes from a pluggable ``TaskSource`` (the true game for ``oracle``, or an inferred one), and which keeps for each
task its own gains and biases at every layer, its own ε-greedy timer and its own replay buffer. Consolidation
penalties enter the loss through ``cl_rl.regularizer.Regularizer``.

It keeps SB3's loop (``learn`` → ``collect_rollouts`` → ``train``) and overrides only the hooks that must know the
task: ``_setup_model``, ``_setup_learn``, ``_sample_action``, ``_store_transition``, ``_on_step`` and ``train``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from agents.consolidation import METHODS, build_consolidation
from agents.distillation import NAME as DISTILL_NAME
from agents.distillation import build_distillation
from agents.run.rng import capture_rng_state
from agents.sb3.policy import ContinualDQNPolicy
from agents.sb3.replay import PerTaskReplayBuffer
from cl_rl.exploration import PerTaskEpsilon
from cl_rl.regularizer import Regularizer, total_penalty
from cl_rl.targets import double_dqn_target, dqn_target
from cl_rl.task_source import OracleTaskSource, TaskSource

CHECKPOINT_FORMAT = 1  # raise when saved state changes incompatibly; agents.run.checkpoints refuses other formats


class ContinualDQN(DQN):
    """SB3 ``DQN`` that learns a stream of tasks.

    Differences from ``DQN`` (all other arguments are ``DQN``'s):

    :param task_source: gives the task id of each observation (default: ``OracleTaskSource``, which reads the true game
        from ``info['game']``).
    :param double_dqn: use the Double-DQN target (the EWC paper's agent is a Double DQN).
    :param exploration_steps: agent steps over which ε anneals, counted *per task*.
    :param learning_starts: transitions a task's own buffer must hold before that task is trained (per task).
    :param buffer_size: capacity of *each* task's replay buffer.
    :param consolidation: settings of the built-in penalty (``method``: none | ewc | online_ewc | mas, ``lam``, ...;
        see ``agents.consolidation``); saved with the model, anchors included.
    :param distill: settings of the distillation term (``source``: none | generated | current, ``alpha``, ``generator``,
        ...; see ``agents.distillation``); saved with the model, teachers and generator included.
    :param regularizers: further terms added to the TD loss (not saved: re-attach them after ``load``).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        **DQN.policy_aliases,
        "ContinualCnnPolicy": ContinualDQNPolicy,
    }
    replay_buffer: PerTaskReplayBuffer
    policy: ContinualDQNPolicy

    def __init__(
        self,
        policy: str | type[ContinualDQNPolicy] = "ContinualCnnPolicy",
        env: Any = None,
        *,
        task_source: TaskSource | None = None,
        double_dqn: bool = True,
        exploration_steps: int = 1_000_000,
        consolidation: dict[str, Any] | None = None,
        distill: dict[str, Any] | None = None,
        regularizers: Sequence[Regularizer] = (),
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("replay_buffer_class", PerTaskReplayBuffer)
        super().__init__(policy, env, _init_setup_model=False, **kwargs)
        self.task_source: TaskSource = task_source if task_source is not None else OracleTaskSource()
        self.double_dqn = double_dqn
        self.epsilon = PerTaskEpsilon(self.exploration_initial_eps, self.exploration_final_eps, exploration_steps)
        self.consolidation = dict(consolidation or {"method": "none"})
        self.distill = dict(distill or {"source": "none"})
        self.consolidation_state: dict[str, dict] = {}
        self.regularizers: list[Regularizer] = list(regularizers)
        self.checkpoint_format = CHECKPOINT_FORMAT
        self.rng_state: dict[str, Any] | None = None  # captured by `save`, restored by agents.run.training.resume
        self.current_task = -1
        self.n_tasks_created = 0
        self.task_switches = 0
        if _init_setup_model:
            self._setup_model()

    # --- set-up -----------------------------------------------------------------------------------------------
    def _setup_model(self) -> None:
        super()._setup_model()
        if self.n_envs != 1:
            raise ValueError(f"ContinualDQN follows one stream of tasks and needs n_envs=1, got {self.n_envs}")
        if not isinstance(self.replay_buffer, PerTaskReplayBuffer):
            raise TypeError(f"replay_buffer_class must be PerTaskReplayBuffer, got {type(self.replay_buffer).__name__}")
        # After `load`, re-create the tasks the saved weights and optimiser state refer to.
        for _ in range(self.n_tasks_created):
            self.policy.add_task()
            self.replay_buffer.add_task()
        if self.current_task >= 0:
            self._activate(self.current_task)
        penalty = build_consolidation(self, self.consolidation)
        if penalty is not None:
            if penalty.name in self.consolidation_state:
                penalty.load_state_dict(self.consolidation_state[penalty.name])
            self.regularizers = [penalty, *(r for r in self.regularizers if r.name != penalty.name)]
        distillation = build_distillation(self, self.distill)
        if distillation is not None:
            if distillation.name in self.consolidation_state:
                distillation.load_state_dict(self.consolidation_state[distillation.name])
            self.regularizers = [*(r for r in self.regularizers if r.name != distillation.name), distillation]

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``, with the consolidation anchors (θ*, importance) and the distillation teachers saved too."""
        saved = (*METHODS, DISTILL_NAME)
        self.consolidation_state = {r.name: r.state_dict() for r in self.regularizers if r.name in saved}
        self.rng_state = capture_rng_state(self.action_space)
        super().save(path, exclude, include)

    def _setup_learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True, *args: Any):
        resets = reset_num_timesteps or self._last_obs is None
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, *args)
        if resets:
            self._observe_task(self._last_obs, [True])  # type: ignore[arg-type]
        return result

    def _excluded_save_params(self) -> list[str]:
        # Regularisers hold references to the live network: they are saved by their owner through state_dict().
        # The last observation is not saved so that a loaded model starts with a fresh reset of its env.
        return [*super()._excluded_save_params(), "regularizers", "_last_obs", "_last_original_obs"]

    # --- tasks --------------------------------------------------------------------------------------------------
    def _activate(self, task: int) -> None:
        self.current_task = task
        self.policy.set_task(task)
        self.replay_buffer.set_task(task)
        self.exploration_rate = self.epsilon.value(task)

    def _observe_task(self, observations: np.ndarray, dones: Sequence[bool], infos: Sequence[dict] = ()) -> None:
        """Ask the task source for the task of the newest observation and switch if it changed."""
        # After an automatic reset the observation belongs to the new episode, whose info is in reset_infos.
        info = self.env.reset_infos[0] if dones[0] else (infos[0] if infos else {})  # type: ignore[union-attr]
        task = self.task_source.observe(observations[0], info.get("game"))
        if task != self.current_task:
            self.switch_task(task)

    def switch_task(self, task: int) -> None:
        """Make ``task`` current: create its parameters and buffer if new, and let regularisers consolidate."""
        left = self.current_task
        while self.n_tasks_created <= task:
            self.policy.add_task()
            self.replay_buffer.add_task()
            self.n_tasks_created += 1
        if left >= 0:
            for reg in self.regularizers:
                started = time.perf_counter()
                for key, value in reg.on_task_switch(left, task).items():
                    self.logger.record(f"consolidation/{reg.name}/{key}", value)
                self.logger.record(f"consolidation/{reg.name}/seconds", time.perf_counter() - started)
                if hasattr(reg, "lam"):
                    self.logger.record(f"consolidation/{reg.name}/lambda", reg.lam)
            self.task_switches += 1
        self._activate(task)
        self.logger.record("task/current", task)
        self.logger.record("task/n_tasks", self.n_tasks_created)
        self.logger.record("task/switches", self.task_switches)

    # --- the SB3 loop's hooks -----------------------------------------------------------------------------------
    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1):
        # Uniform random actions until the *current task's* buffer holds `learning_starts` transitions.
        if self.replay_buffer.size() < learning_starts:
            action = np.array([self.action_space.sample() for _ in range(n_envs)])
        else:
            action, _ = self.predict(self._last_obs, deterministic=False)  # type: ignore[arg-type]
        return action, action

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos) -> None:  # type: ignore[override]
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        self._observe_task(new_obs, dones, infos)

    def _on_step(self) -> None:
        """Target-network sync (as in ``DQN``) and the current task's ε timer (instead of DQN's global schedule)."""
        self._n_calls += 1
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            polyak_update(self.q_net.parameters(), self.q_net_target.parameters(), self.tau)
            polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
        self.epsilon.tick(self.current_task, self.n_envs)
        self.exploration_rate = self.epsilon.value(self.current_task)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        """DQN updates on the current task's buffer: TD loss (Double DQN optional) plus the regularisers' terms."""
        if self.replay_buffer.size() < max(self.learning_starts, batch_size):
            return
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses, td_losses, penalties = [], [], {}
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            with th.no_grad():
                next_q_target = self.q_net_target(data.next_observations)
                if self.double_dqn:
                    next_q_online = self.q_net(data.next_observations)
                    target = double_dqn_target(next_q_online, next_q_target, data.rewards, data.dones, discounts)
                else:
                    target = dqn_target(next_q_target, data.rewards, data.dones, discounts)
            q_taken = self.q_net(data.observations).gather(1, data.actions.long())
            td_loss = F.smooth_l1_loss(q_taken, target)
            penalty, penalties = total_penalty(self.regularizers, self.current_task)
            loss = td_loss if penalty is None else td_loss + penalty

            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            losses.append(loss.item())
            td_losses.append(td_loss.item())

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))
        self.logger.record("train/td_loss", float(np.mean(td_losses)))
        for name, value in penalties.items():
            self.logger.record(f"train/penalty/{name}", float(value))
