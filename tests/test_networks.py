"""The task-modulated Q-networks: the MinAtar paper's network over (10, 10, 10) grids with per-task gains and biases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.dqn.policies import QNetwork

from agents.sb3.networks import NETWORK_FAMILY, TaskModulatedCNN
from agents.sb3.policy import ContinualDQNPolicy
from cl_rl.task_modulation import task_affine_layers
from envs.minatar import N_ACTIONS, OBSERVATION_SHAPE

GRIDS = spaces.Box(0, 255, OBSERVATION_SHAPE, np.uint8)


def minatar_policy(gains: str = "element") -> ContinualDQNPolicy:
    policy = ContinualDQNPolicy(GRIDS, spaces.Discrete(N_ACTIONS), lambda _: 1e-4, network="minatar", gains=gains)
    policy.add_task()
    policy.set_task(0)
    return policy


@pytest.mark.parametrize(
    ("gains", "affine_shapes"),
    [("element", [(16, 8, 8), (128,), (6,)]), ("channel", [(16, 1, 1), (128,), (6,)])],
)
def test_minatar_network_is_the_papers_with_gains_and_biases_at_every_layer(gains, affine_shapes):
    policy = minatar_policy(gains)
    modules = list(policy.q_net.modules())
    convs = [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in modules if isinstance(m, torch.nn.Conv2d)
    ]
    linears = [(m.in_features, m.out_features) for m in modules if isinstance(m, torch.nn.Linear)]
    assert convs == [(10, 16, (3, 3), (1, 1))]  # one 3×3 conv, 16 channels, stride 1: 10×10 → 8×8
    assert linears == [(16 * 8 * 8, 128), (128, N_ACTIONS)]
    assert [layer.shape for layer in task_affine_layers(policy.q_net)] == affine_shapes
    assert [layer.shape for layer in task_affine_layers(policy.q_net_target)] == affine_shapes
    assert policy.q_net(torch.zeros(5, *OBSERVATION_SHAPE, dtype=torch.uint8)).shape == (5, N_ACTIONS)


def test_grids_of_0_and_255_reach_the_network_as_0_and_1():
    policy = minatar_policy()
    grid = torch.zeros(2, *OBSERVATION_SHAPE, dtype=torch.uint8)
    grid[:, :4, 3, 5] = 255
    net = policy.q_net
    by_hand = net.q_net(net.features_extractor(grid.float() / 255))
    assert torch.allclose(net(grid), by_hand)


def test_each_task_has_its_own_gains_and_biases():
    policy = minatar_policy()
    policy.add_task()
    obs = torch.randint(0, 2, (3, *OBSERVATION_SHAPE), dtype=torch.uint8) * 255
    with torch.no_grad():
        q0 = _q(policy, 0, obs)
        assert torch.equal(q0, _q(policy, 1, obs))  # a new task starts from the shared network unchanged
        for layer in task_affine_layers(policy.q_net):
            layer.gains[1].mul_(1.5)
            layer.biases[1].add_(0.1)
        assert torch.equal(_q(policy, 0, obs), q0)
        assert not torch.allclose(_q(policy, 1, obs), q0)


def _q(policy: ContinualDQNPolicy, task: int, obs: torch.Tensor) -> torch.Tensor:
    with policy.using_task(task):
        return policy.q_net(obs)


def test_atari_torsos_and_minatar_torso_name_their_family():
    assert NETWORK_FAMILY == {"nature": "ale", "ewc": "ale", "minatar": "minatar"}
    atari = TaskModulatedCNN(spaces.Box(0, 255, (4, 84, 84), np.uint8), network="nature")
    assert atari.features_dim == 512
    assert TaskModulatedCNN(GRIDS, network="minatar").features_dim == 128


@pytest.mark.parametrize("network", ["minatar", "nature"])
def test_lean_forward_gives_sb3s_q_values_and_gradients_bit_for_bit(network):
    """The lean forward (no preprocess_obs checks, no Module.__call__ per layer) against QNetwork.forward."""
    torch.manual_seed(0)
    shape, n_actions = (OBSERVATION_SHAPE, N_ACTIONS) if network == "minatar" else ((4, 84, 84), 18)
    space = spaces.Box(0, 255, shape, np.uint8)
    policy = ContinualDQNPolicy(space, spaces.Discrete(n_actions), lambda _: 1e-4, network=network)
    for _ in range(3):
        policy.add_task()
    policy.set_task(1)
    with torch.no_grad():  # task 1's gains and biases away from (1, 0), so that they matter
        for layer in task_affine_layers(policy.q_net):
            layer.gains[1].uniform_(0.5, 1.5)
            layer.biases[1].uniform_(-0.1, 0.1)
    net, obs = policy.q_net, torch.randint(0, 256, (7, *shape), dtype=torch.uint8)
    weights = torch.randn(7, n_actions)

    def q_and_gradients(forward):
        net.zero_grad(set_to_none=True)
        q = forward(obs)
        (q * weights).sum().backward()
        return q.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    assert net.lean_layers is not None and not net.hooked()
    lean_q, lean_grads = q_and_gradients(net)
    sb3_q, sb3_grads = q_and_gradients(lambda x: QNetwork.forward(net, x))
    assert torch.equal(lean_q, sb3_q)
    affine = task_affine_layers(net)
    assert lean_grads.keys() == sb3_grads.keys()
    assert len(lean_grads) == len(list(net.parameters())) - 2 * len(affine) * 2  # all but tasks 0 and 2's
    for name in lean_grads:
        assert torch.equal(lean_grads[name], sb3_grads[name]), name
    with torch.inference_mode():  # the act path: batch 1, inference mode
        assert torch.equal(net(obs[:1]), QNetwork.forward(net, obs[:1]))


def test_a_hooked_layer_takes_sb3s_path_so_its_hook_runs():
    policy = minatar_policy()
    calls = []
    layer = task_affine_layers(policy.q_net)[1]
    handle = layer.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    obs = torch.zeros(2, *OBSERVATION_SHAPE, dtype=torch.uint8)
    assert policy.q_net.hooked()
    policy.q_net(obs)
    assert calls == [torch.Size([2, 128])]
    handle.remove()
    assert not policy.q_net.hooked()
    policy.q_net(obs)
    assert len(calls) == 1  # the lean path: no hook left to run
