"""Builds the distillation term of a ``ContinualDQN`` from its settings (``distill:`` in the config).

Two sources of the states on which the old Q-values of earlier tasks are distilled (see ``cl_rl.distillation``):
- ``generated``: generative replay (Shin et al. 2017; RePR, Atkinson et al. 2021). One task-conditioned VAE
  (``cl_rl.generative``) learns every task's states: at each switch it trains ``steps_per_switch`` steps on the left
  task's replay buffer mixed with its frozen predecessor's samples of the other known tasks, and is then frozen as the
  new teacher generator; ``steps_per_update`` further steps on the current task run inside every agent update (in
  ``penalty``, the one hook the agent calls per update). Distillation samples come from the frozen teacher only, so no
  frame of an earlier task is read from its buffer after the switch.
- ``current``: Learning without Forgetting (Li & Hoiem 2017): the current task's own states from its buffer.

TensorBoard: ``distill/generator/*`` (losses of the per-update steps), ``consolidation/distill/*`` (at each switch:
the generator's loss at the start and end of its training), ``distill/samples/task_<k>`` (a grid of generated stacks
per task at each switch: rows are samples, columns the 4 stacked frames), ``train/penalty/distill/distill``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from stable_baselines3.common.logger import Image

from cl_rl.distillation import QDistillation
from cl_rl.generative import GenerativeReplay, TaskConditionedVAE, VAELoss

if TYPE_CHECKING:
    from agents.sb3.continual_dqn import ContinualDQN

NAME = "distill"
SOURCES = ("none", "generated", "current")
METHODS = {"generative_replay": "generated", "lwf": "current"}  # comparison method -> distill.source
_IMAGES_ONLY = ("stdout", "log", "json", "csv")


def build_distillation(model: ContinualDQN, settings: dict[str, Any]) -> Distillation | None:
    """The distillation term of ``settings['source']`` (None for 'none')."""
    source = settings.get("source", "none")
    if source not in SOURCES:
        raise ValueError(f"distill.source must be one of {', '.join(SOURCES)}; got {source!r}")
    return None if source == "none" else Distillation(model, settings)


class Distillation:
    """The ``Regularizer`` named ``distill``: Q distillation of earlier tasks, plus the generator's training."""

    def __init__(self, model: ContinualDQN, settings: dict[str, Any]) -> None:
        self.name = NAME
        self.model = model
        self.source = settings["source"]
        self.batch_size = int(settings.get("batch_size", 32))
        gen = settings.get("generator", {})
        self.steps_per_switch = int(gen.get("steps_per_switch", 2_000))
        self.steps_per_update = int(gen.get("steps_per_update", 0))
        self.replay: GenerativeReplay | None = None
        if self.source == "generated":
            vae = TaskConditionedVAE(gen.get("max_tasks", 16), gen.get("latent_dim", 32), gen.get("channels", 16))
            vae.beta = float(gen.get("beta", 1.0))
            self.replay = GenerativeReplay(vae.to(model.device), gen.get("lr", 1e-3), gen.get("batch_size", 32))
        self.core = QDistillation(
            NAME, model.q_net, self._states, settings.get("alpha", 1.0), settings.get("normalize_q", False)
        )

    # --- where states come from ---------------------------------------------------------------------------------
    def _real_states(self, task: int, n: int) -> torch.Tensor:
        return self.model.replay_buffer.buffer(task).sample(n).observations

    def _states(self, task: int, current_task: int) -> torch.Tensor:
        if self.replay is not None:
            return self.replay.sample(task, self.batch_size)
        return self._real_states(current_task, self.batch_size)

    # --- Regularizer interface ----------------------------------------------------------------------------------
    def penalty(self, current_task: int) -> dict[str, torch.Tensor]:
        """The distillation term; first ``steps_per_update`` generator steps on the current task (generated only)."""
        if self.replay is not None and self.steps_per_update > 0:
            losses = self.replay.train_steps(current_task, self._real_states, self.steps_per_update)
            for key, value in _mean_losses(losses).items():
                self._record(f"distill/generator/{key}", value)
        return self.core.penalty(current_task)

    def on_task_switch(self, left_task: int, entered_task: int) -> dict[str, float | torch.Tensor]:
        """Train the generator on the left task (with replay), freeze it and the Q-network as the new teachers."""
        stats: dict[str, float | torch.Tensor] = {}
        if self.replay is not None:
            if self.steps_per_switch > 0 and self.model.replay_buffer.buffer(left_task).size() > 0:
                losses = self.replay.train_steps(left_task, self._real_states, self.steps_per_switch)
                tail = max(1, len(losses) // 10)
                stats["generator_loss_first"] = _mean_losses(losses[:tail])["loss"]
                stats["generator_loss_last"] = _mean_losses(losses[-tail:])["loss"]
            self.replay.consolidate(left_task)
            for task in self.replay.known_tasks:
                self._record(f"distill/samples/task_{task}", Image(sample_grid(self.replay, task), "CHW"), _IMAGES_ONLY)
        stats.update(self.core.on_task_switch(left_task, entered_task))
        return stats

    def state_dict(self) -> dict:
        return {"q": self.core.state_dict(), "generator": None if self.replay is None else self.replay.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.core.load_state_dict(state["q"])
        if self.replay is not None and state["generator"] is not None:
            self.replay.load_state_dict(state["generator"])

    def _record(self, key: str, value: Any, exclude: Sequence[str] | None = None) -> None:
        logger = getattr(self.model, "_logger", None)  # absent until learn() or set_logger()
        if logger is not None:
            logger.record(key, value, exclude=exclude)


def sample_grid(replay: GenerativeReplay, task: int, n: int = 4) -> torch.Tensor:
    """A (1, n·84, 4·84) image in [0, 1] of ``n`` generated stacks of ``task``: a row per sample, a column per frame."""
    states = replay.sample(task, n).cpu() / 255.0  # (n, 4, 84, 84)
    return torch.cat([torch.cat(list(stack), dim=1) for stack in states], dim=0).unsqueeze(0)


def _mean_losses(losses: list[VAELoss]) -> dict[str, float]:
    columns = zip(*losses, strict=True)
    return {key: float(torch.stack(v).mean()) for key, v in zip(("loss", "reconstruction", "kl"), columns, strict=True)}
