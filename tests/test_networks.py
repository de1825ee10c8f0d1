"""The task-modulated Q-networks: the MinAtar paper's network over (10, 10, 10) grids with per-task gains and biases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

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
