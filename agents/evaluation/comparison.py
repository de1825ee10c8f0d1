"""Train A → B once per consolidation method, same seed, and measure how much each protects A.

Drift of Q on A's states: the root-mean-square change of Q(s, ·; task A) over a fixed set of A's states (taken from A's
replay buffer when A's segment ends) between the end of A and the end of B. Scores: ε-greedy raw scores on A after A,
and on A and B after B.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from agents.evaluation.play import evaluate_game
from agents.run.config import Config
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import ContinualDQN
from agents.sb3.frame_replay_buffer import FrameStackReplayBuffer
from envs.sequence import GameSequence, Segment


@dataclass
class MethodResult:
    method: str
    q_drift_a: float
    score_a_after_a: float
    score_a_after_b: float
    score_b_after_b: float
    seconds: float


class _ProbeAtSwitch(BaseCallback):
    """At the last step of A: fixes a probe set of A's states and records Q on it (and A's score if asked)."""

    model: ContinualDQN

    def __init__(self, step: int, n_states: int, evaluate) -> None:
        super().__init__()
        self.step, self.n_states, self.evaluate = step, n_states, evaluate
        self.states: torch.Tensor | None = None
        self.q_before: torch.Tensor | None = None
        self.score_a = float("nan")

    def _on_step(self) -> bool:
        if self.num_timesteps == self.step:
            buffer = self.model.replay_buffer.buffer(0)
            idx = np.linspace(0, buffer.size() - 1, self.n_states).astype(int)
            self.states = stored_observations(buffer, idx).to(self.model.device)
            self.q_before = q_on(self.model, self.states, task=0)
            self.score_a = self.evaluate(self.model)
        return True


def stored_observations(buffer: ReplayBuffer, positions: np.ndarray) -> torch.Tensor:
    """Observations of the ``positions``-th oldest transitions held by an SB3 or a frame-once buffer."""
    if isinstance(buffer, FrameStackReplayBuffer):
        return buffer.memory.get(buffer.memory.tail + positions).observations
    return torch.as_tensor(buffer.observations[positions, 0])


def q_on(model: ContinualDQN, states: torch.Tensor, task: int) -> torch.Tensor:
    with torch.no_grad():
        return model.q_values(states, task)


def compare(
    base: Config,
    game_a: str,
    game_b: str,
    steps_a: int,
    steps_b: int,
    methods: list[str],
    eval_episodes: int = 2,
    probe_states: int = 256,
    log_dir: str | None = None,
) -> list[MethodResult]:
    results = []
    for method in methods:
        config = copy.deepcopy(base)
        config.task.source = "oracle"  # A is task 0 and B task 1 exactly: the comparison isolates the protection
        config.method.name = method
        sequence = GameSequence((Segment(game_a, steps_a), Segment(game_b, steps_b)))
        stream, env = make_stream(config, sequence)
        model = make_agent(config, env)
        model.set_logger(configure(f"{log_dir}/{method}" if log_dir else None, ["tensorboard"] if log_dir else [""]))

        def score(m: ContinualDQN, game: str, task: int, config: Config = config) -> float:
            if eval_episodes == 0:
                return float("nan")
            return float(np.mean(evaluate_game(m, game, task, config.env, eval_episodes, seed=config.run.seed)))

        probe = _ProbeAtSwitch(steps_a, probe_states, lambda m, score=score: score(m, game_a, 0))
        start = time.perf_counter()
        model.learn(sequence.total_steps, callback=probe)
        seconds = time.perf_counter() - start
        assert probe.states is not None and probe.q_before is not None
        drift = float((q_on(model, probe.states, task=0) - probe.q_before).square().mean().sqrt())
        results.append(
            MethodResult(method, drift, probe.score_a, score(model, game_a, 0), score(model, game_b, 1), seconds)
        )
        stream.close()
    return results
