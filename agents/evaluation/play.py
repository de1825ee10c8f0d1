"""Scores of a trained agent on one game, with training off and training state untouched."""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from agents.sb3.continual_dqn import ContinualDQN
from cl_rl.task_modulation import active_task, add_task, set_task, task_affine_layers, using_task
from cl_rl.task_source import TaskSource
from envs.atari import AtariSettings
from envs.game_env import make_game_env
from envs.scores import has_human_score, human_normalized_score

PLAY_VERSION = 3
"""Version of how ``play_game`` plays an evaluation; part of the key of cached evaluations, so a change to it that
changes scores (2: episodes side by side; 3: the first episode alone, then the rest) recomputes them."""


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

    def cut_episode(self) -> None:
        """Nothing to do: the task is fixed."""

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

    The agent meets the game as it would in training: the first episode is played alone by ``source`` (which it
    advances: pass a copy to keep the original, as ``evaluate_games`` does), so an inferred task source reports its
    previous task until its decision window closes (the detection delay) and then recognises the game. The other
    episodes run side by side, one env and one copy of that recognising source each, so every step is one forward
    over all of them rather than one per episode (a MinAtar Freeway episode is 2,500 steps: the forward was most of
    an evaluation). Giving every episode a copy of the source from *before* the game would replay the detection
    delay in each one: in MinAtar Breakout the first ball falls within those steps. Episode ``i`` has its own env
    and ε generator seeded from ``(seed, i)``, so its score does not depend on how many episodes run beside it
    (``tests/test_evaluation_play.py`` checks both).

    A task id the network does not have yet is played with fresh gains and biases on the shared weights (a copy of
    the network), as a new task would start. The active task is restored afterwards.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    seeds = [episode_seed(seed, i) for i in range(episodes)]
    scores, tasks = play_episodes(model, game, [source], settings, seeds[:1], epsilon)
    if episodes > 1:
        rest_sources = [copy.deepcopy(source) for _ in seeds[1:]]
        rest, rest_tasks = play_episodes(model, game, rest_sources, settings, seeds[1:], epsilon)
        scores, tasks = scores + rest, tasks + rest_tasks
    return GameEvaluation(game, tuple(scores), tasks.most_common(1)[0][0], model.policy.n_tasks)


def episode_seed(seed: int, episode: int) -> int:
    """The env and ε seed of episode ``episode`` of an evaluation seeded ``seed`` (independent streams per episode)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def play_episodes(
    model: ContinualDQN,
    game: str,
    sources: Sequence[TaskSource],
    settings: AtariSettings,
    seeds: Sequence[int],
    epsilon: float,
) -> tuple[list[float], Counter[int]]:
    """One episode of ``game`` per seed, each with its own task source (used as it is: copy it to keep the
    original), played in lockstep with one batched forward per step; the scores in seed order and how many steps each
    task id played."""
    if len(sources) != len(seeds):
        raise ValueError(f"one task source per episode: {len(sources)} sources for {len(seeds)} seeds")
    known = model.policy.n_tasks
    new_task_net: torch.nn.Module | None = None
    envs = [make_game_env(game, settings, seed=s) for s in seeds]
    rngs = [np.random.default_rng(s) for s in seeds]
    scores: list[float | None] = [None] * len(seeds)
    tasks: Counter[int] = Counter()
    n_actions = int(envs[0].action_space.n)  # type: ignore[attr-defined]  # Discrete
    active = active_task(model.q_net)
    current = active
    restore_active = using_task(active, model.q_net) if active >= 0 else contextlib.nullcontext()
    try:
        with torch.no_grad(), restore_active:
            observations = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
            episode_start = [True] * len(envs)
            running = list(range(len(envs)))
            while running:
                actions: dict[int, int] = {}
                greedy: dict[int, list[int]] = {}  # task id -> the running episodes that act greedily with it
                for i in running:
                    task = sources[i].observe(observations[i], game, episode_start=episode_start[i])
                    episode_start[i] = False
                    tasks[task] += 1
                    if rngs[i].random() < epsilon:
                        actions[i] = int(rngs[i].integers(n_actions))
                    else:
                        greedy.setdefault(task, []).append(i)
                for task, members in greedy.items():
                    if task < known:
                        net: torch.nn.Module = model.q_net
                        if task != current:  # set_task walks the modules: only when the task changes
                            set_task(net, task)
                            current = task
                    else:
                        if new_task_net is None:
                            new_task_net = _with_new_task(model.q_net)
                        net = new_task_net
                    batch = torch.as_tensor(np.stack([observations[i] for i in members]), device=model.device)
                    for i, action in zip(members, net(batch).argmax(dim=1).tolist(), strict=True):
                        actions[i] = action
                for i in running:
                    observations[i], _, terminated, truncated, info = envs[i].step(actions[i])
                    if "episode" in info:
                        scores[i] = float(info["episode"]["r"])
                    elif terminated or truncated:  # a life lost under terminal_on_life_loss: the game goes on
                        observations[i], _ = envs[i].reset()
                        episode_start[i] = True
                running = [i for i in running if scores[i] is None]
    finally:
        for env in envs:
            env.close()
    return [float(s) for s in scores if s is not None], tasks


def _with_new_task(q_net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``q_net`` playing a task it never had: fresh gains and biases on the shared weights."""
    net = copy.deepcopy(q_net)
    add_task(net)
    set_task(net, task_affine_layers(net)[0].n_tasks - 1)
    return net
