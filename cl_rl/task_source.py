"""Where the agent's current task id comes from.

The agent asks a ``TaskSource`` for the task of every new observation. ``OracleTaskSource`` reads the true game label
that the environment publishes for logging; the forget-me-not task-inference model (Kirkpatrick et al. 2017,
supplementary; Milan et al. 2016) plugs into the same place and infers the id from the observations alone.
Ids are consecutive integers 0, 1, 2, ... in order of creation.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TaskSource(Protocol):
    """Maps each observation of the stream to a task id."""

    @property
    def n_tasks(self) -> int:
        """How many distinct task ids this source has produced so far."""
        ...

    def observe(self, observation: np.ndarray, true_label: str | None, *, episode_start: bool = False) -> int:
        """Task id of ``observation``; ``true_label`` is the true game, which only an oracle may use.

        ``episode_start``: ``observation`` is the first of an episode (after a real reset). A game switch always
        starts an episode, so a source may change its task only there (``FlatFMN`` does).
        """
        ...

    def cut_episode(self) -> None:
        """The episode being observed stops unfinished: the next observation starts a fresh one (a resumed run)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class OracleTaskSource:
    """Task id = order of first appearance of the true game label (the EWC paper's 'oracle' condition)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    @property
    def n_tasks(self) -> int:
        return len(self.ids)

    def observe(self, observation: np.ndarray, true_label: str | None, *, episode_start: bool = False) -> int:
        if true_label is None:
            raise ValueError("the oracle task source needs the true game label in the env's info['game']")
        task = self.ids.get(true_label)
        if task is None:
            task = self.ids[true_label] = len(self.ids)
        return task

    def cut_episode(self) -> None:
        """Nothing to do: the label of every observation is known."""

    def label_of(self, task: int) -> str:
        """The game a task id stands for."""
        for label, t in self.ids.items():
            if t == task:
                return label
        raise KeyError(task)

    def state_dict(self) -> dict:
        return {"ids": dict(self.ids)}

    def load_state_dict(self, state: dict) -> None:
        self.ids = {str(k): int(v) for k, v in state["ids"].items()}
