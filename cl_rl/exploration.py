"""ε-greedy exploration with one timer per task.

Kirkpatrick et al. (PNAS 2017), Atari agent: the exploration rate anneals from its initial value the first time a task
is met and, on a revisit, resumes where that task's timer stopped, instead of one global schedule (which would leave
every later game almost without exploration).
"""

from __future__ import annotations


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
