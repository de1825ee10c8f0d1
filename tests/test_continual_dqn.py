"""The continual agent on real ALE games with tiny budgets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from agents.run.config import load_config
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import ContinualDQN
from cl_rl.task_modulation import shared_parameters, task_parameters
from tests.conftest import REPO


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


class _SnapshotAt(BaseCallback):
    """Copies every task's gains/biases and the shared weights when the run reaches given steps."""

    def __init__(self, steps: set[int]) -> None:
        super().__init__()
        self.steps = steps
        self.taken: dict[int, dict] = {}

    def _on_step(self) -> bool:
        if self.num_timesteps in self.steps:
            q = self.model.q_net
            self.taken[self.num_timesteps] = {
                "tasks": [_snapshot(task_parameters(q, k)) for k in range(self.model.n_tasks_created)],
                "shared": _snapshot(p for _, p in shared_parameters(q)),
                "task": self.model.current_task,
            }
        return True


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Pong 200 → Breakout 150 → Pong 150 (tiny.yaml), with snapshots at both switches."""
    tiny_config = load_config(REPO / "configs" / "tiny.yaml")
    tmp_path = tmp_path_factory.mktemp("trained")
    sequence = tiny_config.sequence.build()
    stream, env = make_stream(tiny_config, sequence)
    model = make_agent(tiny_config, env)
    model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard"]))
    snap = _SnapshotAt({199, 200, 349, 350})
    model.learn(sequence.total_steps, callback=snap)
    yield model, snap.taken, sequence
    stream.close()


def test_task_ids_and_epsilon_timers_follow_the_sequence(trained):
    model, taken, _ = trained
    # The callback runs before the switch of the step is processed: step 200 is the last step of Pong's segment.
    assert [taken[s]["task"] for s in (199, 200, 349, 350)] == [0, 0, 1, 1]
    assert model.current_task == 0 and model.n_tasks_created == 2
    # ε timers are per task: Pong has 200 + 150 steps, Breakout 150; ε resumed on Pong's revisit.
    assert model.epsilon.steps == {0: 350, 1: 150}
    eps = model.epsilon
    assert model.exploration_rate == pytest.approx(eps.initial + (eps.final - eps.initial) * min(350 / 200, 1))
    assert eps.value(1) == pytest.approx(eps.initial + (eps.final - eps.initial) * 150 / 200)
    assert model.replay_buffer.sizes() == [350, 150]


def test_training_one_task_never_changes_another_tasks_gains_and_biases(trained):
    model, taken, _ = trained
    breakout_end, final = taken[350]["tasks"], [_snapshot(task_parameters(model.q_net, k)) for k in (0, 1)]
    # Breakout's own segment moved its gains/biases away from their initial 1/0 (so this test can fail) ...
    initial = [torch.ones_like(p) if i % 2 == 0 else torch.zeros_like(p) for i, p in enumerate(breakout_end[1])]
    assert not _same(breakout_end[1], initial)
    # ... but Pong's revisit trained Pong's and the shared weights, never Breakout's.
    assert _same(breakout_end[1], final[1])
    assert not _same(breakout_end[0], final[0])
    assert not _same(taken[350]["shared"], _snapshot(p for _, p in shared_parameters(model.q_net)))
    # Likewise Breakout's segment left Pong's parameters alone.
    assert _same(taken[200]["tasks"][0], taken[350]["tasks"][0])


def test_save_load_continue_keeps_counters_task_parameters_and_epsilon(trained, tmp_path, tiny_config):
    model, _, sequence = trained
    path = tmp_path / "model.zip"
    model.save(path)
    stream, env = make_stream(tiny_config, sequence)
    loaded = ContinualDQN.load(path, env=env, device="cpu")
    assert loaded.num_timesteps == model.num_timesteps == sequence.total_steps
    assert loaded.n_tasks_created == 2 and loaded.current_task == 0
    assert loaded.epsilon.steps == model.epsilon.steps
    assert loaded.task_source.state_dict() == model.task_source.state_dict()
    for k in range(2):
        assert _same(task_parameters(loaded.q_net, k), task_parameters(model.q_net, k))
    obs = np.random.default_rng(0).integers(0, 255, (3, 4, 84, 84), dtype=np.uint8)
    with torch.no_grad():
        for k in range(2):
            loaded.policy.set_task(k)
            model.policy.set_task(k)
            t = torch.as_tensor(obs)
            assert torch.allclose(loaded.q_net(t), model.q_net(t))
    model.policy.set_task(model.current_task)
    # Continue: the optimiser state lines up with the re-created per-task parameter groups.
    loaded.set_logger(configure(str(tmp_path / "tb2"), ["tensorboard"]))
    assert len(loaded.policy.optimizer.param_groups) == 3
    assert loaded.policy.optimizer.state_dict()["state"].keys() == model.policy.optimizer.state_dict()["state"].keys()
    stream.seek(sequence.ends[1])  # back into Pong's revisit
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded.num_timesteps == sequence.total_steps + 40
    assert loaded.epsilon.steps == {0: 350 + 40, 1: 150}
    stream.close()


def test_using_task_applies_a_task_temporarily_and_restores_the_active_one(trained):
    model, _, _ = trained
    obs = torch.as_tensor(np.random.default_rng(1).integers(0, 255, (2, 4, 84, 84), dtype=np.uint8))
    with torch.no_grad():
        q_active = model.q_net(obs)
        with model.policy.using_task(1):
            q_other = model.q_net(obs)
        assert torch.equal(model.q_net(obs), q_active)
    assert not torch.allclose(q_other, q_active)
    assert [m.active for m in model.q_net.modules() if type(m).__name__ == "TaskAffine"] == [model.current_task] * 5


def test_ewc_network_and_plain_dqn_target(tiny_config):
    tiny_config.agent.network = "ewc"
    tiny_config.agent.double_dqn = False
    tiny_config.agent.gains = "element"
    stream, env = make_stream(tiny_config, tiny_config.sequence.build())
    model = make_agent(tiny_config, env)
    convs = [m.out_channels for m in model.q_net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m.out_features for m in model.q_net.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [32, 64, 128] and linears == [1024, 18]
    model.policy.add_task()
    model.policy.set_task(0)
    affine_shapes = [m.shape for m in model.q_net.modules() if type(m).__name__ == "TaskAffine"]
    assert affine_shapes == [(32, 20, 20), (64, 9, 9), (128, 7, 7), (1024,), (18,)]
    assert model.q_net(torch.zeros(2, 4, 84, 84)).shape == (2, 18)
    stream.close()


@pytest.fixture(scope="module")
def ewc_anchored():
    """Pong 100 → Breakout 100 with EWC: training Breakout under task 0's anchor."""
    config = load_config(
        REPO / "configs" / "tiny.yaml",
        [
            "sequence.segments=[{game: Pong, steps: 100}, {game: Breakout, steps: 100}]",
            "method.name=ewc",
            "method.ewc.batches=2",
            "eval.enabled=false",
        ],
    )
    stream, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    model.set_logger(configure(None, [""]))
    model.learn(200)
    yield model
    stream.close()


