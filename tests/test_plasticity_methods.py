"""The plasticity interventions (cl_rl/methods: redo, shrink_perturb, l2_init, reset_optimizer, cchain): their maths,
and each one combined with EWC on a tiny real MinAtar run."""

from __future__ import annotations

import math

import pytest
import torch
from stable_baselines3.common.logger import configure
from torch import nn

from agents.run.config import load_config
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import ContinualDQN
from cl_rl import plasticity
from cl_rl.methods.cchain import CChain, CChainConfig
from cl_rl.methods.l2_init import L2Init, L2InitConfig
from cl_rl.methods.redo import recycle
from cl_rl.methods.shrink_perturb import shrink_perturb
from tests.conftest import MINATAR_TINY_AGENT, REPO


def _net() -> nn.Sequential:
    """A MinAtar-shaped network: conv → ReLU → flatten → linear → ReLU → Q layer."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 4)
    )


def test_redo_recycles_exactly_the_dead_units_and_leaves_the_function_unchanged() -> None:
    net = _net()
    conv, fc, head = net[0], net[3], net[5]
    with torch.no_grad():
        conv.bias[[1, 4]] = -100.0  # channels 1 and 4 never fire
        fc.bias[[2, 7, 8]] = -100.0  # so do units 2, 7, 8 of the fc layer
    x = torch.rand(32, 3, 6, 6)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    q_before = net(x).detach()
    optimizer = torch.optim.Adam(net.parameters())
    net(x).square().sum().backward()
    optimizer.step()  # Adam now holds moments for every weight
    with torch.no_grad():  # undo the step: the test compares against `before`
        for name, p in net.named_parameters():
            p.copy_(before[name])
    with plasticity.captured_activations(net) as hidden:
        net(x)
    masks = recycle(plasticity.weight_layers(net), hidden, tau=0.0, optimizer=optimizer)

    silent = [[i for i in range(h.shape[1]) if not h[:, i].any()] for h in hidden]  # by hand: never above zero
    assert [m.nonzero().flatten().tolist() for m in masks] == silent
    assert {1, 4} <= set(silent[0]) and {2, 7, 8} <= set(silent[1])
    torch.testing.assert_close(net(x), q_before)  # dead units gave nothing before; now their outgoing weights are 0
    columns = masks[0].repeat_interleave(16)  # each conv channel is 4x4 = 16 columns of the flattened input
    kept = (slice(None), slice(None), ~columns)  # fc's inputs from live channels
    for layer, name, mask, inputs in ((conv, "0", masks[0], (slice(None),)), (fc, "3", masks[1], kept[1:])):
        assert not torch.equal(layer.weight[mask], before[f"{name}.weight"][mask])  # drawn again
        untouched = layer.weight[~mask][inputs], before[f"{name}.weight"][~mask][inputs]
        torch.testing.assert_close(*untouched)  # the other units' incoming weights from live units
        assert (layer.bias[mask] > -1).all()  # the -100 biases were drawn again (|b| <= 1/sqrt(fan_in))
    live_rows = fc.weight[~masks[1]]  # recycled fc rows are a fresh draw over all their inputs
    assert (live_rows[:, columns] == 0).all() and (live_rows[:, ~columns] != 0).all()
    assert (head.weight[:, masks[1]] == 0).all()
    state = optimizer.state[fc.weight]
    assert (state["exp_avg"][masks[1]] == 0).all() and (state["exp_avg"][:, columns] == 0).all()
    assert (optimizer.state[conv.weight]["exp_avg"][masks[0]] == 0).all()
    assert (state["exp_avg_sq"][~masks[1]][:, ~columns] != 0).any()  # other moments kept


def test_shrink_perturb_has_the_moments_of_lambda_theta_plus_sigma_init_noise() -> None:
    layer = nn.Linear(50, 40)
    theta = layer.weight.detach().clone()
    shrink, perturb, n = 0.6, 0.3, 400
    draws = []
    for _ in range(n):
        with torch.no_grad():
            layer.weight.copy_(theta)
        shrink_perturb(nn.Sequential(layer), shrink, perturb)
        draws.append(layer.weight.detach().clone())
    stacked = torch.stack(draws)
    bound = 1 / math.sqrt(50)  # Kaiming-uniform with a = √5: U(−1/√fan_in, 1/√fan_in)
    init_std = bound / math.sqrt(3)
    # mean over draws ≈ λθ elementwise (standard error σ·std_init/√n)
    error = (stacked.mean(0) - shrink * theta).abs().max()
    assert error < 5 * perturb * init_std / math.sqrt(n)
    assert stacked.std(0).mean() == pytest.approx(perturb * init_std, rel=0.05)


class _Port:
    """The part of the AgentPort that L2 Init and C-CHAIN use, over a plain network."""

    def __init__(self, net: nn.Module, states: torch.Tensor) -> None:
        self.q_network, self.states, self.device = net, states, torch.device("cpu")

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.q_network.named_parameters())

    def q_values(self, observations: torch.Tensor, task: int, target: bool = False) -> torch.Tensor:
        return self.q_network(observations)

    def sample(self, task: int, batch_size: int):
        return type("Batch", (), {"observations": self.states[:batch_size]})()


def test_l2_init_gradient_is_two_lambda_theta_minus_theta0() -> None:
    net = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    port = _Port(net, torch.zeros(1, 5))
    method = L2Init("l2_init", L2InitConfig(lam=0.05), port)  # type: ignore[arg-type]
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    assert method.penalty(0)["l2_init"].item() == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    method.penalty(0)["l2_init"].backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, 2 * 0.05 * (p.detach() - start[name]))


def test_cchain_is_zero_while_the_network_is_unchanged_and_measures_the_last_updates_churn() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    states = torch.randn(16, 4)
    method = CChain("cchain", CChainConfig(lam=2.0, batch_size=16), _Port(net, states))  # type: ignore[arg-type]
    method.before_update(0)
    assert method.penalty(0) == {}  # the first update has no previous weights
    method.before_update(0)
    assert method.penalty(0)["churn"].item() == 0.0  # no update in between
    q_previous = net(states).detach()
    with torch.no_grad():
        net[2].bias.add_(torch.tensor([0.5, -1.0, 0.0]))  # an "update"
    method.before_update(0)
    expected = 2.0 * (net(states) - q_previous).pow(2).sum(1).mean()
    torch.testing.assert_close(method.penalty(0)["churn"], expected)  # 2 · (0.25 + 1) = 2.5
    assert expected.item() == pytest.approx(2.5)
    method.on_task_switch(0, 1)
    method.before_update(1)
    assert method.penalty(1) == {}


MINATAR_TINY = [
    "sequence.segments=[{game: MinAtar/Breakout, steps: 200}, {game: MinAtar/SpaceInvaders, steps: 150}, "
    "{game: MinAtar/Breakout, steps: 150}]",
    *MINATAR_TINY_AGENT,
    "method.name=ewc+redo+shrink_perturb+l2_init+reset_optimizer+cchain",
    "method.ewc.batches=2",
    "method.redo.every=10",
    "method.redo.batch_size=64",
    "task.source=oracle",
    "eval.enabled=false",
]


def test_the_interventions_with_ewc_train_on_real_games(tmp_path) -> None:
    """Each intervention acts in a real run, combined with EWC: the optimiser is empty right after a switch, S&P has
    shrunk the weights, ReDo recycled units, and the penalties reached the loss."""
    config = load_config(REPO / "configs" / "minatar.yaml", MINATAR_TINY)
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(None, [""]))
    seen: dict[str, float] = {}
    switch = ContinualDQN.switch_task

    def watched(self: ContinualDQN, task: int) -> None:
        switch(self, task)
        if self.task_switches:
            seen.setdefault("state_after_switch", len(self.policy.optimizer.state))
            seen.update(self.logger.name_to_value)

    model.switch_task = watched.__get__(model)  # type: ignore[method-assign]
    model.learn(sequence.total_steps)
    stream.close()
    assert [m.name for m in model.methods] == ["ewc", "redo", "shrink_perturb", "l2_init", "reset_optimizer", "cchain"]
    assert seen["state_after_switch"] == 0
    assert seen["consolidation/reset_optimizer/cleared_parameters"] > 0
    norm_before = seen["consolidation/shrink_perturb/weight_norm_before"]
    assert seen["consolidation/shrink_perturb/weight_norm_after"] < norm_before
    assert len(model.policy.optimizer.state) > 0  # Adam's state came back with the next updates
    assert model.methods[1].updates == model._n_updates


def test_layer_norm_network_normalises_each_hidden_pre_activation_and_trains(tmp_path) -> None:
    """agent.layer_norm: conv → LayerNorm → TaskAffine → ReLU; the normalised map has mean 0 and variance 1 per
    state, and a checkpoint brings the same network back."""
    config = load_config(REPO / "configs" / "minatar.yaml", [*MINATAR_TINY[:-6], "agent.layer_norm=true"])
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(None, [""]))
    model.learn(250)
    norms = [m for m in model.q_net.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 and all(n.weight is None for n in norms)  # conv and fc; no affine of their own
    obs = torch.as_tensor(env.reset()).float()
    torso = model.q_net.features_extractor.net
    pre = torso[1](torso[0](obs / 255.0))
    torch.testing.assert_close(pre.flatten(1).mean(1), torch.zeros(len(obs)), atol=1e-5, rtol=0)
    torch.testing.assert_close(pre.flatten(1).var(1, unbiased=False), torch.ones(len(obs)), atol=1e-3, rtol=0)
    model.save(tmp_path / "model.zip")
    loaded = ContinualDQN.load(tmp_path / "model.zip", env=env)
    torch.testing.assert_close(loaded.q_net(obs), model.q_net(obs))
    stream.close()
