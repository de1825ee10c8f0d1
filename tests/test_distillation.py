"""Q distillation (cl_rl/distillation.py) and its wiring into the agent (agents/distillation.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from stable_baselines3.common.logger import configure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from agents.run.config import ConfigError, load_config
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import ContinualDQN
from cl_rl.distillation import QDistillation, q_distillation_loss, q_under_task
from cl_rl.regularizer import Regularizer
from cl_rl.task_modulation import TaskAffine, add_task, set_task
from tests.conftest import REPO


def test_loss_value_and_gradient_match_a_hand_computation():
    student = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    loss = q_distillation_loss(student, teacher)
    # mean over states of Σ_a (Q − Q_T)²: ((1 + 4) + (4 + 0)) / 2 = 4.5; gradient 2 (Q − Q_T) / N
    assert loss.item() == pytest.approx(4.5)
    loss.backward()
    assert torch.allclose(student.grad, torch.tensor([[1.0, 2.0], [-2.0, 0.0]]))
    normalized = q_distillation_loss(student, teacher, normalize=True)
    assert normalized.item() == pytest.approx(4.5 / teacher.var(unbiased=False).item())


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), TaskAffine((5,)), nn.Tanh(), nn.Linear(5, 2), TaskAffine((2,))).double()
    for _ in range(3):
        add_task(net)
    set_task(net, 2)
    return net


def test_zero_when_the_network_equals_its_teacher_and_only_earlier_tasks_count():
    net = _net()
    states = torch.randn(4, 3, dtype=torch.float64)
    seen: list[tuple[int, int]] = []

    def states_fn(task: int, current: int) -> torch.Tensor:
        seen.append((task, current))
        return states

    distill = QDistillation("distill", net, states_fn, alpha=2.0)
    assert isinstance(distill, Regularizer) and distill.penalty(current_task=1) == {}  # no teacher yet
    distill.on_task_switch(0, 1)
    distill.on_task_switch(1, 2)
    term = distill.penalty(current_task=1)["distill"]
    assert seen == [(0, 1)]  # the current task is not distilled
    term.backward()
    assert term.item() == 0.0 and all(p.grad is None or not p.grad.any() for p in net.parameters())
    assert distill.penalty(current_task=2)["distill"].item() == 0.0 and [t for t, _ in seen[1:]] == [0, 1]
    assert all(layer.active == 2 for layer in net.modules() if isinstance(layer, TaskAffine))  # restored


def test_gradient_matches_finite_differences_and_the_teacher_stays_frozen():
    net = _net()
    states = {0: torch.randn(6, 3, dtype=torch.float64), 1: torch.randn(6, 3, dtype=torch.float64)}
    distill = QDistillation("distill", net, lambda task, current: states[task], alpha=0.7, normalize=True)
    distill.on_task_switch(0, 1)
    distill.on_task_switch(1, 2)
    frozen = copy.deepcopy(distill.teacher.state_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    weight = net[0].weight
    term = distill.penalty(current_task=2)["distill"]
    (grad,) = torch.autograd.grad(term, weight)
    numeric = torch.zeros_like(weight)
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            with torch.no_grad():
                weight[i, j] += 1e-6
                up = distill.penalty(current_task=2)["distill"].item()
                weight[i, j] -= 2e-6
                down = distill.penalty(current_task=2)["distill"].item()
                weight[i, j] += 1e-6
            numeric[i, j] = (up - down) / 2e-6
    assert term.item() > 0 and torch.allclose(grad, numeric, atol=1e-6, rtol=1e-4)
    # By hand: α · mean_k mean_s ‖Q_θ(s; k) − Q_T(s; k)‖² / Var(Q_T(·; k))
    by_hand = torch.stack(
        [
            q_distillation_loss(q_under_task(net, states[k], k), q_under_task(distill.teacher, states[k], k), True)
            for k in (0, 1)
        ]
    ).mean()
    assert term.item() == pytest.approx(0.7 * by_hand.item())
    assert all(torch.equal(v, frozen[n]) for n, v in distill.teacher.state_dict().items())
    assert not any(p.requires_grad for p in distill.teacher.parameters())


def test_bad_method_settings_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown method 'replay'"):
        load_config(REPO / "configs" / "tiny.yaml", ["method.name=replay"])
    with pytest.raises(ConfigError, match=r"method\.generative_replay\.generator.*steps_per_switch"):
        load_config(REPO / "configs" / "tiny.yaml", ["method.generative_replay.generator.steps_per_switch=-1"])
    with pytest.raises(ConfigError, match=r"method\.lwf.*alpha"):
        load_config(REPO / "configs" / "tiny.yaml", ["method.lwf.alpha=-1"])
    with pytest.raises(ConfigError, match=r"replaced by 'method'"):
        load_config(REPO / "configs" / "tiny.yaml", ["distill.source=current"])


@pytest.mark.parametrize("source", ["generative_replay", "lwf"])
def test_agent_distils_after_the_first_switch_logs_and_saves_its_teachers(source, tmp_path):
    """Pong 200 → Breakout 150 → Pong 150 (tiny.yaml): the term is active from the first switch, the generator's grids
    and losses reach TensorBoard, and save/load brings back the teacher Q-network and the generator."""
    overrides = [
        f"method.name={source}",
        f"method.{source}.batch_size=8",
    ]
    if source == "generative_replay":
        overrides += [f"method.{source}.generator.{k}" for k in ("channels=4", "latent_dim=4", "batch_size=8")]
        overrides += [f"method.{source}.generator.{k}" for k in ("steps_per_switch=3", "steps_per_update=1")]
    config = load_config(REPO / "configs" / "tiny.yaml", overrides)
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard"]))
    model.learn(sequence.total_steps, log_interval=1)  # dump the logs at every episode's end
    stream.close()
    (distill,) = model.methods
    assert distill.core.known_tasks == [0, 1]
    acc = EventAccumulator(str(tmp_path / "tb")).Reload()
    scalars = {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    penalty = f"train/penalty/{source}/distill"
    assert scalars[penalty] and min(scalars[penalty]) > 200
    if source == "generative_replay":
        grids = {f"consolidation/{source}/samples/task_0", f"consolidation/{source}/samples/task_1"}
        assert grids <= set(acc.Tags()["images"])
        assert f"train/{source}/generator/loss" in scalars and f"consolidation/{source}/generator_loss_last" in scalars
    else:
        assert distill.replay is None and not acc.Tags()["images"]

    model.save(tmp_path / "model.zip")
    loaded = ContinualDQN.load(tmp_path / "model.zip")
    (again,) = loaded.methods
    assert again.core.known_tasks == [0, 1] and again.core.student is loaded.q_net
    for name, value in distill.core.teacher.state_dict().items():
        assert torch.equal(value, again.core.teacher.state_dict()[name]), name
    if source == "generative_replay":
        assert again.replay.known_tasks == [0, 1]
        for name, value in distill.replay.teacher.state_dict().items():
            assert torch.equal(value, again.replay.teacher.state_dict()[name]), name


def test_distillation_combines_with_a_consolidation_penalty(tiny_config):
    tiny_config.method.name = "ewc+lwf"
    stream, env = make_stream(tiny_config, tiny_config.sequence.build())
    model = make_agent(tiny_config, env)
    assert [m.name for m in model.methods] == ["ewc", "lwf"]
    stream.close()