def test_lean_act_path_takes_predicts_actions_for_the_same_rng_state(ewc_anchored):
    model = ewc_anchored
    observations = [model.replay_buffer.sample(1).observations.numpy() for _ in range(30)]
    model.exploration_rate = 0.3  # both branches: random draws and greedy forward passes
    np.random.seed(5)
    model.action_space.seed(5)
    expected = [model.predict(obs, deterministic=False)[0] for obs in observations]
    np.random.seed(5)
    model.action_space.seed(5)
    actions = [model._act(obs) for obs in observations]
    for a, e in zip(actions, expected, strict=True):
        assert a.shape == e.shape == (1,) and a.dtype == e.dtype and (a == e).all()
    assert len({int(a[0]) for a in actions}) > 1


def test_closed_form_ewc_update_gives_autograds_loss_and_gradients(ewc_anchored):
    """One update's TD loss and gradients, penalty by autograd (plain) and added after backward (closed form)."""
    model = ewc_anchored
    assert model.current_task == 1 and isinstance(model.policy.optimizer, torch.optim.Adam)
    assert model.policy.optimizer.defaults["fused"]  # the default optimiser: fused Adam
    (ewc,) = model.methods
    data = model._transitions(model.replay_buffer.sample(32))
    with torch.no_grad():  # move θ away from the anchor so that the penalty's gradient is not zero
        for p in model.shared_parameters().values():
            p.add_(0.01 * torch.randn_like(p))

    def gradients(closed_form: bool):
        ewc.config.closed_form = closed_form
        model.policy.optimizer.zero_grad()
        td_loss = model._td_loss(data)
        terms = ewc.penalty(1)
        (td_loss + sum(terms.values())).backward()
        ewc._logged_task = -1  # the next after_backward reports the anchor's value
        stats = ewc.after_backward(1)
        value = terms["task_0"] if terms else stats["penalty/task_0"]
        grads = {n: p.grad.clone() for n, p in model.q_net.named_parameters() if p.grad is not None}
        return td_loss.detach(), value.detach(), grads

    try:
        plain, fast = gradients(False), gradients(True)
    finally:
        ewc.config.closed_form = True
    assert torch.equal(plain[0], fast[0]) and torch.equal(plain[1], fast[1]) and plain[1] > 0
    assert plain[2].keys() == fast[2].keys()
    for name in plain[2]:  # one anchor: bit for bit (tests/test_consolidation.py: within 1e-6 with several)
        assert torch.equal(plain[2][name], fast[2][name]), name


