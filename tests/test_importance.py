"""Per-sample importance (cl_rl/importance.py) against slow loops over single samples."""

import pytest
import torch
from torch import nn

from cl_rl.importance import (
    diagonal_importance,
    softmax_policy_log_likelihood,
    squared_output_norm,
    td_log_likelihood,
)
from cl_rl.task_modulation import TaskAffine, add_task, set_task, shared_parameters


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), TaskAffine((7,)), nn.Tanh(), nn.Linear(7, 4), TaskAffine((4,)))
    add_task(net)
    set_task(net, 0)
    return net


def _slow(net, scalar_fn, batches, reduce):
    params = dict(shared_parameters(net))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x, *extras in batches:
        for i in range(x.shape[0]):
            net.zero_grad()
            scalar_fn(net(x[i : i + 1]), *(e[i] for e in extras)).backward()
            for n, p in params.items():
                total[n] += p.grad.square() if reduce == "square" else p.grad.abs()
            count += 1
    return {n: t / count for n, t in total.items()}


@pytest.mark.parametrize("kind", ["softmax", "td", "mas"])
def test_vectorised_per_sample_importance_equals_a_loop_over_samples(kind):
    net = _net()
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(6, 5, generator=gen) for _ in range(3)]
    if kind == "softmax":
        fn, reduce = softmax_policy_log_likelihood, "square"
        batches = [(x, torch.randint(0, 4, (6,), generator=gen)) for x in xs]
    elif kind == "td":
        fn, reduce = td_log_likelihood, "square"
        batches = [(x, torch.randint(0, 4, (6,), generator=gen), torch.randn(6, generator=gen)) for x in xs]
    else:
        fn, reduce = squared_output_norm, "abs"
        batches = [(x,) for x in xs]
    fast = diagonal_importance(net, dict(shared_parameters(net)), fn, batches, reduce=reduce)
    slow = _slow(net, fn, batches, reduce)
    assert fast.keys() == slow.keys() == {"0.weight", "0.bias", "3.weight", "3.bias"}
    for name in fast:
        assert torch.allclose(fast[name], slow[name], rtol=1e-5, atol=1e-7), name
        # A constant, not a node of a graph through the per-task gains (which kept every batch alive: a leak).
        assert not fast[name].requires_grad and fast[name].grad_fn is None, name


def test_fisher_is_not_the_square_of_the_minibatch_mean_gradient():
    """The common bug (square of the batch-mean gradient) underestimates the Fisher by about the batch size."""
    net = _net()
    gen = torch.Generator().manual_seed(2)
    x, a = torch.randn(64, 5, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    fisher = diagonal_importance(net, dict(shared_parameters(net)), softmax_policy_log_likelihood, [(x, a)])
    net.zero_grad()
    torch.stack([softmax_policy_log_likelihood(net(x[i : i + 1]), a[i]) for i in range(64)]).mean().backward()
    wrong = sum(p.grad.square().sum() for _, p in shared_parameters(net))
    right = sum(f.sum() for f in fisher.values())
    assert right > 10 * wrong


def test_mas_importance_matches_its_definition_on_a_linear_map():
    """For Q = W x, ‖Q‖² = Σ_j (W_j·x)², so ∂/∂W_jk = 2 (W_j·x) x_k."""
    lin = nn.Linear(3, 2, bias=False)
    x = torch.randn(10, 3)
    omega = diagonal_importance(lin, {"weight": lin.weight}, squared_output_norm, [(x,)], reduce="abs")["weight"]
    with torch.no_grad():
        expected = (2 * (x @ lin.weight.T).unsqueeze(2) * x.unsqueeze(1)).abs().mean(0)
    assert torch.allclose(omega, expected, atol=1e-6)
