"""The hook through which consolidation terms enter the agent's loss.

A continual agent minimises  L(θ) = L_TD(θ) + Σ_r R_r(θ; t)  while training task t, where each regulariser R_r
protects earlier tasks: EWC's quadratic penalty (Kirkpatrick et al. 2017, eq. 3), online EWC (Schwarz et al. 2018,
eq. 9), MAS (Aljundi et al. 2018), or a distillation term of generative replay. The agent calls ``penalty`` in every
update and ``on_task_switch`` whenever the current task id changes; everything else is the regulariser's business.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Regularizer(Protocol):
    """A loss term that depends on the current task id."""

    name: str

    def penalty(self, current_task: int) -> dict[str, torch.Tensor]:
        """The named terms to add to the loss while training ``current_task`` (empty when none is active)."""
        ...

    def on_task_switch(self, left_task: int, entered_task: int) -> dict[str, float | torch.Tensor]:
        """Consolidate what was learnt on ``left_task``; returns statistics to log (tensors become histograms)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def total_penalty(
    regularizers: Iterable[Regularizer], current_task: int
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Sum of all active terms, and each term detached under ``<regularizer>/<term>`` for logging."""
    total: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = {}
    for reg in regularizers:
        for key, term in reg.penalty(current_task).items():
            terms[f"{reg.name}/{key}"] = term.detach()
            total = term if total is None else total + term
    return total, terms
