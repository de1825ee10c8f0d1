"""How well inferred task ids match the true games: adjusted Rand index and switch-detection delays.

Only loggers and benchmarks use these (they know the true game); the agent never does.
- The adjusted Rand index (Hubert & Arabie 1985) of two labellings of the same steps is 1 for identical partitions
  (up to renaming the ids) and 0 in expectation for independent ones:
      ARI = (Σ_ij C(n_ij, 2) − E) / (½ [Σ_i C(a_i, 2) + Σ_j C(b_j, 2)] − E),   E = Σ_i C(a_i, 2) Σ_j C(b_j, 2) / C(n, 2)
  with n_ij the contingency table and a, b its row and column sums. ``TaskAgreement`` keeps the table online.
- ``SwitchDetector`` times each true switch (the game changes) to the first change of the inferred id after it, and
  counts inferred changes that follow no true switch as spurious.
- ``game_task_summary`` says how many tasks were created for how many games, and how many games were merged (their
  steps went mostly to a task that is also another game's main task).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np


def _pairs(x: np.ndarray) -> float:
    return float((x * (x - 1) / 2).sum())


def ari_from_contingency(table: np.ndarray) -> float:
    """Adjusted Rand index of a contingency table (rows: true classes, columns: predicted clusters)."""
    table = np.asarray(table, dtype=np.float64)
    n = table.sum()
    if n < 2:
        return 1.0
    index = _pairs(table)
    rows, cols = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0))
    expected = rows * cols / (n * (n - 1) / 2)
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial (one cluster each, or all singletons): they agree
        return 1.0
    return (index - expected) / (maximum - expected)


def adjusted_rand_index(true: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """ARI of two labellings of the same items."""
    if len(true) != len(predicted):
        raise ValueError(f"labellings differ in length: {len(true)} true vs {len(predicted)} predicted")
    agreement = TaskAgreement()
    for t, p in zip(true, predicted, strict=True):
        agreement.update(t, p)
    return agreement.ari()


class TaskAgreement:
    """Online contingency table of (true game, inferred task) pairs; ``ari()`` at any time."""

    def __init__(self) -> None:
        self.counts: dict[tuple[Hashable, Hashable], int] = defaultdict(int)

    def update(self, true: Hashable, predicted: Hashable, n: int = 1) -> None:
        self.counts[(true, predicted)] += n

    def table(self) -> np.ndarray:
        rows = {t: i for i, t in enumerate(dict.fromkeys(t for t, _ in self.counts))}
        cols = {p: j for j, p in enumerate(dict.fromkeys(p for _, p in self.counts))}
        table = np.zeros((len(rows), len(cols)))
        for (t, p), c in self.counts.items():
            table[rows[t], cols[p]] = c
        return table

    def ari(self) -> float:
        return ari_from_contingency(self.table()) if self.counts else 1.0


class GameTaskSummary(NamedTuple):
    games: int  # distinct true games
    tasks: int  # distinct inferred tasks
    merged_games: int  # games whose main task (the one most of their steps went to) is another game's main task too


def game_task_summary(agreement: TaskAgreement) -> GameTaskSummary:
    """Tasks created for how many games, and merged games, from the (game, task) contingency table."""
    table = agreement.table()
    if table.size == 0:
        return GameTaskSummary(0, 0, 0)
    main = table.argmax(axis=1)
    shared = np.bincount(main, minlength=table.shape[1])[main] > 1
    return GameTaskSummary(table.shape[0], table.shape[1], int(shared.sum()))


class SwitchDetector:
    """Delays from true switches to their detection, and spurious inferred switches, over a stream of steps."""

    def __init__(self) -> None:
        self.step = 0
        self.last_true: Hashable | None = None
        self.last_inferred: Hashable | None = None
        self.pending_since: int | None = None
        self.switches = 0
        self.delays: list[int] = []
        self.spurious = 0

    def update(self, true: Hashable, inferred: Hashable) -> int | None:
        """Record one step; returns the delay (in steps) when this step detects a pending true switch."""
        detected = None
        if self.last_true is not None and true != self.last_true:
            self.switches += 1
            self.pending_since = self.step
        if self.last_inferred is not None and inferred != self.last_inferred:
            if self.pending_since is None:
                self.spurious += 1
            else:
                detected = self.step - self.pending_since
                self.delays.append(detected)
                self.pending_since = None
        self.last_true, self.last_inferred = true, inferred
        self.step += 1
        return detected

    @property
    def detected(self) -> int:
        return len(self.delays)