def test_lean_update_gives_sb3s_path_loss_gradients_and_step_bit_for_bit(ewc_anchored):
    """One ``train`` update on the lean path (lean forward, cached clip list, Adam over the groups with gradients)
    against the same update on the plain path (SB3's forward, forced by a no-op hook; clipping over
    ``policy.parameters()``; Adam over every group): loss, gradients, new weights and Adam's state, bit for bit."""
    model = ewc_anchored
    optimizer = model.policy.optimizer
    assert model.current_task == 1 and len(optimizer.param_groups) == 3  # shared + two tasks' gains and biases
    weights = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    adam_state = copy.deepcopy(optimizer.state_dict())

    def update(plain: bool):
        for name, p in model.policy.named_parameters():
            p.data.copy_(weights[name])
        optimizer.load_state_dict(copy.deepcopy(adam_state))
        np.random.seed(3)  # the same minibatch
        hooks = []
        if plain:
            hooks = [model.q_net.q_net[0].register_forward_hook(lambda *_: None)]
            model._clipped_parameters = model.policy.parameters  # as before the lean path
            model._optimizer_step = optimizer.step
        try:
            model.train(gradient_steps=1, batch_size=32)
        finally:
            for h in hooks:
                h.remove()
            vars(model).pop("_clipped_parameters", None)
            vars(model).pop("_optimizer_step", None)
        q_params = dict(model.q_net.named_parameters())
        return (
            model.logger.name_to_value["train/loss"],
            {n: p.grad.clone() for n, p in q_params.items() if p.grad is not None},
            {n: p.detach().clone() for n, p in q_params.items()},
            optimizer.state_dict()["state"],
        )

    lean, plain = update(plain=False), update(plain=True)
    assert lean[0] == plain[0] > 0
    assert lean[1].keys() == plain[1].keys() and any("gains.1" in n for n in lean[1])
    assert not any("gains.0" in n or "biases.0" in n for n in lean[1])  # task 0 is not trained now
    for name in plain[1]:
        assert torch.equal(lean[1][name], plain[1][name]), name
    for name in plain[2]:
        assert torch.equal(lean[2][name], plain[2][name]), name
        assert not name.endswith(".gains.1") or not torch.equal(lean[2][name], weights[f"q_net.{name}"]), name
    assert lean[3].keys() == plain[3].keys()
    for index, state in plain[3].items():
        for key, value in state.items():
            assert torch.equal(lean[3][index][key], value), (index, key)
