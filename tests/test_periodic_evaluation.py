"""Evaluation during training: every game scored, and training exactly as it would be without it."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from agents.evaluation.periodic_evaluation import PeriodicEvaluationCallback, evaluate_games
from agents.run.config import Config, ConfigError, config_from_dict, load_config
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import ContinualDQN
from cl_rl.task_modulation import task_affine_layers
from tests.conftest import REPO

SHORT = [  # Pong is trained (120 > learning_starts = 64 steps), then Breakout, then Pong again
    "sequence.segments.0.steps=120",
    "sequence.segments.1.steps=80",
    "sequence.segments.2.steps=80",
]


class _LossLogger(Logger):
    """An SB3 logger that writes nothing and keeps every ``train/loss`` in order."""

    def __init__(self) -> None:
        super().__init__(folder=None, output_formats=[])
        self.losses: list[float] = []

    def record(self, key: str, value, exclude=None) -> None:
        if key == "train/loss":
            self.losses.append(value)
        super().record(key, value, exclude)


def _run(config: Config, evaluation: BaseCallback | None) -> tuple[ContinualDQN, list[float]]:
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    logger = _LossLogger()
    model.set_logger(logger)
    model.learn(sequence.total_steps, callback=[evaluation] if evaluation else [])
    stream.close()
    return model, logger.losses


def test_a_run_with_evaluation_trains_exactly_like_one_without():
    config = load_config(REPO / "configs" / "tiny.yaml", SHORT)
    sequence = config.sequence.build()
    plain, plain_losses = _run(config, None)
    evaluation = PeriodicEvaluationCallback(sequence.games, config.env, sequence.ends, every=50, episodes=1)
    evaluated, evaluated_losses = _run(config, evaluation)

    # Evaluated at steps 50, 100, 150, 250 and at the segment ends 120, 200, 280, on both games each time.
    assert [step for step, _ in evaluation.history] == [50, 100, 120, 150, 200, 250, 280]
    assert all([r.game for r in results] == ["Pong", "Breakout"] for _, results in evaluation.history)
    assert len(plain_losses) > 20
    assert evaluated_losses == plain_losses
    for a, b in zip(plain.policy.state_dict().values(), evaluated.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert evaluated.epsilon.state_dict() == plain.epsilon.state_dict()
    assert evaluated.task_source.state_dict() == plain.task_source.state_dict()
    assert evaluated.replay_buffer.sizes() == plain.replay_buffer.sizes()
    for task in range(plain.replay_buffer.n_tasks):
        # Whatever the buffer's layout, the same draws must return the same transitions.
        batches = []
        for model in (plain, evaluated):
            np.random.seed(task)
            batches.append(model.replay_buffer.sample(32, task=task))
        for a, b in zip(*batches, strict=True):
            assert (a is None and b is None) or torch.equal(a, b)


@pytest.fixture(scope="module")
def pong_only_model():
    """A model that has met Pong only (task 0), one step in."""
    config = load_config(REPO / "configs" / "tiny.yaml")
    stream, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    model.learn(1)
    yield model, config
    stream.close()


def test_evaluation_restores_global_generators_active_task_and_task_source(pong_only_model):
    model, config = pong_only_model
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    before = random.random(), np.random.rand(), torch.rand(1)
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    source_before = model.task_source.state_dict()
    results = evaluate_games(model, ["Pong", "Breakout"], config.env, episodes=2, epsilon=0.05)
    assert (random.random(), np.random.rand(), torch.rand(1)) == before
    assert model.task_source.state_dict() == source_before
    assert task_affine_layers(model.q_net)[0].active == 0 and model.policy.n_tasks == 1
    pong, breakout = results
    assert len(pong.scores) == 2 and len(breakout.scores) == 2
    assert pong.task == 0 and pong.known_tasks == 1
    assert pong.hns == pytest.approx((pong.score + 20.7) / (14.6 + 20.7))


@pytest.mark.parametrize("task_source", ["configured", "oracle"])
def test_a_game_the_agent_never_met_is_played_as_a_new_task(pong_only_model, task_source):
    model, config = pong_only_model
    (breakout,) = evaluate_games(model, ["Breakout"], config.env, episodes=1, task_source=task_source)
    assert breakout.task == 1 >= breakout.known_tasks  # a new id, played with fresh gains and biases
    assert len(breakout.scores) == 1


def test_same_seed_gives_the_same_scores(pong_only_model):
    model, config = pong_only_model
    first = evaluate_games(model, ["Pong"], config.env, episodes=1, epsilon=0.5, seed=7)
    again = evaluate_games(model, ["Pong"], config.env, episodes=1, epsilon=0.5, seed=7)
    assert first == again


def test_eval_section_is_validated():
    with pytest.raises(ConfigError, match=r"eval\.episodes must be >= 1"):
        config_from_dict({"sequence": {"segments": [{"game": "Pong", "steps": 10}]}, "eval": {"episodes": 0}})
    with pytest.raises(ConfigError, match=r"eval\.task_source must be one of"):
        config_from_dict({"sequence": {"segments": [{"game": "Pong", "steps": 10}]}, "eval": {"task_source": "x"}})
