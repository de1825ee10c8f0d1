"""What a finished run learnt and kept, in a few lines a person reads at a glance, and the plot behind them.

The scores are those the live evaluation logged at every segment end (``eval/<Game>/score``: the mean of
``eval.episodes`` episodes at ε = ``eval.epsilon``), read back from the run's TensorBoard file, so a resumed run is
summarised whole. Each game gets a verdict from ``cl_rl.retention.kept_fraction``, the smallest share of its gain over
random play left at any later segment end:

- kept: at least ``KEPT`` of it at every later segment end;
- partly forgotten: between ``FORGOTTEN`` and ``KEPT`` at the worst segment end;
- forgotten: less than ``FORGOTTEN`` of it left at some segment end, with a note if its revisit relearnt it.

``summarise_run`` also writes ``RUN_DIR/scores.png``: every game's score at every logged evaluation, training
segments shaded, random play dashed (``plots.score_curves``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.evaluation import plots
from agents.evaluation.retention_table import logged_scores
from agents.run.config import load_config
from agents.run.training import CONFIG_NAME, TENSORBOARD_DIR
from cl_rl.retention import kept_fraction
from envs.scores import random_score
from envs.sequence import GameSequence

KEPT = 0.75  # share of the gain over random play at every later segment end for "kept"
FORGOTTEN = 0.5  # below this share at some segment end: "forgotten"
PLOT_NAME = "scores.png"


@dataclass(frozen=True)
class GameVerdict:
    """One game's story over the run: its best score after its own segments, what it kept, and a word for it."""

    game: str
    best: float  # best score right after one of its own segments before the worst segment end (or at all)
    random: float
    end: float
    kept: float  # kept_fraction: NaN when there was nothing to keep or nothing after it
    worst_segment: int | None  # the segment after which the least was kept
    verdict: str  # kept | partly forgotten | forgotten | not learnt | trained last


def verdicts(sequence: GameSequence, retention: np.ndarray, random: Sequence[float]) -> list[GameVerdict]:
    """A ``GameVerdict`` per game of ``sequence`` from its retention matrix (raw scores after each segment)."""
    games = list(sequence.games)
    trained = [games.index(s.game) for s in sequence.segments]
    kept = kept_fraction(retention, trained, np.asarray(random, dtype=float))
    out = []
    for j, game in enumerate(games):
        own = [i for i, g in enumerate(trained) if g == j]
        worst = _worst_segment(retention[:, j], trained, j, random[j])
        before = [i for i in own if worst is None or i < worst]
        best = float(np.nanmax(retention[before, j]))
        if best <= random[j]:
            verdict = "not learnt"
        elif np.isnan(kept[j]):
            verdict = "trained last"
        elif kept[j] >= KEPT:
            verdict = "kept"
        elif kept[j] >= FORGOTTEN:
            verdict = "partly forgotten"
        else:
            verdict = "forgotten"
        out.append(GameVerdict(game, best, float(random[j]), float(retention[-1, j]), float(kept[j]), worst, verdict))
    return out


def _worst_segment(column: np.ndarray, trained: Sequence[int], j: int, random: float) -> int | None:
    """Index of the segment end where game j kept the least of its gain (None: nothing learnt before any end)."""
    best, worst, lowest = -np.inf, None, np.inf
    for t, g in enumerate(trained):
        if best > random and column[t] - random < lowest * (best - random):
            worst, lowest = t, (column[t] - random) / (best - random)
        if g == j:
            best = max(best, column[t])
    return worst


