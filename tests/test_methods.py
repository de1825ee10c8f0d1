"""The method port (cl_rl/methods): registry and names, the agent as an AgentPort, one TD target for every caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure

from agents.run.config import ConfigError, load_config
from agents.run.training import make_agent, make_stream
from cl_rl.importance import diagonal_importance, td_log_likelihood
from cl_rl.methods import REGISTRY, AgentPort, ContinualMethod, parse_method_names
from cl_rl.methods.quadratic import EWCConfig, QuadraticMethod
from cl_rl.targets import dqn_target
from cl_rl.task_modulation import active_task
from tests.conftest import REPO


def test_method_names_parse_and_combine():
    assert parse_method_names("none") == []
    assert parse_method_names("ewc") == ["ewc"]
    assert parse_method_names("ewc + lwf") == ["ewc", "lwf"]
    with pytest.raises(ValueError, match="did you mean ewc"):
        parse_method_names("ewk")
    with pytest.raises(ValueError, match="each method once"):
        parse_method_names("ewc+ewc")


def test_every_registered_method_has_a_settings_section_with_its_defaults():
    config = load_config(REPO / "configs" / "tiny.yaml", ["method.name=ewc", "method.ewc.lam=7"])
    assert config.method.ewc.lam == 7.0
    for name, spec in REGISTRY.items():
        assert type(getattr(config.method, name)) is spec.settings
    with pytest.raises(ConfigError, match=r"unknown config key 'method.ewc.lamda'; did you mean lam"):
        load_config(REPO / "configs" / "tiny.yaml", ["method.ewc.lamda=7"])


@pytest.fixture(scope="module")
def trained_without_double_dqn():
    """Pong 200 steps with plain DQN targets: the Fisher's targets must follow the agent's own choice."""
    config = load_config(
        REPO / "configs" / "tiny.yaml",
        ["agent.double_dqn=false", "sequence.segments=[{game: Pong, steps: 200}]", "eval.enabled=false"],
    )
    stream, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    model.set_logger(configure(None, [""]))
    model.learn(200)
    # Make the online and target networks differ, so Double DQN and DQN targets disagree.
    with torch.no_grad():
        for p in model.q_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    yield model
    stream.close()


def test_the_agent_is_an_agent_port(trained_without_double_dqn):
    model = trained_without_double_dqn
    assert isinstance(model, AgentPort)
    batch = model.sample(0, 16)
    assert batch is not None and batch.observations.shape[0] == 16
    assert model.sample(5, 16) is None and model.memory_size(0) == 200
    with torch.no_grad():
        assert torch.equal(model.q_values(batch.observations, 0), model.q_net(batch.observations))


def test_td_fisher_uses_the_agents_own_target(trained_without_double_dqn):
    """The "td" Fisher's targets are the TD loss's: DQN's max target here (the old code always used Double DQN)."""
    model = trained_without_double_dqn
    method = QuadraticMethod("ewc", EWCConfig(fisher="td", batches=3, batch_size=8), model)
    np.random.seed(3)
    fisher = method.importance(0)

    np.random.seed(3)
    batches = []
    for _ in range(3):
        data = model.replay_buffer.buffer(0).sample(8)
        with torch.no_grad():
            y = dqn_target(model.q_net_target(data.next_observations), data.rewards, data.dones, model.gamma)
        batches.append((data.observations, data.actions.long().squeeze(1), y.squeeze(1)))
    params = model.shared_parameters()
    by_hand = diagonal_importance(model.q_net, params, td_log_likelihood, batches, reduce="square")
    for name in params:
        torch.testing.assert_close(fisher[name], by_hand[name])


def test_td_target_and_loss_under_another_task_restore_the_active_one(trained_without_double_dqn):
    model = trained_without_double_dqn
    model.policy.add_task()
    model.replay_buffer.add_task()
    model.n_tasks_created += 1
    batch = model.sample(0, 8)
    assert batch is not None
    loss_0 = model.td_loss(batch, 0)
    loss_1 = model.td_loss(batch, 1)  # fresh gains and biases: another function, another loss
    assert loss_0.requires_grad and not torch.equal(loss_0, loss_1)
    assert active_task(model.q_net) == 0 and active_task(model.q_net_target) == 0


class _CountingMethod(ContinualMethod):
    name = "counting"

    def __init__(self) -> None:
        self.calls = {"before_update": 0, "after_backward": 0}

    def before_update(self, task: int):
        self.calls["before_update"] += 1
        return {"calls": float(self.calls["before_update"])}

    def after_backward(self, task: int):
        self.calls["after_backward"] += 1
        return {}


def test_the_agent_calls_every_hook_of_an_added_method(tiny_config, tmp_path):
    stream, env = make_stream(tiny_config, tiny_config.sequence.build())
    model = make_agent(tiny_config, env)
    counting = _CountingMethod()
    model.methods.append(counting)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200, log_interval=1)  # dump at every episode's end (100-step episodes)
    stream.close()
    updates = model._n_updates
    assert updates > 0 and counting.calls == {"before_update": updates, "after_backward": updates}
    assert "train/counting/calls" in (tmp_path / "progress.csv").read_text().splitlines()[0]
