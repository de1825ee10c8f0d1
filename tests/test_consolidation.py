"""The quadratic penalties of cl_rl/consolidation.py: values, gradients, anchors, online accumulation."""

import pytest
import torch
from torch import nn

from cl_rl.consolidation import QuadraticPenalty
from cl_rl.regularizer import Regularizer, total_penalty


def _setup(importances: dict[int, torch.Tensor], **kwargs):
    theta = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    penalty = QuadraticPenalty("ewc", {"w": theta}, lambda task: {"w": importances[task]}, **kwargs)
    return theta, penalty


def test_penalty_value_and_gradient_match_a_hand_computation():
    f0 = torch.tensor([1.0, 0.5, 0.0])
    theta, penalty = _setup({0: f0}, lam=4.0)
    penalty.on_task_switch(0, 1)  # anchor θ*_0 = (1, 2, 3)
    with torch.no_grad():
        theta.copy_(torch.tensor([2.0, 0.0, 10.0]))
    terms = penalty.penalty(current_task=1)
    # (λ/2) Σ F (θ − θ*)² = 2 · (1·1 + 0.5·4 + 0·49) = 6;  gradient λ F (θ − θ*) = 4 · (1, −1, 0)
    assert list(terms) == ["task_0"] and terms["task_0"].item() == pytest.approx(6.0)
    terms["task_0"].backward()
    assert torch.allclose(theta.grad, torch.tensor([4.0, -4.0, 0.0]))


def test_only_other_tasks_penalties_are_active_and_a_revisit_refreshes_the_anchor():
    f = {0: torch.ones(3), 1: 2 * torch.ones(3)}
    theta, penalty = _setup(f, lam=2.0)
    assert isinstance(penalty, Regularizer)
    penalty.on_task_switch(0, 1)
    assert penalty.penalty(current_task=0) == {}  # task 0's own anchor is inactive while it is trained
    with torch.no_grad():
        theta.add_(1.0)
    penalty.on_task_switch(1, 0)
    assert set(penalty.penalty(current_task=0)) == {"task_1"}
    assert set(penalty.penalty(current_task=2)) == {"task_0", "task_1"}
    assert penalty.penalty(current_task=1)["task_0"].item() == pytest.approx(1.0 * 3)  # (2/2)·Σ 1·1²
    penalty.on_task_switch(0, 1)  # leaving task 0 again refreshes its anchor at the current θ
    assert penalty.penalty(current_task=1)["task_0"].item() == pytest.approx(0.0)
    total, terms = total_penalty([penalty], current_task=2)
    assert total.item() == pytest.approx(sum(t.item() for t in terms.values()))


def test_online_ewc_accumulates_with_decay_as_in_eq_9():
    fs = {0: torch.tensor([1.0, 0.0, 2.0]), 1: torch.tensor([0.0, 4.0, 2.0]), 2: torch.tensor([1.0, 1.0, 1.0])}
    theta, penalty = _setup(fs, lam=1.0, mode="online", decay=0.5)
    penalty.on_task_switch(0, 1)
    penalty.on_task_switch(1, 2)
    penalty.on_task_switch(2, 0)
    star, weight = penalty.anchors[-1]
    # F* = γ(γ F0 + F1) + F2
    assert torch.allclose(weight["w"], 0.25 * fs[0] + 0.5 * fs[1] + fs[2])
    assert torch.equal(star["w"], theta.detach())
    assert list(penalty.penalty(current_task=0)) == ["online"]  # one anchor, active even on a revisit


def test_normalisation_and_minimum_training_before_an_anchor():
    steps = {0: 10, 1: 1000}
    _, penalty = _setup(
        {0: torch.ones(3), 1: torch.tensor([2.0, 4.0, 6.0])},
        normalize=True,
        min_task_steps=100,
        task_steps=lambda t: steps[t],
    )
    assert penalty.on_task_switch(0, 1) == {"skipped_task": 0.0} and not penalty.anchors
    stats = penalty.on_task_switch(1, 0)
    assert torch.allclose(penalty.anchors[1][1]["w"], torch.tensor([0.5, 1.0, 1.5]))
    assert stats["importance_mean"] == pytest.approx(1.0) and stats["importance_max"] == pytest.approx(1.5)


