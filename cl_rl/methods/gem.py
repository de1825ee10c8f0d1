"""Gradient Episodic Memory (Lopez-Paz & Ranzato 2017) and Averaged GEM (Chaudhry et al. 2019) for the DQN.

Every earlier task keeps its own replay memory already (the EWC paper's per-task buffers), which serves as GEM's
episodic memory: its size per task is ``agent.buffer_size`` (GEM's m) and all tasks together are bounded by
``agent.replay_memory_gb``. After the backward pass of an update (``after_backward``), with g the gradient of the
current task's loss over the shared parameters:

- GEM: for each earlier task k, g_k = ∇ of task k's TD loss on a minibatch of its memory, under k's own gains and
  biases. If ⟨g, g_k⟩ < 0 for some k, g is replaced by the L2-closest g̃ with ⟨g̃, g_k⟩ ≥ 0 for all k (eq. 10),
  found through the dual quadratic programme (eq. 11–13): with G the rows g_k,
  min_v ½ vᵀ G Gᵀ v + gᵀ Gᵀ v  s.t. v ≥ 0,  and g̃ = Gᵀ v* + g.
  It is solved with ``quadprog`` (Goldfarb–Idnani), the solver GEM's own code uses; the number of tasks is small.
- A-GEM: one reference gradient g_ref over a minibatch drawn from all earlier tasks' memories (equal shares, each
  under its task's gains and biases); if ⟨g, g_ref⟩ < 0, g̃ = g − (⟨g, g_ref⟩ / ⟨g_ref, g_ref⟩) g_ref (eq. 11).

The TD targets of task k's loss are those a DQN of task k would use now: the agent's target network (Double DQN if
the agent uses it) under task k's gains and biases. The target network is the same slowly-moving copy the current
task bootstraps from, so the constraint compares like with like; stored targets from when k was trained would not
follow the shared weights that later tasks move.

Statistics: ``projected`` (fraction of updates projected since the last log), ``cos_before`` / ``cos_after`` (the
smallest cosine between the update and an earlier task's gradient, before and after projection), ``seconds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import quadprog
import torch

from cl_rl.methods.base import AgentPort, ContinualMethod, Stats, Transitions, flat_grad, set_flat_grad


@dataclass
class GEMConfig:
    """Settings of GEM and A-GEM."""

    batch_size: int = 32  # transitions of each earlier task's memory per constraint gradient (A-GEM: in all)
    margin: float = 0.0  # GEM code's margin: the dual variables are bounded below by it (v ≥ margin; 0 in eq. 13)
    eps: float = 1e-3  # added to the diagonal of G Gᵀ so the dual is strictly convex (as GEM's code does)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.margin < 0 or self.eps < 0:
            raise ValueError(f"margin and eps must be >= 0, got {self.margin} and {self.eps}")


def gem_project(g: torch.Tensor, memories: torch.Tensor, margin: float = 0.0, eps: float = 1e-3) -> torch.Tensor:
    """GEM eq. 11–13: the g̃ closest to g with ⟨g̃, g_k⟩ ≥ 0 for every row g_k of ``memories`` (shape (K, P)).

    Solves the dual min_v ½ vᵀ (G Gᵀ + eps I) v + (G g)ᵀ v s.t. v ≥ margin in float64 and returns Gᵀ v + g.
    """
    G = memories.double().cpu().numpy()
    gv = g.double().cpu().numpy()
    P = G @ G.T
    P = 0.5 * (P + P.T) + eps * np.eye(len(G))
    q = -(G @ gv)  # quadprog minimises ½ xᵀ P x − qᵀ x
    C = np.eye(len(G))
    b = np.full(len(G), margin)
    v = quadprog.solve_qp(P, q, C, b)[0]
    return torch.as_tensor(G.T @ v + gv, dtype=g.dtype, device=g.device)


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM eq. 11: g − (⟨g, g_ref⟩ / ⟨g_ref, g_ref⟩) g_ref when ⟨g, g_ref⟩ < 0, else g unchanged."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - dot / torch.dot(g_ref, g_ref).clamp_min(1e-30) * g_ref


class GradientEpisodicMemory(ContinualMethod):
    """GEM (``name='gem'``) or A-GEM (``name='agem'``): projects the shared gradient before the optimiser steps."""

    def __init__(self, name: str, config: GEMConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent
        self.params = agent.shared_parameters()
        self._updates = self._projections = 0
        self._cos_before: list[float] = []
        self._cos_after: list[float] = []
        self._seconds = 0.0

    def _earlier(self, task: int) -> list[int]:
        return [k for k in self.agent.known_tasks() if k != task and self.agent.memory_size(k) > 0]

    def _gradient(self, batches: list[tuple[Transitions, int]]) -> torch.Tensor:
        """∇ over the shared parameters of the mean TD loss of (batch, task) pairs, each under its task's parameters."""
        loss = torch.stack([self.agent.td_loss(batch, k) for batch, k in batches]).mean()
        grads = torch.autograd.grad(loss, list(self.params.values()), allow_unused=True)
        pairs = zip(grads, self.params.values(), strict=True)
        return torch.cat([(gr if gr is not None else torch.zeros_like(p)).reshape(-1) for gr, p in pairs])

    def after_backward(self, task: int) -> Stats:
        earlier = self._earlier(task)
        if not earlier:
            return {}
        started = time.perf_counter()
        g = flat_grad(self.params)
        if self.name == "agem":
            share = max(1, self.config.batch_size // len(earlier))
            batches = [(b, k) for k in earlier if (b := self.agent.sample(k, share)) is not None]
            memories = self._gradient(batches).unsqueeze(0)
        else:
            batches = [(b, k) for k in earlier if (b := self.agent.sample(k, self.config.batch_size)) is not None]
            memories = torch.stack([self._gradient([pair]) for pair in batches])
        dots = memories @ g
        self._updates += 1
        before = _min_cosine(g, memories)
        if bool((dots < 0).any()):
            if self.name == "agem":
                g = agem_project(g, memories[0])
            else:
                g = gem_project(g, memories, self.config.margin, self.config.eps)
            set_flat_grad(self.params, g)
            self._projections += 1
        self._cos_before.append(before)
        self._cos_after.append(_min_cosine(g, memories))
        self._seconds += time.perf_counter() - started
        return self._summary()

    def _summary(self) -> Stats:
        stats: Stats = {
            "projected": self._projections / max(self._updates, 1),
            "cos_before": float(np.mean(self._cos_before)),
            "cos_after": float(np.mean(self._cos_after)),
            "seconds_per_update": self._seconds / max(self._updates, 1),
        }
        if self._updates >= 1000:  # a moving window: the logged rates describe recent updates
            self._updates = self._projections = 0
            self._cos_before, self._cos_after, self._seconds = [], [], 0.0
        return stats


def _min_cosine(g: torch.Tensor, memories: torch.Tensor) -> float:
    norms = memories.norm(dim=1) * g.norm()
    return float(((memories @ g) / norms.clamp_min(1e-30)).min())
