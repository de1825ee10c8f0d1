"""Scores of a trained agent on one game, with training off and training state untouched."""

from __future__ import annotations

import numpy as np
import torch

from agents.continual_dqn import ContinualDQN
from envs.atari import AtariSettings, make_atari_env


def evaluate_game(
    model: ContinualDQN,
    game: str,
    task: int,
    settings: AtariSettings,
    episodes: int = 3,
    epsilon: float = 0.05,
    seed: int = 0,
) -> list[float]:
    """Raw scores of ``episodes`` full games of ``game`` played ε-greedily with ``task``'s gains and biases.

    Uses its own env and random generator, and restores the agent's active task, so training is not disturbed.
    """
    env = make_atari_env(game, settings, seed=seed)
    rng = np.random.default_rng(seed)
    scores: list[float] = []
    try:
        with model.policy.using_task(task):
            obs, _ = env.reset(seed=seed)
            while len(scores) < episodes:
                if rng.random() < epsilon:
                    action = int(rng.integers(env.action_space.n))
                else:
                    with torch.no_grad():
                        q = model.q_net(torch.as_tensor(obs, device=model.device).unsqueeze(0))
                    action = int(q.argmax())
                obs, _, terminated, truncated, info = env.step(action)
                if "episode" in info:
                    scores.append(float(info["episode"]["r"]))
                if terminated or truncated:
                    obs, _ = env.reset()
    finally:
        env.close()
    return scores
