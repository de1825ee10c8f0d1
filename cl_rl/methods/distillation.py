"""Generative replay and Learning without Forgetting as methods: Q distillation of earlier tasks' old Q-values.

The distillation term is ``cl_rl.distillation.QDistillation`` (RePR, Atkinson et al. 2021); the two methods differ in
the states on which task k's old Q-values are distilled:
- ``generative_replay`` (Shin et al. 2017; RePR): one task-conditioned VAE (``cl_rl.generative``) learns every task's
  states. At each switch it trains ``steps_per_switch`` steps on the left task's memory mixed with its frozen
  predecessor's samples of the other known tasks, and is then frozen as the new teacher generator;
  ``steps_per_update`` further steps on the current task run before every agent update (``before_update``).
  Distillation states come from the frozen teacher only, so no frame of an earlier task is read after its switch.
- ``lwf`` (Li & Hoiem 2017): the current task's own states from its memory.

Statistics: ``generator/*`` (losses of the per-update steps), at each switch ``generator_loss_first`` /
``generator_loss_last`` and a (1, n·H, k·W) image ``samples/task_<k>`` of generated observations per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cl_rl.distillation import QDistillation
from cl_rl.generative import GenerativeReplay, TaskConditionedVAE, VAELoss
from cl_rl.methods.base import AgentPort, ContinualMethod, Stats


@dataclass
class LwFConfig:
    """Learning without Forgetting: distil the old Q-values of earlier tasks on the current task's states."""

    alpha: float = 1.0  # α, weight of the distillation term
    batch_size: int = 32  # states per earlier task in each update
    normalize_q: bool = False  # divide each task's squared error by the variance of its teacher Q-values

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class GeneratorConfig:
    """The task-conditioned VAE of generative replay (see cl_rl/generative.py)."""

    latent_dim: int = 32  # size of the latent code z
    channels: int = 16  # width of the first conv layer (the next two have twice as many)
    max_tasks: int = 16  # length of the task one-hot: the most tasks the generator can tell apart
    beta: float = 1.0  # weight of the KL term of the ELBO
    lr: float = 1e-3  # Adam step size
    batch_size: int = 32  # states per generator step, shared equally by all tasks it must know
    steps_per_switch: int = 2_000  # generator steps on the left task's memory (+ replay) at each task switch
    steps_per_update: int = 0  # generator steps on the current task's memory (+ replay) before every agent update

    def __post_init__(self) -> None:
        for name in ("latent_dim", "channels", "max_tasks", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"generator.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_switch", "steps_per_update"):
            if getattr(self, name) < 0:
                raise ValueError(f"generator.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.beta < 0:
            raise ValueError(f"generator.lr must be > 0 and generator.beta >= 0, got {self.lr} and {self.beta}")


@dataclass
class GenerativeReplayConfig(LwFConfig):
    """Generative replay of earlier tasks' states, on which their old Q-values are distilled (RePR)."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)


class Distillation(ContinualMethod):
    """Q distillation of earlier tasks on generated states (``generative_replay``) or current ones (``lwf``)."""

    def __init__(self, name: str, config: LwFConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent
        self.replay: GenerativeReplay | None = None
        if isinstance(config, GenerativeReplayConfig):
            gen = config.generator
            vae = TaskConditionedVAE(gen.max_tasks, gen.latent_dim, gen.channels, gen.beta, agent.observation_shape)
            self.replay = GenerativeReplay(vae.to(agent.device), gen.lr, gen.batch_size)
        self.core = QDistillation(name, agent.q_network, self._states, config.alpha, config.normalize_q)

    # --- where states come from ---------------------------------------------------------------------------------
    def _real_states(self, task: int, n: int) -> torch.Tensor:
        data = self.agent.sample(task, n)
        assert data is not None, f"task {task}'s memory is empty"
        return data.observations

    def _states(self, task: int, current_task: int) -> torch.Tensor:
        if self.replay is not None:
            return self.replay.sample(task, self.config.batch_size)
        return self._real_states(current_task, self.config.batch_size)

    # --- hooks ----------------------------------------------------------------------------------------------------
    def before_update(self, task: int) -> Stats:
        """``steps_per_update`` generator steps on the current task (generative replay only)."""
        if not isinstance(self.config, GenerativeReplayConfig) or self.replay is None:
            return {}
        steps = self.config.generator.steps_per_update
        if steps == 0:
            return {}
        losses = self.replay.train_steps(task, self._real_states, steps)
        return {f"generator/{key}": value for key, value in _mean_losses(losses).items()}

    def penalty(self, task: int) -> dict[str, torch.Tensor]:
        return self.core.penalty(task)

    def on_task_switch(self, left_task: int, entered_task: int) -> Stats:
        """Train the generator on the left task (with replay), freeze it and the Q-network as the new teachers."""
        stats: Stats = {}
        if self.replay is not None and isinstance(self.config, GenerativeReplayConfig):
            steps = self.config.generator.steps_per_switch
            if steps > 0 and self.agent.memory_size(left_task) > 0:
                losses = self.replay.train_steps(left_task, self._real_states, steps)
                tail = max(1, len(losses) // 10)
                stats["generator_loss_first"] = _mean_losses(losses[:tail])["loss"]
                stats["generator_loss_last"] = _mean_losses(losses[-tail:])["loss"]
            self.replay.consolidate(left_task)
            for k in self.replay.known_tasks:
                stats[f"samples/task_{k}"] = sample_grid(self.replay, k)
        stats.update(self.core.on_task_switch(left_task, entered_task))
        return stats

    def state_dict(self) -> dict:
        return {"q": self.core.state_dict(), "generator": None if self.replay is None else self.replay.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.core.load_state_dict(state["q"])
        if self.replay is not None and state["generator"] is not None:
            self.replay.load_state_dict(state["generator"])


def sample_grid(replay: GenerativeReplay, task: int, n: int = 4) -> torch.Tensor:
    """A (1, n·H, k·W) image in [0, 1] of ``n`` generated stacks of ``task``: a row per sample, a column per frame."""
    states = replay.sample(task, n).cpu() / 255.0  # (n, k, H, W)
    return torch.cat([torch.cat(list(stack), dim=1) for stack in states], dim=0).unsqueeze(0)


def _mean_losses(losses: list[VAELoss]) -> dict[str, float]:
    columns = zip(*losses, strict=True)
    return {key: float(torch.stack(v).mean()) for key, v in zip(("loss", "reconstruction", "kl"), columns, strict=True)}
