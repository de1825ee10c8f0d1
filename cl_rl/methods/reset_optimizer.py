"""Optimiser-state reset at task switches (Asadi et al. 2023, "Resetting the optimizer in deep RL: an empirical
study").

Adam's moment estimates m_t, v_t (and step count t) carry the statistics of the gradients of the task just left into
the first updates of the next one; Asadi et al. reset them whenever the target changes. Here the whole state is
cleared at every task switch, so that the first update on the new task is Adam's first step again:

    m ← 0,  v ← 0,  t ← 0   (``optimizer.state`` emptied; Adam re-creates it at the parameter's next step).
"""

from __future__ import annotations

from dataclasses import dataclass

from cl_rl.methods.base import AgentPort, ContinualMethod, Stats


@dataclass
class ResetOptimizerConfig:
    """Settings of the optimiser reset: none, the reset is all there is."""


class ResetOptimizer(ContinualMethod):
    """Empties the optimiser's per-parameter state at every task switch."""

    def __init__(self, name: str, config: ResetOptimizerConfig, agent: AgentPort) -> None:
        self.name, self.config, self.agent = name, config, agent

    def on_task_switch(self, left_task: int, entered_task: int) -> Stats:
        cleared = len(self.agent.optimizer.state)
        self.agent.optimizer.state.clear()
        return {"cleared_parameters": float(cleared)}
