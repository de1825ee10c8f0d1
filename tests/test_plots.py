"""Every plot of agents/evaluation/plots.py labels its y axis with what it shows."""

from __future__ import annotations

import numpy as np

from agents.evaluation import plots
from envs.sequence import GameSequence, Segment

SEQUENCE = GameSequence([Segment("Pong", 100), Segment("Breakout", 100), Segment("Pong", 100)])
GAMES = ["Pong", "Breakout"]
STEPS = [100, 200, 300]


def _ylabels(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_score_curves_label_each_panel_with_its_game_and_score():
    fig = plots.score_curves(STEPS, np.zeros((3, 2)), GAMES, SEQUENCE, random=[-20.7, 1.7])
    assert _ylabels(fig) == ["Pong\nscore", "Breakout\nscore"]


def test_every_other_plot_has_a_y_label():
    figures = [
        plots.total_clipped_curve(STEPS, np.array([0.1, 0.5, 0.7]), 2, SEQUENCE),
        plots.retention_heatmap(np.full((3, 2), 0.5), GAMES, SEQUENCE),
        plots.comparison({"ewc": [(STEPS, np.array([0.1, 0.2, 0.3]))]}, {"ewc": (0.5, 0.4, 0.6)}, 2),
    ]
    for fig in figures:
        labels = _ylabels(fig)
        assert labels and all(labels), labels
