"""ε-greedy exploration with one timer per task, and its temporally extended variant (ez-greedy).

Kirkpatrick et al. (PNAS 2017), Atari agent: the exploration rate anneals from its initial value the first time a task
is met and, on a revisit, resumes where that task's timer stopped, instead of one global schedule (which would leave
every later game almost without exploration).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class PerTaskEpsilon:
    """Linear annealing from ``initial`` to ``final`` over ``anneal_steps`` agent steps, counted per task."""

    def __init__(self, initial: float = 1.0, final: float = 0.01, anneal_steps: int = 1_000_000) -> None:
        if not 0.0 <= final <= 1.0 or not 0.0 <= initial <= 1.0:
            raise ValueError(f"epsilon values must lie in [0, 1], got initial={initial}, final={final}")
        if anneal_steps < 0:
            raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
        self.initial = float(initial)
        self.final = float(final)
        self.anneal_steps = int(anneal_steps)
        self.steps: dict[int, int] = {}

    def value(self, task: int) -> float:
        """Current ε of ``task`` (``initial`` for a task never stepped)."""
        if self.anneal_steps == 0:
            return self.final
        fraction = min(self.steps.get(task, 0) / self.anneal_steps, 1.0)
        return self.initial + fraction * (self.final - self.initial)

    def tick(self, task: int, n: int = 1) -> None:
        """Advance ``task``'s timer by ``n`` agent steps."""
        self.steps[task] = self.steps.get(task, 0) + n

    def state_dict(self) -> dict:
        return {
            "initial": self.initial,
            "final": self.final,
            "anneal_steps": self.anneal_steps,
            "steps": dict(self.steps),
        }

    def load_state_dict(self, state: dict) -> None:
        self.initial, self.final = float(state["initial"]), float(state["final"])
        self.anneal_steps = int(state["anneal_steps"])
        self.steps = {int(k): int(v) for k, v in state["steps"].items()}


class TemporallyExtendedExploration:
    """ez-greedy (Dabney, Ostrovski & Barreto, "Temporally-extended ε-greedy exploration", ICLR 2021).

    ε-greedy whose exploratory action is *repeated*: an env that is not already exploring explores with probability
    ε, then draws an action uniformly and a duration n ~ zeta(μ) (P(n) ∝ n^−μ; the paper's μ = 2), and takes that
    action for n agent steps in all, the step of the draw included (n ≥ 1: a hold of 1 is plain ε-greedy's draw).
    Plain ε-greedy is a random walk, which in a game such as Freeway (27 steps "up" with no car, random play ~0.2
    crossings per episode) almost never reaches a reward; a heavy-tailed repeat gets there.

    State per env (the action held and the steps left); a hold ends early at the env's episode end, when the task
    switches and when a resumed run starts fresh episodes. Draws come from ``np.random`` and the action space's own
    generator, as SB3's ε-greedy does, so that a checkpoint's RNG state (``agents.run.rng``) restores them; the holds
    are saved with the agent.
    """

    def __init__(self, mu: float = 2.0, max_duration: int = 10_000) -> None:
        if mu <= 1.0:
            raise ValueError(f"the zeta exponent mu must be > 1, got {mu}")
        if max_duration < 1:
            raise ValueError(f"max_duration must be >= 1, got {max_duration}")
        self.mu = float(mu)
        self.max_duration = int(max_duration)
        self.action = np.zeros(0, dtype=np.int64)  # the action each env holds
        self.left = np.zeros(0, dtype=np.int64)  # steps it still holds it for (0: not exploring)

    def choose(
        self, epsilon: float, n_envs: int, sample_action: Callable[[], int], greedy: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """This step's actions: each env's held action, or a new hold with probability ε, else ``greedy``'s.

        ``greedy(envs)`` gives the greedy actions of the envs indexed by ``envs``; it is called only when some env
        acts greedily (no forward pass while every env explores).
        """
        if len(self.left) != n_envs:
            self.reset(n_envs)
        free = self.left == 0
        for i in np.flatnonzero(free):
            if np.random.rand() < epsilon:
                self.action[i] = sample_action()
                self.left[i] = min(int(np.random.zipf(self.mu)), self.max_duration)
        actions = self.action.copy()
        greedy_envs = np.flatnonzero(self.left == 0)
        if len(greedy_envs):
            actions[greedy_envs] = greedy(greedy_envs)
        self.left[self.left > 0] -= 1
        return actions

    def end_holds(self, envs: np.ndarray | None = None) -> None:
        """Stop the holds of ``envs`` (all when None): at an episode's end or a task switch."""
        if envs is None:
            self.left[:] = 0
        else:
            self.left[envs] = 0

    def reset(self, n_envs: int) -> None:
        self.action = np.zeros(n_envs, dtype=np.int64)
        self.left = np.zeros(n_envs, dtype=np.int64)
