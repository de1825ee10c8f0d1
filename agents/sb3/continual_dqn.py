"""A continual DQN on stable-baselines3: per-task gains/biases, ε timers and replay, and a consolidation hook.

Follows the Atari agent of the EWC paper (Kirkpatrick et al., PNAS 2017): a (Double) DQN whose current task id
comes from a pluggable ``TaskSource`` (the true game for ``oracle``, or an inferred one), and which keeps for each
task its own gains and biases at every layer, its own ε-greedy timer and its own replay buffer. Consolidation
penalties enter the loss through ``cl_rl.regularizer.Regularizer``.

It keeps SB3's loop (``learn`` → ``collect_rollouts`` → ``train``) and overrides only the hooks that must know the
task: ``_setup_model``, ``_setup_learn``, ``_sample_action``, ``_store_transition``, ``_on_step`` and ``train``
(and ``collect_rollouts``, only to keep the update steps of a resumed run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any, ClassVar, cast

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import RolloutReturn, TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from agents.run.rng import capture_rng_state
from agents.sb3.policy import ContinualDQNPolicy
from agents.sb3.replay import PerTaskReplayBuffer
from cl_rl.exploration import PerTaskEpsilon, TemporallyExtendedExploration
from cl_rl.methods import NONE, ContinualMethod, Stats, Transitions, build_methods
from cl_rl.regularizer import total_penalty
from cl_rl.targets import td_target
from cl_rl.task_modulation import shared_parameters
from cl_rl.task_source import OracleTaskSource, TaskSource

CHECKPOINT_FORMAT = 2  # raise when saved state changes incompatibly; agents.run.checkpoints refuses other formats


class StopAtBoundary(Exception):
    """Raised by a ``ContinualDQN.step_boundary_hooks`` hook to end ``learn`` there, between two whole steps."""


class AtStepBoundary(BaseCallback):
    """An SB3 callback that acts (``act``) between two whole agent steps (``ContinualDQN.step_boundary_hooks``: the
    step stored and its updates done) at every segment end and every ``every`` agent steps (0: segment ends only),
    once per step: the last step of ``learn`` included, the step a resumed process starts at not again."""

    model: ContinualDQN

    def __init__(self, segment_ends: Iterable[int], every: int = 0) -> None:
        super().__init__()
        self.segment_ends, self.every = set(segment_ends), every
        self._boundary = -1  # the agent step of the latest boundary seen

    def act(self) -> None:
        raise NotImplementedError

    def _on_training_start(self) -> None:
        self._boundary = self.model.num_timesteps  # where this process starts: done already, or step 0
        self.model.step_boundary_hooks.append(self.at_boundary)

    def _on_step(self) -> bool:
        return True

    def at_boundary(self) -> None:
        step = self.model.num_timesteps
        if step != self._boundary:
            self._boundary = step
            if step in self.segment_ends or (self.every and step % self.every == 0):
                self.num_timesteps = step
                self.act()

    def _on_training_end(self) -> None:
        self.model.step_boundary_hooks.remove(self.at_boundary)
        if self.model.num_timesteps == self.model._total_timesteps:  # learn ran to its end: the last step is whole
            self.at_boundary()


class ContinualDQN(DQN):
    """SB3 ``DQN`` that learns a stream of tasks.

    Differences from ``DQN`` (all other arguments are ``DQN``'s):

    :param task_source: gives the task id of each observation (default: ``OracleTaskSource``, which reads the true game
        from ``info['game']``).
    :param double_dqn: use the Double-DQN target (the EWC paper's agent is a Double DQN).
    :param exploration_steps: agent steps over which ε anneals, counted *per task*.
    :param exploration: ``epsilon`` (ε-greedy, as DQN) or ``ez_greedy`` (each exploratory action repeated for a
        zeta-distributed number of steps, also during the uniform-random warm-up: ``cl_rl.exploration.
        TemporallyExtendedExploration``).
    :param ez_mu: the zeta exponent of ez-greedy's durations (the paper's 2).
    :param learning_starts: transitions a task's own buffer must hold before that task is trained (per task).
    :param buffer_size: capacity of *each* task's replay buffer.
    :param method: the continual-learning method(s) by registry name (``cl_rl.methods.REGISTRY``): ``none``,
        ``ewc``, ``online_ewc``, ``mas``, ``generative_replay``, ``lwf``, ...; several joined by ``+``. They reach
        this agent only through the ``cl_rl.methods.AgentPort`` it implements; their state is saved with the model.
    :param method_settings: settings dataclass per method name (missing ones take the dataclass defaults).

    Further ``ContinualMethod`` objects may be appended to ``model.methods`` after construction (not saved).
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
        exploration: str = "epsilon",
        ez_mu: float = 2.0,
        method: str = NONE,
        method_settings: dict[str, Any] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("replay_buffer_class", PerTaskReplayBuffer)
        policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
        if policy_kwargs.get("optimizer_class", th.optim.Adam) is th.optim.Adam:
            # Fused Adam: one kernel over all parameters, ~3× faster than the single-tensor loop on this CPU (it
            # rounds differently, by ~1 ulp; {"foreach": True} is bit-identical to the loop). docs/SPEED.md.
            policy_kwargs.setdefault("optimizer_kwargs", {"fused": True})
        kwargs["policy_kwargs"] = policy_kwargs
        super().__init__(policy, env, _init_setup_model=False, **kwargs)
        self.task_source: TaskSource = task_source if task_source is not None else OracleTaskSource()
        self.double_dqn = double_dqn
        self.epsilon = PerTaskEpsilon(self.exploration_initial_eps, self.exploration_final_eps, exploration_steps)
        if exploration not in ("epsilon", "ez_greedy"):
            raise ValueError(f"exploration must be 'epsilon' or 'ez_greedy', got {exploration!r}")
        self.ez = TemporallyExtendedExploration(ez_mu) if exploration == "ez_greedy" else None
        self.method = method
        self.method_settings = dict(method_settings or {})
        self.method_state: dict[str, dict] = {}  # filled by `save`, read back by `_setup_model` after `load`
        self.methods: list[ContinualMethod] = []
        self.checkpoint_format = CHECKPOINT_FORMAT
        self.rng_state: dict[str, Any] | None = None  # captured by `save`, restored by agents.run.training.resume
        self.run_identity: dict[str, Any] = {}  # the settings that define the run (set by agents.run.training)
        # agents.run.callbacks.TaskInferenceMonitor's counts, saved so that a resumed run's scores cover the whole run
        self.task_inference_record: Any = None
        self.current_task = -1
        self.n_tasks_created = 0
        self.task_switches = 0
        self._clip_cache: tuple[Any, int, list[th.nn.Parameter]] | None = None
        # Called between two agent steps: the previous step stored and its updates done, the next action not drawn.
        # A checkpoint taken there is a whole step (agents.run.callbacks.SegmentCheckpointCallback).
        self.step_boundary_hooks: list[Callable[[], None]] = []
        if _init_setup_model:
            self._setup_model()

    # --- set-up -----------------------------------------------------------------------------------------------
    def _setup_model(self) -> None:
        super()._setup_model()
        self._clip_cache = None
        modes = (th.nn.modules.batchnorm._BatchNorm, th.nn.Dropout)
        assert not any(isinstance(m, modes) for m in self.policy.modules()), "_act assumes no train/eval difference"
        if not isinstance(self.replay_buffer, PerTaskReplayBuffer):
            raise TypeError(f"replay_buffer_class must be PerTaskReplayBuffer, got {type(self.replay_buffer).__name__}")
        # After `load`, re-create the tasks the saved weights and optimiser state refer to.
        for _ in range(self.n_tasks_created):
            self.policy.add_task()
            self.replay_buffer.add_task()
        if self.current_task >= 0:
            self._activate(self.current_task)
        self.methods = build_methods(self.method, self.method_settings, self)
        for m in self.methods:
            if m.name in self.method_state:
                m.load_state_dict(self.method_state[m.name])

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``, with every method's state (anchors, teachers, generators, posteriors) saved too."""
        self.method_state = {m.name: m.state_dict() for m in self.methods}
        self.rng_state = capture_rng_state(self.action_space)
        super().save(path, exclude, include)

    def _setup_learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True, *args: Any):
        resets = reset_num_timesteps or self._last_obs is None
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, *args)
        if resets:
            # The env starts a fresh episode: the play stored last (before a save, say) does not go on from here.
            self.replay_buffer.cut()
            if self.ez is not None:
                self.ez.end_holds()
            self.task_source.cut_episode()  # the cut episode's few frames do not decide the fresh one's task
            self._observe_task(self._last_obs, [True])  # type: ignore[arg-type]
        return result

    def collect_rollouts(self, env: Any, callback: Any, train_freq: TrainFreq, *args: Any, **kwargs: Any) -> Any:
        """SB3's rollout, ended on the next multiple of ``train_freq`` vector steps and at the end of ``learn``: a run
        resumed from a checkpoint between two updates then updates at the same steps, and as often, as the run that
        was never stopped, and ``learn(n)`` stops after exactly n agent steps, the last one stored."""
        if train_freq.unit == TrainFrequencyUnit.STEP:
            due = train_freq.frequency - (self.num_timesteps // self.n_envs) % train_freq.frequency
            left = (self._total_timesteps - self.num_timesteps) // self.n_envs  # nor past the end of `learn`
            train_freq = TrainFreq(max(min(due, left), 1), train_freq.unit)
        try:
            return super().collect_rollouts(env, callback, train_freq, *args, **kwargs)
        except StopAtBoundary:  # a graceful stop: the steps so far are whole, the next one is not begun
            return RolloutReturn(0, 0, continue_training=False)

    def _excluded_save_params(self) -> list[str]:
        # Methods hold references to the live network: they are saved through their state_dict() (`method_state`).
        # The last observation is not saved so that a loaded model starts with a fresh reset of its env.
        return [
            *super()._excluded_save_params(),
            *("methods", "_last_obs", "_last_original_obs", "_clip_cache", "step_boundary_hooks"),
        ]

    # --- tasks --------------------------------------------------------------------------------------------------
    def _activate(self, task: int) -> None:
        self.current_task = task
        self.policy.set_task(task)
        self.replay_buffer.set_task(task)
        self.exploration_rate = self.epsilon.value(task)

    def _observe_task(self, observations: np.ndarray, dones: Sequence[bool], infos: Sequence[dict] = ()) -> None:
        """Ask the task source for the task of the newest observation and switch if it changed.

        With several envs only env 0 is watched: the forget-me-not model (``cl_rl.task_inference``) scores how well
        each task's model predicts the *next* frame of one coherent frame sequence, and interleaving envs would feed
        it frames of unrelated episodes. All envs play the same game and switch together (``envs.sequence.
        ParallelSequence``), so env 0's task is every env's: all their transitions go to that task's buffer.
        """
        # After an automatic reset the observation belongs to the new episode, whose info is in reset_infos.
        info = self.env.reset_infos[0] if dones[0] else (infos[0] if infos else {})  # type: ignore[union-attr]
        task = self.task_source.observe(observations[0], info.get("game"), episode_start=bool(dones[0]))
        if task != self.current_task:
            self.switch_task(task)
        if dones[0]:
            for m in self.methods:
                m.on_episode_start(self.current_task)

    def switch_task(self, task: int) -> None:
        """Make ``task`` current: create its parameters and buffer if new, and let regularisers consolidate."""
        left = self.current_task
        while self.n_tasks_created <= task:
            self.policy.add_task()
            self.replay_buffer.add_task()
            self.n_tasks_created += 1
        if left >= 0:
            for m in self.methods:
                started = time.perf_counter()
                self._record_stats(f"consolidation/{m.name}", m.on_task_switch(left, task))
                self.logger.record(f"consolidation/{m.name}/seconds", time.perf_counter() - started)
            self.task_switches += 1
        self._activate(task)
        if self.ez is not None:
            self.ez.end_holds()  # a new game: what was being explored belongs to the old one
        self.logger.record("task/current", task)
        self.logger.record("task/n_tasks", self.n_tasks_created)
        self.logger.record("task/switches", self.task_switches)

    # --- the SB3 loop's hooks -----------------------------------------------------------------------------------
    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1):
        for hook in self.step_boundary_hooks:  # the first thing of each step in SB3's rollout loop
            hook()
        # Uniform random actions until the *current task's* buffer holds `learning_starts` transitions (all envs').
        warm_up = self.replay_buffer.transitions() < learning_starts
        if self.ez is not None:  # ez-greedy; its warm-up is ε = 1 with repeats
            epsilon = 1.0 if warm_up else self.exploration_rate
            action = self.ez.choose(epsilon, n_envs, self.action_space.sample, self._greedy_of_envs)
        elif warm_up:
            action = np.array([self.action_space.sample() for _ in range(n_envs)])
        else:
            action = self._act(self._last_obs)  # type: ignore[arg-type]
        return action, action

    def _act(self, observations: np.ndarray) -> np.ndarray:
        """ε-greedy actions for a batch of observations: ``DQN.predict``'s draws and result, without its overhead.

        The same ``np.random`` and action-space draws as ``predict(obs, deterministic=False)``, so the same RNG state
        gives the same actions; but no observation checks, no ``set_training_mode`` toggles (the network has neither
        batch norm nor dropout, which ``_setup_model`` checks) and the forward pass under ``inference_mode``.
        """
        if np.random.rand() < self.exploration_rate:
            return np.array([self.action_space.sample() for _ in range(len(observations))])
        return self._greedy(observations)

    def _greedy_of_envs(self, envs: np.ndarray) -> np.ndarray:
        observations = self._last_obs
        assert isinstance(observations, np.ndarray)
        return self._greedy(observations if len(envs) == len(observations) else observations[envs])

    def _greedy(self, observations: np.ndarray) -> np.ndarray:
        """The greedy actions for a batch of observations (the methods' acting contexts on)."""
        with th.inference_mode(), ExitStack() as acting:
            for m in self.methods:
                acting.enter_context(m.acting())  # e.g. VCL's Thompson-style sampled weights
            q_values = self.q_net(th.as_tensor(observations, device=self.device))
            return q_values.argmax(dim=1).cpu().numpy()

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos) -> None:  # type: ignore[override]
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        if self.ez is not None and dones.any():
            self.ez.end_holds(np.flatnonzero(dones))
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
        """DQN updates on the current task's memory: the TD loss plus the methods' terms and hooks.

        Each update minimises  L(θ) = E_(s,a,r,s')~D_t [ Huber(Q(s, a; t) − y) ] + Σ_m R_m(θ; t)  with y the
        (Double-)DQN target of ``td_target`` under the current task t's gains and biases, D_t the current task's
        replay memory and R_m the methods' penalties. The methods' hooks run around it: ``before_update`` after the
        minibatch is drawn, ``after_backward`` between the backward pass and gradient clipping.
        """
        if self.replay_buffer.transitions() < max(self.learning_starts, batch_size):
            return
        if not self.policy.training:  # predict() (evaluation) leaves it in eval mode; the act path does not
            self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        task = self.current_task
        losses, td_losses = [], []
        penalties: Stats = {}
        stats: Stats = {}
        for _ in range(gradient_steps):
            data = self._transitions(self.replay_buffer.sample(batch_size, env=self._vec_normalize_env))
            for m in self.methods:
                stats.update({f"{m.name}/{k}": v for k, v in m.before_update(task).items()})
            td_loss = self._td_loss(data)
            penalty, terms = total_penalty(self.methods, task)
            penalties = cast(Stats, terms)  # the same dict, widened: gradient-applied terms add floats below
            loss = td_loss if penalty is None else td_loss + penalty

            self.policy.optimizer.zero_grad()
            loss.backward()
            for m in self.methods:
                for key, value in m.after_backward(task).items():
                    # A term applied as a gradient reports its value as the statistic "penalty/<term>".
                    if key.startswith("penalty/"):
                        penalties[f"{m.name}/{key.removeprefix('penalty/')}"] = value
                    else:
                        stats[f"{m.name}/{key}"] = value
            th.nn.utils.clip_grad_norm_(self._clipped_parameters(), self.max_grad_norm)
            self._optimizer_step()
            losses.append(loss.detach())
            td_losses.append(td_loss.detach())

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(mean(losses)))
        self.logger.record("train/td_loss", float(mean(td_losses)))
        for name, value in penalties.items():
            self.logger.record(f"train/penalty/{name}", float(value))
        self._record_stats("train", stats)

    def _clipped_parameters(self) -> list[th.nn.Parameter]:
        """``self.policy.parameters()`` as a list, kept until the policy or its parameter groups change.

        Clipping over it is clipping over ``self.policy.parameters()`` (parameters without a gradient are left out
        either way); walking the module tree for it at every update cost ~5% of a MinAtar step (docs/SPEED.md).
        """
        groups = len(self.policy.optimizer.param_groups)  # add_task adds a group
        if self._clip_cache is None or self._clip_cache[0] is not self.policy or self._clip_cache[1] != groups:
            self._clip_cache = (self.policy, groups, list(self.policy.parameters()))
        return self._clip_cache[2]

    def _optimizer_step(self) -> None:
        """``optimizer.step()`` over the parameter groups that hold a gradient, when the optimiser is Adam(W).

        The same update: Adam leaves a parameter without a gradient untouched (no state change, no step count), so
        a group without any is a no-op; but each group costs its own bookkeeping, and every task has one (its gains
        and biases), while an update trains only the shared group and the current task's.
        """
        optimizer = self.policy.optimizer
        groups = optimizer.param_groups
        if not isinstance(optimizer, (th.optim.Adam, th.optim.AdamW)):
            optimizer.step()
            return
        stepped = [g for g in groups if any(p.grad is not None for p in g["params"])]
        optimizer.param_groups = stepped
        try:
            optimizer.step()
        finally:
            optimizer.param_groups = groups

    def _td_loss(self, data: Transitions) -> th.Tensor:
        """Huber loss of Q(s, a) against ``td_target`` under the networks' active task."""
        target = self._td_target(data)
        q_taken = self.q_net(data.observations).gather(1, data.actions.long())
        return F.smooth_l1_loss(q_taken, target)

    @th.no_grad()
    def _td_target(self, data: Transitions) -> th.Tensor:
        discounts = data.discounts if data.discounts is not None else self.gamma
        next_q_target = self.q_net_target(data.next_observations)
        next_q_online = self.q_net(data.next_observations) if self.double_dqn else None
        return td_target(next_q_target, data.rewards, data.dones, discounts, next_q_online)

    def _transitions(self, data: Any) -> Transitions:
        return Transitions(
            data.observations,
            data.actions,
            data.next_observations,
            data.dones,
            data.rewards,
            getattr(data, "discounts", None),
        )

    def _record_stats(self, prefix: str, stats: Stats) -> None:
        """Log a method's statistics: floats as scalars, 1-D tensors as histograms, (C, H, W) tensors as images."""
        for key, value in stats.items():
            if isinstance(value, th.Tensor) and value.dim() == 3:
                self.logger.record(f"{prefix}/{key}", Image(value, "CHW"), exclude=("stdout", "log", "json", "csv"))
            elif isinstance(value, th.Tensor) and value.dim() == 1:
                self.logger.record(f"{prefix}/{key}", value)
            else:
                self.logger.record(f"{prefix}/{key}", float(value))

    # --- the AgentPort (cl_rl.methods.base): what a continual-learning method may ask of this agent -------------------
    @property
    def q_network(self) -> th.nn.Module:
        return self.q_net

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return tuple(self.observation_space.shape or ())

    @property
    def optimizer(self) -> th.optim.Optimizer:
        return self.policy.optimizer

    def shared_parameters(self) -> dict[str, th.nn.Parameter]:
        return dict(shared_parameters(self.q_net))

    def using_task(self, task: int) -> AbstractContextManager[None]:
        return self.policy.using_task(task)

    def q_values(self, observations: th.Tensor, task: int, target: bool = False) -> th.Tensor:
        with self.policy.using_task(task):
            if target:
                with th.no_grad():
                    return self.q_net_target(observations)
            return self.q_net(observations)

    def td_target(self, batch: Transitions, task: int) -> th.Tensor:
        with self.policy.using_task(task):
            return self._td_target(batch)

    def td_loss(self, batch: Transitions, task: int) -> th.Tensor:
        with self.policy.using_task(task):
            return self._td_loss(batch)

    def sample(self, task: int, batch_size: int) -> Transitions | None:
        if self.memory_size(task) == 0:
            return None
        return self._transitions(self.replay_buffer.buffer(task).sample(batch_size))

    def memory_size(self, task: int) -> int:
        return self.replay_buffer.sizes()[task] if 0 <= task < self.replay_buffer.n_tasks else 0

    def task_steps(self, task: int) -> int:
        return self.epsilon.steps.get(task, 0)

    def known_tasks(self) -> list[int]:
        return list(range(self.n_tasks_created))


def mean(values: list[th.Tensor]) -> th.Tensor:
    """The mean of scalar tensors (the one value itself when there is one: ``stack`` and ``mean`` cost more)."""
    return values[0] if len(values) == 1 else th.stack(values).mean()
