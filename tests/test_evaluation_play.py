"""Evaluation plays its episodes side by side: each episode's score must not depend on what runs beside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evaluation.play import episode_seed, play_episodes, play_game
from agents.run.config import load_config
from agents.run.training import make_agent, make_stream
from cl_rl.task_modulation import active_task
from tests.conftest import MINATAR_TINY_AGENT, REPO

SEEN: list[int] = []  # every task id a DelayedSource reported, over all its copies


class DelayedSource:
    """Reports its previous task for ``delay`` steps after an episode start, then task 0 (the game's), as an
    inferred task source does until its decision window closes."""

    def __init__(self, previous: int = 1, delay: int = 4) -> None:
        self.previous, self.delay, self.since_start = previous, delay, 0

    @property
    def n_tasks(self) -> int:
        return 2

    def observe(self, observation: np.ndarray, true_label: str | None, *, episode_start: bool = False) -> int:
        self.since_start = 0 if episode_start else self.since_start + 1
        if self.since_start >= self.delay:
            self.previous = 0
        SEEN.append(self.previous)
        return self.previous

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CountingSource:
    """A stateful task source: task ``(steps seen // 5) % 3``, so the episodes in one batch ask for different tasks
    (task 2 is one the network does not have: played by the fresh-gains copy)."""

    def __init__(self) -> None:
        self.steps = 0

    @property
    def n_tasks(self) -> int:
        return 3

    def observe(self, observation: np.ndarray, true_label: str | None, *, episode_start: bool = False) -> int:
        self.steps += 1
        return (self.steps // 5) % 3

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])


@pytest.fixture(scope="module")
def two_task_model():
    config = load_config(REPO / "configs" / "minatar.yaml", MINATAR_TINY_AGENT)
    stream, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    torch.manual_seed(0)
    for _ in range(2):
        model.policy.add_task()
    with torch.no_grad():  # distinct gains per task, so that the task id changes the actions
        for p in model.q_net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.policy.set_task(1)
    yield model, config
    stream.close()


@pytest.mark.parametrize("game", ["MinAtar/Breakout", "MinAtar/SpaceInvaders"])
def test_an_episodes_score_is_the_same_alone_and_in_a_batch(two_task_model, game):
    model, config = two_task_model
    seeds = [episode_seed(3, i) for i in range(4)]
    together, _ = play_episodes(model, game, [CountingSource() for _ in seeds], config.env, seeds, epsilon=0.2)
    alone = [play_episodes(model, game, [CountingSource()], config.env, [s], epsilon=0.2)[0][0] for s in seeds]
    assert together == alone
    assert len(set(alone)) > 1  # different seeds, different games: the comparison is not between constants


def test_play_game_restores_the_active_task_and_seeds_episodes_independently(two_task_model):
    model, config = two_task_model
    first = play_game(model, "MinAtar/Breakout", CountingSource(), config.env, 3, 0.2, seed=5)
    assert active_task(model.q_net) == 1
    more = play_game(model, "MinAtar/Breakout", CountingSource(), config.env, 5, 0.2, seed=5)
    assert more.scores[:3] == first.scores  # adding episodes leaves the earlier ones as they were
    assert len({episode_seed(5, i) for i in range(100)}) == 100
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        play_game(model, "MinAtar/Breakout", CountingSource(), config.env, 0, 0.2, seed=5)


def test_only_the_first_episode_waits_for_the_task_source_to_recognise_the_game(two_task_model):
    model, config = two_task_model
    SEEN.clear()
    result = play_game(model, "MinAtar/Breakout", DelayedSource(previous=1, delay=4), config.env, 5, 0.0, seed=1)
    assert len(result.scores) == 5 and len(SEEN) > 5 * 4
    assert SEEN.count(1) == 4  # the detection delay once, in the first episode, not once per episode
    assert result.task == 0
