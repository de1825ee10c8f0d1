"""Figures of a run's retention: per-game score curves, total clipped HNS, retention heatmap, run comparison.

matplotlib's object-oriented API on the Agg canvas: files only, no display, no global pyplot state. The score curves
follow the EWC paper's Fig. 4A (Kirkpatrick et al. 2017): one panel per game over the whole run, with the segments
that trained it shaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from envs.sequence import GameSequence


def _shade_segments(ax: Axes, sequence: GameSequence, game: str | None) -> None:
    """Shade the segments that trained ``game`` (all segments, alternately, if ``game`` is None)."""
    start = 0
    for k, (segment, end) in enumerate(zip(sequence.segments, sequence.ends, strict=True)):
        if (game is None and k % 2 == 0) or segment.game == game:
            ax.axvspan(start, end, color="tab:blue", alpha=0.12, lw=0)
        start = end


def score_curves(
    steps: Sequence[int],
    scores: np.ndarray,
    games: Sequence[str],
    sequence: GameSequence,
    random: Sequence[float],
    spread: tuple[np.ndarray, np.ndarray] | None = None,
    reference: Sequence[float] | None = None,
    title: str = "Score on every game over the run",
) -> Figure:
    """One panel per game: raw score against agent steps, its training segments shaded, switches dotted, random play
    dashed; optionally a band (``spread``: low and high, e.g. over seeds) and a single-task ``reference`` line."""
    fig = Figure(figsize=(7, 1.6 * len(games) + 0.8))
    axes = fig.subplots(len(games), 1, sharex=True, squeeze=False)
    for j, (ax, game) in enumerate(zip(axes[:, 0], games, strict=True)):
        _shade_segments(ax, sequence, game)
        for end in sequence.ends[:-1]:
            ax.axvline(end, color="grey", ls=":", lw=0.6)
        if spread is not None:
            ax.fill_between(steps, spread[0][:, j], spread[1][:, j], color="tab:blue", alpha=0.25, lw=0)
        ax.plot(steps, scores[:, j], marker="o", ms=3, color="tab:blue")
        ax.axhline(random[j], color="grey", ls="--", lw=0.8)
        if reference is not None:
            ax.axhline(reference[j], color="tab:green", ls="-.", lw=0.8)
        ax.set_ylabel(f"{game}\nscore", rotation=0, ha="right", va="center")  # raw episode score, mean
        ax.set_xlim(0, sequence.total_steps)
    legend = "shaded: the game is being trained; dotted: switches;\ndashed: random play"
    legend += "; dash-dot: single-task reference" if reference is not None else ""
    axes[-1, 0].set_xlabel(f"agent steps\n({legend})", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def total_clipped_curve(steps: Sequence[int], total: np.ndarray, n_games: int, sequence: GameSequence) -> Figure:
    """Σ clip(HNS, 0, 1) over the games against agent steps; the segments shaded alternately."""
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    _shade_segments(ax, sequence, None)
    ax.plot(steps, total, marker="o", ms=3, color="tab:red")
    ax.set_ylim(0, n_games)
    ax.set_xlim(0, sequence.total_steps)
    ax.set_xlabel("agent steps")
    ax.set_ylabel("total clipped HNS")
    ax.set_title(f"Total clipped human-normalised score (random 0, maximum {n_games})")
    fig.tight_layout()
    return fig


def retention_heatmap(
    matrix: np.ndarray,
    games: Sequence[str],
    sequence: GameSequence,
    label: str = "human-normalised score",
    title: str = "Retention matrix",
) -> Figure:
    """R[i, j] (score on game j after segment i, normalised as ``label`` says) as a heatmap, cells labelled."""
    rows = [f"{i}: {segment.game}" for i, segment in enumerate(sequence.segments)]
    fig = Figure(figsize=(1.2 * len(games) + 2.5, 0.45 * len(rows) + 1.5))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_xticks(range(len(games)), games, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated game")
    ax.set_ylabel("after segment (trained game)")
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(matrix):
        colour = "white" if np.isfinite(value) and value <= middle else "black"
        ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def comparison(
    curves: dict[str, list[tuple[Sequence[int], np.ndarray]]],
    aggregates: dict[str, tuple[float, float, float]],
    n_games: int,
) -> Figure:
    """Left: total clipped HNS of every run, one colour per group. Right: each group's IQM of end HNS with its CI."""
    fig = Figure(figsize=(11, 3.6))
    left, right = fig.subplots(1, 2, width_ratios=[2, 1])
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (group, runs) in enumerate(curves.items()):
        for r, (steps, total) in enumerate(runs):
            left.plot(steps, total, color=colours[k % len(colours)], alpha=0.8, label=group if r == 0 else None)
    left.set_ylim(0, n_games)
    left.set_xlabel("agent steps")
    left.set_ylabel("total clipped HNS")
    left.legend(fontsize=8)
    names = list(aggregates)
    values = np.array([aggregates[n] for n in names])
    errors = np.abs(values[:, 1:].T - values[:, 0])
    right.barh(names, values[:, 0], xerr=errors, color=[colours[k % len(colours)] for k in range(len(names))])
    right.set_xlabel("IQM of end HNS (95% CI)")
    right.set_ylabel("run group")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG."""
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def to_rgb_array(fig: Figure) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array (for a TensorBoard image)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
