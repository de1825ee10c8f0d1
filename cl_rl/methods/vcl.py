"""Variational Continual Learning (Nguyen, Li, Bui & Turner, ICLR 2018) for the DQN's shared weights.

The shared weights get a mean-field Gaussian posterior q_t(θ) = Π_i N(μ_i, σ_i²). The means μ are the network's own
shared parameters (so acting with the network is acting with the posterior mean, VCL's prediction rule); the
log-standard deviations are this method's. Training task t minimises (Bayes by backprop, Blundell et al. 2015)

    E_{θ ~ q_t} [ L_TD(θ) ] + KL(q_t ‖ q_{t−1}) / N_t                                         (VCL eq. 4)

with q_0 = N(0, σ₀² I), the previous posterior as the prior of each new task (set at every task switch), and N_t
the number of transitions in the current task's memory (the per-datum scaling of the ELBO, whose data term is a mean).
The KL between diagonal Gaussians is closed-form:
KL = Σ_i log(σ_p,i/σ_i) + (σ_i² + (μ_i − μ_p,i)²) / (2 σ_p,i²) − ½.

The expectation is estimated with the local reparameterisation trick (Kingma, Salimans & Welling 2015): for a
linear or convolutional layer y = W x + b with W ~ N(μ_W, σ_W²), y is Gaussian with mean μ_W x + μ_b and variance
(σ_W²)(x²) + σ_b², so one noise draw per output unit, y = μ_y + sqrt(var_y) ⊙ ε, replaces a draw per weight and
gives each sample of the minibatch its own weights at the cost of a second forward of the layer. It is added by
forward hooks on the Q-network's ``Linear`` and ``Conv2d`` layers, active only during this agent's updates (in
graph-building forwards), so targets, evaluation and importance estimates use the posterior mean. Acting does too,
unless ``thompson``: then one θ = μ + σ ⊙ ε is drawn at each episode start (ε kept for the episode, so θ follows the
updates of μ and σ made during it) and the agent's greedy actions are that θ's (Thompson-style exploration).

Defaults, and where they depart from the paper (measured on MinAtar Breakout; docs/RESULTS.md):
- ``init_log_sigma = −6.9``: the paper's initial variance 1e-6. Its released code's log-variance −6 (σ ≈ 0.05) is as
  wide as the MinAtar network's own weights (std 0.014–0.05): the sampled outputs are noisier than the Q-values from
  the first update, and the agent does not learn.
- ``kl_weight = 1e-4`` (a tempered, "cold" posterior): the Huber TD loss is the log-likelihood of a unit-variance
  Gaussian on TD targets whose errors are ~0.1, so at weight 1 the data hardly constrain σ. In the 1,024-input layer
  each weight carries 1/1,024 of its unit's noise, and the data's gradient on one log σ is 10⁵ times smaller than
  KL/N_t's at σ = 0.0065 and still 10² times at σ = 0.05: the ELBO's optimum widens those σ until the sampled TD
  loss is ~1,000 times the mean network's (the over-pruning of mean-field Bayesian networks; Trippe & Turner 2018).
  Adam only sets how fast: its step on log σ is ~lr per update whatever the gradient's size, so σ climbs ~0.5 in log
  per 1,000 updates towards that optimum. With σ driven to its optimum within 15k steps (lr 1e-2), weight 1e-2 still
  collapses and 1e-4 learns as well as no method.
- The means start at the network's initialisation, not at a maximum-likelihood fit of the first task.

The optional coreset (VCL Sec. 3.2): ``coreset_size`` transitions of each task, drawn from its memory when it is left
and kept by this method, are replayed as TD terms in every later update (under their task's gains and biases).
Statistics: ``kl`` (the KL term before scaling), ``sigma_mean`` (mean σ of the shared weights) and
``protected_fraction`` (the effective share of protected weights: those whose σ has shrunk below half the prior's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cl_rl.methods.base import AgentPort, ContinualMethod, Stats, Transitions


@dataclass
class VCLConfig:
    """Settings of VCL."""

    prior_sigma: float = 1.0  # σ₀ of the first prior q_0 = N(0, σ₀²) (VCL: 1)
    init_log_sigma: float = -6.9  # initial log σ of every shared weight (VCL: variance 1e-6; module docstring)
    lr: float = 1e-3  # Adam step size of the log σ (the means follow the agent's own optimiser)
    kl_weight: float = 1e-4  # multiplies KL / N_t (1: the ELBO; below 1 tempers the posterior; module docstring)
    coreset_size: int = 0  # transitions kept per earlier task and replayed every update (0: no coreset)
    coreset_batch: int = 32  # coreset transitions per earlier task in each update
    thompson: bool = False  # act with one θ ~ q_t drawn at each episode start (Thompson-style); False: the mean

    def __post_init__(self) -> None:
        if self.prior_sigma <= 0 or self.lr <= 0 or self.kl_weight < 0:
            raise ValueError(f"prior_sigma and lr must be > 0 and kl_weight >= 0, got {self}")
        if self.coreset_size < 0 or self.coreset_batch < 1:
            raise ValueError(f"coreset_size must be >= 0 and coreset_batch >= 1, got {self}")


def gaussian_kl(
    mu: torch.Tensor, sigma: torch.Tensor, prior_mu: torch.Tensor, prior_sigma: torch.Tensor
) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(μ_p, σ_p²)) summed over elements (closed form)."""
    ratio = (sigma / prior_sigma).square()
    return 0.5 * (ratio + (mu - prior_mu).square() / prior_sigma.square() - 1.0 - ratio.log()).sum()


