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
graph-building forwards), so acting, targets, evaluation and importance estimates use the posterior mean.

The optional coreset (VCL Sec. 3.2): ``coreset_size`` transitions of each task, drawn from its memory when it is left
and kept by this method, are replayed as TD terms in every later update (under their task's gains and biases).
Statistics: ``kl`` (the KL term before scaling), ``sigma_mean`` (mean σ of the shared weights) and
``protected_fraction`` (the effective share of protected weights: those whose σ has shrunk below half the prior's).
"""

from __future__ import annotations

from collections.abc import Callable
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
    init_log_sigma: float = -3.0  # initial log σ of every shared weight (VCL: log-variance −6, i.e. log σ = −3)
    lr: float = 1e-3  # Adam step size of the log σ (the means follow the agent's own optimiser)
    kl_weight: float = 1.0  # multiplies KL / N_t (1: the ELBO; below 1 tempers the posterior)
    coreset_size: int = 0  # transitions kept per earlier task and replayed every update (0: no coreset)
    coreset_batch: int = 32  # coreset transitions per earlier task in each update

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
        for i, layer in enumerate(self.layers):
            layer.register_forward_hook(self._hook(i))

    def sigma_parameters(self) -> list[nn.Parameter]:
        return [p for entry in self.log_sigma for p in entry.values()]

    def _hook(self, index: int) -> Any:
        def sample_output(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> Any:
            if not (self._sampling and torch.is_grad_enabled()):
                return None  # acting, targets and evaluation use the posterior mean
            entry = self.log_sigma[index]
            return local_reparameterised(layer, inputs[0], output, entry["weight"], entry.get("bias"))  # type: ignore[arg-type]

        return sample_output

    # --- hooks ------------------------------------------------------------------------------------------------------
    def before_update(self, task: int) -> Stats:
        self._sampling = True
        self.optimizer.zero_grad(set_to_none=True)
        return {}

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
        return {}

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
