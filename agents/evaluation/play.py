"""Scores of a trained agent on one game, with training off and training state untouched."""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from agents.sb3.continual_dqn import ContinualDQN
from cl_rl.task_modulation import active_task, add_task, set_task, task_affine_layers, using_task
from cl_rl.task_source import TaskSource
from envs.atari import AtariSettings
from envs.game_env import make_game_env
from envs.scores import has_human_score, human_normalized_score


def evaluate_game(
    model: ContinualDQN,
    game: str,
    task: int,
    settings: AtariSettings,
    episodes: int = 3,
    epsilon: float = 0.05,
    seed: int = 0,
) -> list[float]:
    """Raw scores of ``episodes`` full games of ``game`` played ε-greedily with ``task``'s gains and biases."""
    source = _FixedTask(task)
    return list(play_game(model, game, source, settings, episodes, epsilon, seed).scores)


class _FixedTask:
    """A task source that answers the same task id for every observation (a ``TaskSource`` with no state)."""

    def __init__(self, task: int) -> None:
        self.task = task

    @property
    def n_tasks(self) -> int:
        return self.task + 1  # ids below it may exist (the agent's earlier tasks)

    def observe(self, observation: np.ndarray, true_label: str | None, *, episode_start: bool = False) -> int:
        return self.task

    def state_dict(self) -> dict:
        return {"task": self.task}

    def load_state_dict(self, state: dict) -> None:
        self.task = int(state["task"])


@dataclass(frozen=True)
class GameEvaluation:
    """Episode scores of one game, and the task ids that played it."""

    game: str
    scores: tuple[float, ...]
    task: int  # most frequent task id over the steps (>= known_tasks: a task the network did not have yet)
    known_tasks: int  # tasks the network had when evaluated

    @property
    def score(self) -> float:
        """Mean raw score over the episodes."""
        return float(np.mean(self.scores))

    @property
    def hns(self) -> float:
        """Human-normalised mean score (0: random play, 1: human); NaN for a game without a human score (MinAtar)."""
        return human_normalized_score(self.game, self.score) if has_human_score(self.game) else float("nan")


def play_game(
    model: ContinualDQN,
    game: str,
    source: TaskSource,
    settings: AtariSettings,
    episodes: int,
    epsilon: float,
    seed: int,
) -> GameEvaluation:
    """``episodes`` full episodes of ``game`` played ε-greedily, each step's task id from ``source``.

    A task id the network does not have yet is played with fresh gains and biases on the shared weights (a copy of
    the network), as a new task would start. Uses its own env and ε generator and restores the active task.
    """
    known = model.policy.n_tasks
    new_task_net: torch.nn.Module | None = None
    env = make_game_env(game, settings, seed=seed)
    rng = np.random.default_rng(seed)
    scores: list[float] = []
    tasks: Counter[int] = Counter()
    active = active_task(model.q_net)
    restore_active = using_task(active, model.q_net) if active >= 0 else contextlib.nullcontext()
    try:
        with torch.no_grad(), restore_active:
            obs, _ = env.reset(seed=seed)
            episode_start = True
            while len(scores) < episodes:
                task = source.observe(obs, game, episode_start=episode_start)
                episode_start = False
                tasks[task] += 1
                if rng.random() < epsilon:
                    action = int(rng.integers(env.action_space.n))  # type: ignore[attr-defined]  # Discrete
                else:
                    if task < known:
                        net: torch.nn.Module = model.q_net
                        set_task(net, task)
                    else:
                        if new_task_net is None:
                            new_task_net = _with_new_task(model.q_net)
                        net = new_task_net
                    action = int(net(torch.as_tensor(obs, device=model.device).unsqueeze(0)).argmax())
                obs, _, terminated, truncated, info = env.step(action)
                if "episode" in info:
                    scores.append(float(info["episode"]["r"]))
                if terminated or truncated:
                    obs, _ = env.reset()
                    episode_start = True
    finally:
        env.close()
    return GameEvaluation(game, tuple(scores), tasks.most_common(1)[0][0], known)


def _with_new_task(q_net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``q_net`` playing a task it never had: fresh gains and biases on the shared weights."""
    net = copy.deepcopy(q_net)
    add_task(net)
    set_task(net, task_affine_layers(net)[0].n_tasks - 1)
    return net
