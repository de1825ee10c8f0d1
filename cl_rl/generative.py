"""A task-conditioned generator of stacked Atari frames, for generative replay of earlier tasks' states.

Deep Generative Replay (Shin et al. 2017) keeps earlier tasks by training one generator on the current task's data
mixed with what a frozen copy of the previous generator produces for earlier tasks; RePR (Atkinson et al.
"Pseudo-rehearsal", 2021) does the same for Atari and distils the old Q-values on the generated states.

The generator is a conditional VAE (Kingma & Welling 2014; Sohn et al. 2015) over the 4×84×84 stacks, conditioned on
the task id by a one-hot vector fed to encoder and decoder, so that ``sample(k, n)`` yields states of task k. Why a
VAE rather than RePR's GAN: it trains stably in a few hundred steps with no adversarial balance to tune, its loss
(negative ELBO, eq. 3 of Kingma & Welling) is a number that must fall, and blurry samples are enough for distillation,
which only needs inputs on which the old network's outputs are characteristic of the task. Cost on CPU: three
stride-2 convolutions (84 → 42 → 21 → 11) of modest width (``channels``, 2·``channels``, 2·``channels``) and their
transposes; about 15 M multiply-adds per state each way at ``channels=16``.

States are handled as the agent stores them, float values in [0, 255]; pixels are modelled as Bernoulli means in
[0, 1] (binary cross-entropy), the usual choice for VAEs on images.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

FRAME_SHAPE = (4, 84, 84)


class VAELoss(NamedTuple):
    """Negative ELBO per state (``total`` = ``reconstruction`` + β·``kl``), each averaged over the batch."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


class TaskConditionedVAE(nn.Module):
    """Conditional VAE p(s | z, k) q(z | s, k) over observations; ``max_tasks`` fixes the one-hot's length.

    ``obs_shape`` (C, H, W): 84×84 screens get the convolutional encoder and decoder; small grids (MinAtar's
    10×10, side ≤ 16) a two-layer perceptron of ``16·channels`` units each way, which is enough for 1,000 binary cells.
    """

    def __init__(
        self,
        max_tasks: int = 16,
        latent_dim: int = 32,
        channels: int = 16,
        beta: float = 1.0,
        obs_shape: tuple[int, ...] = FRAME_SHAPE,
    ) -> None:
        super().__init__()
        if max_tasks < 1 or latent_dim < 1 or channels < 1:
            raise ValueError(f"max_tasks, latent_dim, channels must be >= 1, got {max_tasks}, {latent_dim}, {channels}")
        self.max_tasks, self.latent_dim, self.beta = max_tasks, latent_dim, float(beta)
        self.obs_shape = tuple(obs_shape)
        c = channels
        if len(self.obs_shape) == 3 and self.obs_shape[1] <= 16:
            self._build_perceptron(16 * c)
            return
        if self.obs_shape != FRAME_SHAPE:
            raise ValueError(f"the generator handles {FRAME_SHAPE} screens or grids of side <= 16, got {obs_shape}")
        self.encoder = nn.Sequential(
            nn.Conv2d(4, c, 4, 2, 1), nn.ReLU(),  # 84 -> 42
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),  # 42 -> 21
            nn.Conv2d(2 * c, 2 * c, 3, 2, 1), nn.ReLU(),  # 21 -> 11
            nn.Flatten(),
        )  # fmt: skip
        self.hidden_shape: tuple[int, ...] = (2 * c, 11, 11)
        flat = 2 * c * 11 * 11
        self.to_posterior = nn.Linear(flat + max_tasks, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim + max_tasks, flat)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(2 * c, 2 * c, 3, 2, 1), nn.ReLU(),  # 11 -> 21
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),  # 21 -> 42
            nn.ConvTranspose2d(c, 4, 4, 2, 1),  # 42 -> 84, logits of the pixels' Bernoulli means
        )  # fmt: skip
        # A per-task image added to the logits: it holds each game's static screen, so z need only code what moves.
        self.task_logits = nn.Parameter(torch.zeros(max_tasks, *FRAME_SHAPE))

    def _build_perceptron(self, hidden: int) -> None:
        flat = 1
        for n in self.obs_shape:
            flat *= n
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU())
        self.hidden_shape = (hidden,)
        self.to_posterior = nn.Linear(hidden + self.max_tasks, 2 * self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim + self.max_tasks, hidden)
        self.decoder = nn.Sequential(nn.ReLU(), nn.Linear(hidden, flat), nn.Unflatten(1, self.obs_shape))
        self.task_logits = nn.Parameter(torch.zeros(self.max_tasks, *self.obs_shape))

    @torch.no_grad()
    def init_task(self, task: int, states: torch.Tensor) -> None:
        """Start ``task``'s output image at the logit of the mean of ``states`` (output bias at the data mean)."""
        mean = (states.float().mean(0) / 255.0).clamp(1e-3, 1.0 - 1e-3)
        self.task_logits[task] = torch.logit(mean).to(self.task_logits)

    def _one_hot(self, tasks: torch.Tensor) -> torch.Tensor:
        if tasks.numel() and (int(tasks.min()) < 0 or int(tasks.max()) >= self.max_tasks):
            raise ValueError(
                f"task ids must lie in [0, {self.max_tasks}), got {tasks.unique().tolist()}; "
                "raise the generator's max_tasks (distill.generator.max_tasks)"
            )
        return F.one_hot(tasks.long(), self.max_tasks).to(self.to_posterior.weight.dtype)

    def encode(self, states: torch.Tensor, tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | s, k); ``states`` in [0, 255]."""
        h = self.encoder(states.float() / 255.0)
        mean, log_var = self.to_posterior(torch.cat([h, self._one_hot(tasks)], 1)).chunk(2, dim=1)
        return mean, log_var.clamp(-10.0, 10.0)

    def decode_logits(self, z: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(torch.cat([z, self._one_hot(tasks)], 1))
        return self.decoder(h.view(-1, *self.hidden_shape)) + self.task_logits[tasks.long()]

    def loss(self, states: torch.Tensor, tasks: torch.Tensor) -> VAELoss:
        """Negative ELBO: Σ_pixels BCE(s/255, p(s|z,k)) + β·KL(q(z|s,k) ‖ N(0, I)), averaged over the batch."""
        mean, log_var = self.encode(states, tasks)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        logits = self.decode_logits(z, tasks)
        target = states.float() / 255.0
        reconstruction = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(states)
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(1).mean()
        return VAELoss(reconstruction + self.beta * kl, reconstruction, kl)

    @torch.no_grad()
    def sample(self, task: int, n: int) -> torch.Tensor:
        """``n`` states of ``task`` (decoder means of z ~ N(0, I)), float in [0, 255] like the agent's observations."""
        device = self.to_posterior.weight.device
        tasks = torch.full((n,), task, dtype=torch.long, device=device)
        z = torch.randn(n, self.latent_dim, device=device)
        return torch.sigmoid(self.decode_logits(z, tasks)) * 255.0