def format_summary(
    sequence: GameSequence, retention: np.ndarray, random: Sequence[float], plot: Path | None = None
) -> str:
    """The retention matrix against random play, then one line per game saying what was kept or forgotten."""
    games = list(sequence.games)
    short = [g.split("/")[-1] for g in games]
    width = max(10, *(len(s) + 2 for s in short))
    label = max(16, *(len(f"{i + 1} {s.game.split('/')[-1]}") + 2 for i, s in enumerate(sequence.segments)))
    lines = [
        "score on each game after each segment (* the game trained in that segment):",
        f"  {'after segment':<{label}}" + "".join(f"{s:>{width}}" for s in short),
    ]
    for i, (segment, row) in enumerate(zip(sequence.segments, retention, strict=True)):
        cells = "".join(
            f"{_cell(v) + ('*' if g == segment.game else ' '):>{width + 1}}" for g, v in zip(games, row, strict=True)
        )
        lines.append(f"  {f'{i + 1} ' + segment.game.split('/')[-1]:<{label}}" + cells[1:])
    lines.append(f"  {'random play':<{label}}" + "".join(f"{_cell(r) + ' ':>{width + 1}}" for r in random)[1:])
    for v, name in zip(verdicts(sequence, retention, random), short, strict=True):
        lines.append(f"  {name}: {_story(v, sequence)}")
    if plot is not None:
        lines.append(f"plot of every game's score over the run: {plot}")
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _story(v: GameVerdict, sequence: GameSequence) -> str:
    learnt = f"{_cell(v.best)} after its own segment (random {_cell(v.random)})"
    if v.verdict == "not learnt":
        return f"not learnt: {learnt}"
    if v.verdict == "trained last":
        return f"{learnt}, trained last: nothing came after it to forget"
    share = f"{max(v.kept, 0.0):.0%}"
    if v.verdict == "kept":
        kept = "all" if v.kept >= 1 else f"at least {share}"
        return f"{learnt}, KEPT: {kept} of its gain over random at every later segment end"
    assert v.worst_segment is not None, "a share below KEPT has a segment end where it was lowest"
    trained = sequence.segments[v.worst_segment].game.split("/")[-1]
    left = f"{share} of its gain left after segment {v.worst_segment + 1} ({trained})"
    word = "FORGOTTEN" if v.verdict == "forgotten" else "PARTLY FORGOTTEN"
    relearnt = "; relearnt on its revisit" if v.end - v.random >= KEPT * (v.best - v.random) else ""
    return f"{learnt}, {word}: {left}{relearnt}; {_cell(v.end)} at the end"


def segment_end_scores(sequence: GameSequence, scores: Mapping[int, Sequence[float]]) -> np.ndarray:
    """The retention matrix R[i, j] from step → scores of every game (NaN where a segment end was not evaluated)."""
    matrix = np.full((len(sequence), len(sequence.games)), np.nan)
    for i, end in enumerate(sequence.ends):
        if end in scores:
            matrix[i] = scores[end]
    return matrix


def summarise_run(run_dir: Path) -> str:
    """The summary of a run directory's logged evaluations, with ``RUN_DIR/scores.png`` written beside it."""
    config = load_config(run_dir / CONFIG_NAME)
    sequence = config.sequence.build()
    if not config.eval.enabled:
        return "no retention summary: the run's evaluation is off (eval.enabled: false)"
    logged = logged_scores(run_dir / TENSORBOARD_DIR, sequence.games)
    retention = segment_end_scores(sequence, logged)
    missing = [i + 1 for i, row in enumerate(retention) if np.isnan(row).any()]
    if missing:
        return (
            f"no retention summary: segment end(s) {missing} have no logged evaluation; "
            f"score the checkpoints with scripts/evaluate.py {run_dir}"
        )
    random = [random_score(game) for game in sequence.games]
    steps = sorted(logged)
    plot = run_dir / PLOT_NAME
    figure = plots.score_curves(steps, np.array([logged[s] for s in steps]), sequence.games, sequence, random)
    plots.save(figure, plot)
    header = (
        f"what the agent kept ({config.eval.episodes} evaluation episodes per game and segment end, "
        f"ε = {config.eval.epsilon}; raw scores):"
    )
    return header + "\n" + format_summary(sequence, retention, random, plot)