def local_reparameterised(
    layer: nn.Linear | nn.Conv2d,
    x: torch.Tensor,
    mean_out: torch.Tensor,
    log_sigma_w: torch.Tensor,
    log_sigma_b: torch.Tensor | None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sample of the layer's output under Gaussian weights, given its output at the mean weights ``mean_out``.

    var_y = σ_W² applied to x² (the same linear map with σ_W² as weights) + σ_b²; y = mean_out + sqrt(var_y) ⊙ ε.
    """
    var_w = (2 * log_sigma_w).exp()
    var_b = None if log_sigma_b is None else (2 * log_sigma_b).exp()
    if isinstance(layer, nn.Conv2d):
        var = F.conv2d(x.square(), var_w, var_b, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        var = F.linear(x.square(), var_w, var_b)
    eps = torch.randn_like(mean_out) if noise is None else noise
    return mean_out + var.clamp_min(1e-16).sqrt() * eps


class VariationalContinualLearning(ContinualMethod):
    """VCL on the shared weights of the agent's Q-network (module docstring)."""

    def __init__(self, name: str, config: VCLConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent
        shared = {id(p) for p in agent.shared_parameters().values()}
        self.layers = [
            m for m in agent.q_network.modules() if isinstance(m, nn.Linear | nn.Conv2d) and id(m.weight) in shared
        ]
        self.log_sigma: list[dict[str, nn.Parameter]] = []
        for layer in self.layers:
            entry = {"weight": nn.Parameter(torch.full_like(layer.weight, config.init_log_sigma))}
            if layer.bias is not None:
                entry["bias"] = nn.Parameter(torch.full_like(layer.bias, config.init_log_sigma))
            self.log_sigma.append(entry)
        self.optimizer = torch.optim.Adam(self.sigma_parameters(), lr=config.lr)
        # The prior of the current task: q_0 = N(0, σ₀²) until the first switch, then the last posterior.
        self.prior: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [
            {k: (torch.zeros_like(v), torch.full_like(v, config.prior_sigma)) for k, v in entry.items()}
            for entry in self.log_sigma
        ]
        self.coresets: dict[int, Transitions] = {}
        self._sampling = False
        self._acting = False
        self._episode_noise: list[dict[str, torch.Tensor]] | None = None  # ε of this episode's θ = μ + σ ⊙ ε
        for i, layer in enumerate(self.layers):
            layer.register_forward_hook(self._hook(i))

    def sigma_parameters(self) -> list[nn.Parameter]:
        return [p for entry in self.log_sigma for p in entry.values()]

    def _hook(self, index: int) -> Any:
        def sample_output(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> Any:
            entry = self.log_sigma[index]
            if self._sampling and torch.is_grad_enabled():
                return local_reparameterised(layer, inputs[0], output, entry["weight"], entry.get("bias"))  # type: ignore[arg-type]
            if self._acting and self._episode_noise is not None:
                return output + _weight_noise_output(layer, inputs[0], entry, self._episode_noise[index])  # type: ignore[arg-type]
            return None  # targets, evaluation and (by default) acting use the posterior mean

        return sample_output

    # --- hooks ------------------------------------------------------------------------------------------------------
    def before_update(self, task: int) -> Stats:
        self._sampling = True
        self.optimizer.zero_grad(set_to_none=True)
        return {}

    def on_episode_start(self, task: int) -> None:
        """Thompson-style acting: draw the ε of this episode's θ = μ + σ ⊙ ε (kept until the next episode)."""
        if self.config.thompson:
            self._episode_noise = [{k: torch.randn_like(s) for k, s in entry.items()} for entry in self.log_sigma]

    @contextmanager
    def acting(self) -> Iterator[None]:
        """While the agent picks actions, the hooked layers add this episode's weight noise (``thompson`` only)."""
        self._acting = self.config.thompson
        try:
            yield
        finally:
            self._acting = False

    def kl(self) -> torch.Tensor:
        """KL(q_t ‖ prior) over every shared weight and bias of the hooked layers."""
        total = torch.zeros((), device=self.agent.device)
        for layer, entry, prior in zip(self.layers, self.log_sigma, self.prior, strict=True):
            for key, log_sigma in entry.items():
                mu = getattr(layer, key)
                prior_mu, prior_sigma = prior[key]
                total = total + gaussian_kl(mu, log_sigma.exp(), prior_mu, prior_sigma)
        return total

    def penalty(self, task: int) -> dict[str, torch.Tensor]:
        terms = {"kl": self.config.kl_weight * self.kl() / max(self.agent.memory_size(task), 1)}
        batch = self.config.coreset_batch
        coreset = [self.agent.td_loss(_subsample(c, batch), k) for k, c in self.coresets.items() if k != task]
        if coreset:
            terms["coreset"] = torch.stack(coreset).mean()
        return terms

    def after_backward(self, task: int) -> Stats:
        """Step the log σ (their gradients came through the sampled outputs and the KL) and stop sampling."""
        self._sampling = False
        self.optimizer.step()
        with torch.no_grad():
            sigmas = [s.exp() for s in self.sigma_parameters()]
            return {"sigma_mean": sum(s.sum() for s in sigmas) / sum(s.numel() for s in sigmas)}

    def on_task_switch(self, left_task: int, entered_task: int) -> Stats:
        """The posterior becomes the prior of what follows; the left task's coreset is drawn from its memory."""
        with torch.no_grad():
            kl = float(self.kl())
            self.prior = [
                {k: (getattr(layer, k).detach().clone(), s.detach().exp()) for k, s in entry.items()}
                for layer, entry in zip(self.layers, self.log_sigma, strict=True)
            ]
        if self.config.coreset_size > 0 and self.agent.memory_size(left_task) > 0:
            batch = self.agent.sample(left_task, self.config.coreset_size)
            assert batch is not None
            self.coresets[left_task] = _map(batch, lambda t: t.detach().clone())
        sigma = torch.cat([s.detach().exp().flatten() for s in self.sigma_parameters()])
        return {
            "kl": kl,
            "sigma_mean": float(sigma.mean()),
            "protected_fraction": float((sigma < 0.5 * self.config.prior_sigma).float().mean()),
            "coreset_tasks": float(len(self.coresets)),
        }

    def state_dict(self) -> dict:
        return {
            "log_sigma": [{k: v.detach().clone() for k, v in e.items()} for e in self.log_sigma],
            "optimizer": self.optimizer.state_dict(),
            "prior": self.prior,
            "coresets": {k: tuple(c) for k, c in self.coresets.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for entry, saved in zip(self.log_sigma, state["log_sigma"], strict=True):
                for key, value in saved.items():
                    entry[key].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.prior = state["prior"]
        self.coresets = {int(k): Transitions(*c) for k, c in state["coresets"].items()}


def _weight_noise_output(
    layer: nn.Linear | nn.Conv2d, x: torch.Tensor, log_sigma: dict[str, torch.Tensor], eps: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The layer's output under weights σ ⊙ ε alone: added to its output at μ, the output under θ = μ + σ ⊙ ε."""
    w = log_sigma["weight"].exp() * eps["weight"]
    b = log_sigma["bias"].exp() * eps["bias"] if "bias" in log_sigma else None
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(x, w, b)


def _subsample(batch: Transitions, n: int) -> Transitions:
    size = batch.observations.shape[0]
    if n >= size:
        return batch
    index = torch.randint(size, (n,), device=batch.observations.device)
    return _map(batch, lambda t: t[index])


def _map(batch: Transitions, fn: Callable[[torch.Tensor], torch.Tensor]) -> Transitions:
    """``fn`` applied to every tensor of ``batch`` (``discounts`` may be None)."""
    d = batch.discounts
    return Transitions(
        fn(batch.observations),
        fn(batch.actions),
        fn(batch.next_observations),
        fn(batch.dones),
        fn(batch.rewards),
        None if d is None else fn(d),
    )
