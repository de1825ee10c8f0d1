"""cl_rl.plasticity: every diagnostic computed a second way (numpy loops, known matrices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cl_rl import plasticity


def test_dormant_fraction_matches_a_loop_over_units_for_dense_and_conv_layers() -> None:
    g = torch.Generator().manual_seed(0)
    dense = torch.relu(torch.randn(64, 20, generator=g) - torch.linspace(-1, 3, 20))  # later units rarely fire
    conv = torch.relu(torch.randn(16, 6, 5, 5, generator=g) - torch.arange(6.0).view(1, 6, 1, 1))
    for activations in (dense, conv):
        a = activations.numpy()
        units = a.shape[1]
        per_unit = [np.abs(a[:, i]).mean() for i in range(units)]
        layer = sum(per_unit) / units
        for tau in (0.0, 0.1, 0.5):
            expected = sum(score / layer <= tau for score in per_unit) / units
            assert plasticity.dormant_fraction(activations, tau) == pytest.approx(expected)
    # some, not all, units are dormant at τ = 0.1 in the conv example (the test can fail)
    assert 0 < plasticity.dormant_fraction(conv, 0.1) < 1


def test_dead_units_are_dormant_at_tau_zero_and_a_silent_layer_is_all_dormant() -> None:
    activations = torch.rand(10, 8)
    activations[:, [1, 5]] = 0
    assert plasticity.dormant_mask(activations, 0.0).tolist() == [i in (1, 5) for i in range(8)]
    assert plasticity.dormant_fraction(torch.zeros(4, 3)) == 1.0


def test_effective_rank_of_matrices_of_known_rank() -> None:
    g = torch.Generator().manual_seed(1)
    for rank in (1, 3, 7):
        low = torch.randn(50, rank, generator=g) @ torch.randn(rank, 20, generator=g)
        assert plasticity.effective_rank(low) == rank  # the other singular values are rounding noise
    assert plasticity.effective_rank(torch.eye(10)) == 10  # equal singular values: all needed for 99 %
    assert plasticity.effective_rank(torch.zeros(5, 5)) == 0


def test_effective_rank_by_its_definition_with_numpy() -> None:
    features = torch.randn(40, 12, generator=torch.Generator().manual_seed(2)) * torch.logspace(0, -3, 12)
    sigma = np.linalg.svd(features.double().numpy(), compute_uv=False)
    for delta in (0.01, 0.1, 0.3):
        k = next(k for k in range(1, 13) if sigma[:k].sum() / sigma.sum() >= 1 - delta)
        assert plasticity.effective_rank(features, delta) == k
    assert 1 < plasticity.effective_rank(features, 0.3) < plasticity.effective_rank(features, 0.01)


def test_stable_rank_is_frobenius_over_spectral_norm_squared() -> None:
    features = torch.randn(30, 8, generator=torch.Generator().manual_seed(3))
    x = features.double().numpy()
    assert plasticity.stable_rank(features) == pytest.approx(np.linalg.norm(x, "fro") ** 2 / np.linalg.norm(x, 2) ** 2)
    assert plasticity.stable_rank(torch.eye(6)) == pytest.approx(6.0)
    assert plasticity.stable_rank(torch.ones(4, 9)) == pytest.approx(1.0)


def test_norms_distance_and_churn_by_hand() -> None:
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])
    assert plasticity.l2_norm([a, b]) == pytest.approx(5.0)
    params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    start = {"w": torch.tensor([1.0, -1.0]), "b": torch.tensor([4.0])}
    assert plasticity.distance(params, start) == pytest.approx(5.0)
    features = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert plasticity.feature_norm(features) == pytest.approx(3.0)
    before = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    after = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 1.0], [5.0, 3.0]])
    assert plasticity.policy_churn(before, after) == pytest.approx(0.5)


def test_captured_activations_are_each_relus_output_and_hooks_go_away() -> None:
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(7, 4)
    with plasticity.captured_activations(net) as outputs:
        net(x)
    first = torch.relu(net[0](x))
    assert len(outputs) == 2
    torch.testing.assert_close(outputs[0], first)
    torch.testing.assert_close(outputs[1], torch.relu(net[2](first)))
    assert not any(m._forward_hooks for m in net.modules())
