"""Quadratic consolidation penalties: EWC with per-task anchors, online EWC, and MAS.

While training task t the loss gains (Kirkpatrick et al. 2017, eq. 3, extended to many tasks as in its Atari agent)

    Σ_{k ≠ t} (λ/2) Σ_i F_{k,i} (θ_i − θ*_{k,i})²

over the shared parameters θ, with one anchor (θ*_k, F_k) stored when task k is left. A revisited task's own anchor is
inactive while it is trained and is refreshed when it is left again. MAS (Aljundi et al. 2018) uses the same penalty
with its importance Ω in place of F. Online EWC (Schwarz et al. 2018, "Progress & Compress", eq. 9) keeps one
accumulated importance F* ← γ F* + F_new anchored at the latest parameters, active whenever it exists.

The importance of a task is computed by ``importance_fn(task)`` (see ``cl_rl.importance``), supplied by the agent,
which knows where the task's data lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

ImportanceFn = Callable[[int], dict[str, torch.Tensor]]


class QuadraticPenalty:
    """A ``Regularizer`` (see ``cl_rl.regularizer``) of the form Σ anchors (λ/2) Σ_i w_i (θ_i − θ*_i)².

    :param params: the shared parameters to protect, by name.
    :param importance_fn: importance weights of a task's parameters, computed at the switch away from it.
    :param lam: λ, the strength of the penalty.
    :param mode: ``per_task`` (one anchor per task; the current task's is inactive) or ``online`` (one accumulated
        anchor, Schwarz et al. eq. 9).
    :param decay: γ of online EWC (1.0: plain accumulation).
    :param normalize: divide each new importance by its mean over all parameters, so that λ has the same meaning for
        tasks whose gradients differ in scale.
    :param min_task_steps: a task gets an anchor only once it was trained this many agent steps (the paper: 20M frames).
    :param task_steps: agent steps trained so far on a task.
    """

    def __init__(
        self,
        name: str,
        params: dict[str, torch.nn.Parameter],
        importance_fn: ImportanceFn,
        lam: float = 400.0,
        mode: Literal["per_task", "online"] = "per_task",
        decay: float = 1.0,
        normalize: bool = False,
        min_task_steps: int = 0,
        task_steps: Callable[[int], int] = lambda task: 0,
    ) -> None:
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        if mode not in ("per_task", "online"):
            raise ValueError(f"mode must be 'per_task' or 'online', got {mode!r}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay (γ) must lie in [0, 1], got {decay}")
        self.name = name
        self.params = params
        self.importance_fn = importance_fn
        self.lam, self.mode, self.decay, self.normalize = float(lam), mode, float(decay), normalize
        self.min_task_steps, self.task_steps = min_task_steps, task_steps
        # anchor key: task id (per_task) or -1 (online) -> (θ*, importance)
        self.anchors: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}

    # --- Regularizer interface ----------------------------------------------------------------------------------
    def penalty(self, current_task: int) -> dict[str, torch.Tensor]:
        """One term per active anchor, named ``task_<k>`` (or ``online``)."""
        terms = {}
        for key, (star, weight) in self.anchors.items():
            if key == current_task:
                continue
            total = sum((w * (self.params[n] - star[n]).square()).sum() for n, w in weight.items())
            terms["online" if key == -1 else f"task_{key}"] = 0.5 * self.lam * total
        return terms

    def on_task_switch(self, left_task: int, entered_task: int) -> dict[str, float | torch.Tensor]:
        """Store (θ*, importance) for ``left_task``; returns statistics of the new importance to log."""
        if self.task_steps(left_task) < self.min_task_steps:
            return {"skipped_task": float(left_task)}
        importance = {n: w.detach() for n, w in self.importance_fn(left_task).items()}
        if self.normalize:
            mean = torch.cat([w.flatten() for w in importance.values()]).mean().clamp_min(1e-30)
            importance = {n: w / mean for n, w in importance.items()}
        star = {n: p.detach().clone() for n, p in self.params.items()}
        if self.mode == "online":
            previous = self.anchors.get(-1)
            if previous is not None:
                importance = {n: self.decay * previous[1][n] + w for n, w in importance.items()}
            self.anchors[-1] = (star, importance)
        else:
            self.anchors[left_task] = (star, importance)
        flat = torch.cat([w.flatten() for w in importance.values()])
        return {"importance_mean": float(flat.mean()), "importance_max": float(flat.max()), "importance": flat}

    def state_dict(self) -> dict:
        return {"anchors": {k: (dict(s), dict(w)) for k, (s, w) in self.anchors.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.anchors = {int(k): (dict(s), dict(w)) for k, (s, w) in state["anchors"].items()}
