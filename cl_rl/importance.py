"""Diagonal parameter importance from per-sample gradients: the Fisher of EWC and the Ω of MAS.

Both are means over samples of a per-sample quantity, so they must be computed from *per-sample* gradients:

- EWC (Kirkpatrick et al. 2017, eq. 2 and supplementary): F_i = E_s[(∂ log p(y|s; θ) / ∂θ_i)²]. Squaring a minibatch's
  *mean* gradient instead gives (E ∂)², which is smaller by about the batch size for uncorrelated samples: a common bug.
- MAS (Aljundi et al. 2018, eq. 4): Ω_i = E_s[|∂ ‖f(s; θ)‖²₂ / ∂θ_i|], with f the network's output (here Q(s, ·)).

Per-sample gradients come from ``torch.func`` (``vmap`` of ``grad`` over a ``functional_call``), which computes all of
a minibatch's per-sample gradients in one vectorised pass instead of a Python loop over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

# scalar_fn(model_output_for_one_sample (1, ...), *extras_for_that_sample) -> scalar
ScalarFn = Callable[..., torch.Tensor]


def per_sample_gradients(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    scalar_fn: ScalarFn,
    inputs: torch.Tensor,
    *extras: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """∂ scalar_fn(model(x_n), extras_n) / ∂θ for every sample n: tensors of shape (N, *θ.shape).

    Parameters not in ``params`` (e.g. per-task gains) are held fixed at the module's current values.
    """
    names = list(params)

    def one(values: tuple[torch.Tensor, ...], x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, dict(zip(names, values, strict=True)), (x.unsqueeze(0),))
        return scalar_fn(out, *extra)

    values = tuple(p.detach() for p in params.values())
    grads = vmap(grad(one), in_dims=(None, 0, *([0] * len(extras))))(values, inputs, *extras)
    return dict(zip(names, grads, strict=True))


def diagonal_importance(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    scalar_fn: ScalarFn,
    batches: Iterable[tuple[torch.Tensor, ...]],
    reduce: Literal["square", "abs"] = "square",
) -> dict[str, torch.Tensor]:
    """Mean over all samples of ``g²`` (``square``: diagonal Fisher) or ``|g|`` (``abs``: MAS) of per-sample gradients.

    ``batches`` yields tuples ``(inputs, *extras)`` with a leading sample axis on each tensor.
    """
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    count = 0
    for inputs, *extras in batches:
        # Outside no_grad, the per-sample gradients would stay differentiable w.r.t. the parameters held fixed (the
        # per-task gains), and the running sums would keep every batch's graph alive. ``torch.func.grad`` ignores
        # an outer no_grad, so the gradients themselves are unaffected.
        with torch.no_grad():
            grads = per_sample_gradients(model, params, scalar_fn, inputs, *extras)
            for name, g in grads.items():
                total[name] += (g.square() if reduce == "square" else g.abs()).sum(0)
        count += inputs.shape[0]
    if count == 0:
        raise ValueError("diagonal_importance needs at least one sample")
    return {name: t / count for name, t in total.items()}


# --- the scalar functions: which log-likelihood (or output norm) is differentiated ------------------------------
def softmax_policy_log_likelihood(q_values: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log π(a|s) of the Boltzmann policy π = softmax(Q(s, ·)), for an action sampled from π (the true Fisher)."""
    return _pick(torch.log_softmax(q_values, dim=-1), action)


def td_log_likelihood(q_values: torch.Tensor, action: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log N(y | Q(s, a), 1) up to a constant: −½ (Q(s, a) − y)², the TD error's gradient (empirical Fisher)."""
    return -0.5 * (_pick(q_values, action) - target).square()


def squared_output_norm(q_values: torch.Tensor) -> torch.Tensor:
    """‖Q(s, ·)‖²₂: MAS's sensitivity of the learnt function, needing neither labels nor rewards."""
    return q_values.square().sum()


def _pick(values: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """values[0, action] written with ``gather``, which ``vmap`` supports (tensor indexing is not)."""
    return values[0].gather(0, action.reshape(1).long())[0]