StatesFn = Callable[[int, int], torch.Tensor]  # (task, n) -> n real states of that task


class GenerativeReplay:
    """One generator kept across tasks by replay from its frozen predecessor (Shin et al. 2017, Sec. 3).

    Each training step fits the generator to a batch in which every task it must know has an equal share: real states
    of the task being learnt (``real_states``) and states that the frozen ``teacher`` generates for each earlier task.
    ``consolidate(task)`` (at a task switch) marks the task as known and freezes a copy of the generator as the new
    teacher, so that no real frames of earlier tasks are ever needed again.
    """

    def __init__(self, generator: TaskConditionedVAE, lr: float = 1e-3, batch_size: int = 32) -> None:
        if lr <= 0 or batch_size < 1:
            raise ValueError(f"lr must be > 0 and batch_size >= 1, got {lr} and {batch_size}")
        self.generator = generator
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=lr)
        self.batch_size = batch_size
        self.teacher: TaskConditionedVAE | None = None
        self.known_tasks: list[int] = []  # tasks the teacher generates
        self.seen_tasks: list[int] = []  # tasks whose output image was initialised from real states

    def mixed_batch(self, task: int, real_states: StatesFn) -> tuple[torch.Tensor, torch.Tensor]:
        """Real states of ``task`` and the teacher's states of every other known task, in equal shares."""
        old = [k for k in self.known_tasks if k != task]
        share = max(1, self.batch_size // (len(old) + 1))
        states = [real_states(task, share).float()]
        if task not in self.seen_tasks:
            self.generator.init_task(task, states[0])
            self.seen_tasks.append(task)
        tasks = [task] * len(states[0])
        for k in old:
            assert self.teacher is not None, "known tasks without a teacher generator"
            states.append(self.teacher.sample(k, share))
            tasks += [k] * share
        device = self.generator.to_posterior.weight.device
        return torch.cat([s.to(device) for s in states]), torch.tensor(tasks, device=device)

    def train_steps(self, task: int, real_states: StatesFn, steps: int) -> list[VAELoss]:
        """``steps`` Adam steps on mixed batches; returns each step's (detached) losses."""
        self.generator.train()
        losses = []
        for _ in range(steps):
            states, tasks = self.mixed_batch(task, real_states)
            loss = self.generator.loss(states, tasks)
            self.optimizer.zero_grad()
            loss.total.backward()
            self.optimizer.step()
            losses.append(VAELoss(*(t.detach() for t in loss)))
        return losses

    def consolidate(self, task: int) -> None:
        """``task`` is now known: freeze a copy of the generator as the teacher of all known tasks."""
        if task not in self.known_tasks:
            self.known_tasks.append(task)
        self.teacher = copy.deepcopy(self.generator).eval().requires_grad_(False)

    def sample(self, task: int, n: int) -> torch.Tensor:
        """``n`` states of a known ``task`` from the frozen teacher."""
        if self.teacher is None or task not in self.known_tasks:
            raise ValueError(f"task {task} is not known to the teacher generator (known: {self.known_tasks})")
        return self.teacher.sample(task, n)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "known_tasks": list(self.known_tasks),
            "seen_tasks": list(self.seen_tasks),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.known_tasks = [int(k) for k in state["known_tasks"]]
        self.seen_tasks = [int(k) for k in state["seen_tasks"]]
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = copy.deepcopy(self.generator).eval().requires_grad_(False)
            self.teacher.load_state_dict(state["teacher"])
