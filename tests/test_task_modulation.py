import pytest
import torch
from torch import nn

from cl_rl.task_modulation import TaskAffine, add_task, set_task, shared_parameters, task_parameters


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), TaskAffine((4,)), nn.ReLU(), nn.Linear(4, 2), TaskAffine((2,)))


def test_new_task_starts_as_identity():
    affine = TaskAffine((2, 3, 3))
    affine.add_task()
    affine.active = 0
    x = torch.randn(5, 2, 3, 3)
    assert torch.equal(affine(x), x)


def test_affine_applies_the_active_tasks_gain_and_bias():
    affine = TaskAffine((3,))
    affine.add_task()
    affine.add_task()
    with torch.no_grad():
        affine.gains[1].copy_(torch.tensor([2.0, -1.0, 0.5]))
        affine.biases[1].copy_(torch.tensor([1.0, 0.0, -3.0]))
    x = torch.tensor([[1.0, 2.0, 4.0]])
    affine.active = 1
    assert torch.allclose(affine(x), torch.tensor([[3.0, -2.0, -1.0]]))
    affine.active = 0
    assert torch.equal(affine(x), x)


def test_tasks_own_separate_parameters_and_only_the_active_one_gets_gradients():
    net = _net()
    add_task(net)
    add_task(net)
    set_task(net, 1)
    net(torch.randn(8, 3)).sum().backward()
    assert all(p.grad is None for p in task_parameters(net, 0))
    assert all(p.grad is not None for p in task_parameters(net, 1))


def test_shared_parameters_exclude_gains_and_biases():
    net = _net()
    add_task(net)
    names = [name for name, _ in shared_parameters(net)]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias"]


def test_unknown_task_is_an_error():
    net = _net()
    add_task(net)
    with pytest.raises(ValueError, match="task 3 does not exist"):
        set_task(net, 3)
    with pytest.raises(RuntimeError, match="active task"):
        TaskAffine((2,))(torch.zeros(1, 2))