def test_state_dict_round_trip_and_bad_values():
    _, penalty = _setup({0: torch.ones(3)})
    penalty.on_task_switch(0, 1)
    _, other = _setup({0: torch.ones(3)})
    other.load_state_dict(penalty.state_dict())
    assert other.penalty(1)["task_0"].item() == penalty.penalty(1)["task_0"].item()
    with pytest.raises(ValueError, match="lambda"):
        _setup({}, lam=-1.0)


def _autograd_and_closed_form(penalty: QuadraticPenalty, params: dict, task: int):
    """The penalty's gradient by autograd through its terms, and by ``add_gradient`` (closed form, anchors merged)."""
    for p in params.values():
        p.grad = None
    sum(penalty.penalty(task).values()).backward()
    autograd = {n: p.grad.clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    assert penalty.add_gradient(task)
    return autograd, {n: p.grad.clone() for n, p in params.items()}


@pytest.mark.parametrize("mode", ["per_task", "online"])
def test_closed_form_gradient_equals_autograd_for_any_number_of_anchors(mode):
    torch.manual_seed(0)
    params = {"w": nn.Parameter(torch.randn(40, 30)), "b": nn.Parameter(torch.randn(7))}
    importances = {k: {n: torch.rand_like(p) for n, p in params.items()} for k in range(9)}
    penalty = QuadraticPenalty("ewc", params, lambda task: importances[task], lam=400.0, mode=mode, decay=0.9)
    for left in range(8):
        with torch.no_grad():
            for p in params.values():
                p.add_(0.01 * torch.randn_like(p))
        penalty.on_task_switch(left, left + 1)
        for current in (left + 1, 0):  # a new task, and task 0 revisited (its own anchor inactive in per_task mode)
            if not penalty.penalty(current):
                assert not penalty.add_gradient(current) and left == 0 and current == 0
                continue
            autograd, closed = _autograd_and_closed_form(penalty, params, current)
            for n in params:
                if len(penalty.active_keys(current)) == 1:  # (λF, θ*) exactly: the same roundings as autograd
                    assert torch.equal(closed[n], autograd[n]), (mode, left, current, n)
                else:  # merged anchors round differently: within 1e-6 of the largest gradient entry (float32)
                    scale = autograd[n].abs().max()
                    assert torch.allclose(closed[n], autograd[n], rtol=0, atol=1e-6 * scale), (mode, left, current, n)


def test_closed_form_gradient_adds_to_the_existing_gradient_and_follows_new_anchors():
    f = {0: torch.tensor([1.0, 0.5, 0.0]), 1: torch.tensor([2.0, 0.0, 1.0])}
    theta, penalty = _setup(f, lam=4.0)
    penalty.on_task_switch(0, 1)  # θ*_0 = (1, 2, 3)
    with torch.no_grad():
        theta.copy_(torch.tensor([2.0, 0.0, 10.0]))
    theta.grad = torch.ones(3)
    penalty.add_gradient(1)
    assert torch.equal(theta.grad, torch.tensor([5.0, -3.0, 1.0]))  # 1 + λ F_0 (θ − θ*_0) = 1 + 4·(1, −1, 0)
    penalty.on_task_switch(1, 2)  # θ*_1 = (2, 0, 10): the cached merge must be rebuilt
    theta.grad = None
    penalty.add_gradient(2)
    # 4·[(1, 0.5, 0)·(1, −2, 7) + (2, 0, 1)·0] = (4, −4, 0)
    assert torch.allclose(theta.grad, torch.tensor([4.0, -4.0, 0.0]), rtol=1e-6, atol=0)
    state = penalty.state_dict()
    penalty.load_state_dict({"anchors": {0: state["anchors"][0]}})  # loading drops the cache too
    theta.grad = None
    penalty.add_gradient(2)
    assert torch.equal(theta.grad, torch.tensor([4.0, -4.0, 0.0]))  # one anchor: exact
