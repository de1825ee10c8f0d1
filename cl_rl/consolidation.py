"""Quadratic consolidation penalties: EWC with per-task anchors, online EWC, and MAS.

While training task t the loss gains (Kirkpatrick et al. 2017, eq. 3, extended to many tasks as in its Atari agent)

    Σ_{k ≠ t} (λ/2) Σ_i F_{k,i} (θ_i − θ*_{k,i})²

over the shared parameters θ, with one anchor (θ*_k, F_k) stored when task k is left. A revisited task's own anchor is
inactive while it is trained and is refreshed when it is left again. MAS (Aljundi et al. 2018) uses the same penalty
with its importance Ω in place of F. Online EWC (Schwarz et al. 2018, "Progress & Compress", eq. 9) keeps one
accumulated importance F* ← γ F* + F_new anchored at the latest parameters, active whenever it exists.

The importance of a task is computed by ``importance_fn(task)`` (see ``cl_rl.importance``), supplied by the agent,
which knows where the task's data lives.

Closed form. The gradient of the sum over active anchors is

    λ Σ_k F_k ⊙ (θ − θ*_k) = λ A ⊙ (θ − θ̄),   A = Σ_k F_k,  θ̄ = Σ_k F_k ⊙ θ*_k / A  (θ̄ = 0 where A = 0),

so ``add_gradient`` keeps two merged tensors per parameter (λA and θ̄, the latter as an offset from one anchor for
precision; cached for the current task, which per_task mode leaves out) and adds the gradient to ``.grad`` after
backward: its cost does not grow with the number of anchors, and no autograd graph is built for the penalty.
``penalty`` still gives each anchor's value (for logging, or for autograd).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

Merged = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # (λA, r, d) of one parameter
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
        # (current task, {name: (A, θ̄)}) of the closed-form gradient; dropped whenever the anchors change.
        self._merged: tuple[int, dict[str, Merged]] | None = None

    # --- Regularizer interface ----------------------------------------------------------------------------------
    def penalty(self, current_task: int) -> dict[str, torch.Tensor]:
        """One term per active anchor, named ``task_<k>`` (or ``online``)."""
        terms: dict[str, torch.Tensor] = {}
        for key, (star, weight) in self.anchors.items():
            if key == current_task:
                continue
            total = torch.stack([(w * (self.params[n] - star[n]).square()).sum() for n, w in weight.items()]).sum()
            terms["online" if key == -1 else f"task_{key}"] = 0.5 * self.lam * total
        return terms

    def active_keys(self, current_task: int) -> list[int]:
        """Anchor keys whose terms are active while ``current_task`` is trained."""
        return [key for key in self.anchors if key != current_task]

    def merged(self, current_task: int) -> dict[str, Merged]:
        """{name: (λA, r, d)} over the active anchors, cached per task; empty when none is active.

        θ − θ̄ = (θ − r) − d with r the last active anchor's θ* and d = Σ_k F_k ⊙ (θ*_k − r) / A (0 where A = 0; None
        with one anchor): the anchors' differences are small, so d keeps their precision where θ̄ itself would round
        at the scale of θ. With one anchor (λF, θ*, None) makes ``add_gradient`` round exactly as autograd does.
        """
        if self._merged is not None and self._merged[0] == current_task:
            return self._merged[1]
        keys = self.active_keys(current_task)
        merged: dict[str, Merged] = {}
        for name in self.params if keys else ():
            weights = [self.anchors[k][1][name] for k in keys]
            reference = self.anchors[keys[-1]][0][name]
            if len(keys) == 1:
                merged[name] = (self.lam * weights[0], reference, None)
                continue
            total = torch.stack(weights).sum(0)
            spread = torch.stack(
                [w * (self.anchors[k][0][name] - reference) for k, w in zip(keys[:-1], weights, strict=False)]
            ).sum(0)
            offset = torch.where(total > 0, spread / total, torch.zeros_like(total))
            merged[name] = (self.lam * total, reference, offset)
        self._merged = (current_task, merged)
        return merged

    @torch.no_grad()
    def add_gradient(self, current_task: int) -> bool:
        """Add the penalty's gradient λA ⊙ (θ − θ̄) to every parameter's ``.grad``; False when no anchor is active."""
        merged = self.merged(current_task)
        if not merged:
            return False
        # One multi-tensor kernel per operation instead of one kernel per parameter: the same elementwise operations
        # in the same order, so the same bits as a loop over the parameters.
        params: list[torch.Tensor] = [self.params[name] for name in merged]
        scaled, references, offsets = zip(*merged.values(), strict=True)
        steps = torch._foreach_sub(params, list(references))
        if offsets[0] is not None:  # all or none: several anchors or one
            torch._foreach_sub_(steps, list(offsets))
        torch._foreach_mul_(steps, list(scaled))
        held = [(p.grad, step) for p, step in zip(params, steps, strict=True) if p.grad is not None]
        for param, step in zip(params, steps, strict=True):
            if param.grad is None:
                param.grad = step
        if held:
            grads, added = zip(*held, strict=True)
            torch._foreach_add_(list(grads), list(added))
        return True

    def on_task_switch(self, left_task: int, entered_task: int) -> dict[str, float | torch.Tensor]:
        """Store (θ*, importance) for ``left_task``; returns statistics of the new importance to log."""
        if self.task_steps(left_task) < self.min_task_steps:
            return {"skipped_task": float(left_task)}
        importance = {n: w.detach() for n, w in self.importance_fn(left_task).items()}
        if self.normalize:
            mean = torch.cat([w.flatten() for w in importance.values()]).mean().clamp_min(1e-30)
            importance = {n: w / mean for n, w in importance.items()}
        star = {n: p.detach().clone() for n, p in self.params.items()}
        self._merged = None
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
        self._merged = None
