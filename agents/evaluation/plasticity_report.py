"""The plasticity diagnostics of several runs side by side: a figure over the whole run and a summary table.

Reads the ``plasticity/…`` scalars that ``agents.run.plasticity.PlasticityCallback`` logs (the cadence's points, and
the task-switch points) from each run's TensorBoard directory. The figure has one panel per diagnostic, one line per
run, the segments shaded alternately; the table gives each run's value at the end and its mean over the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation.plots import _shade_segments
from agents.run.config import load_config
from agents.run.training import CONFIG_NAME, TENSORBOARD_DIR
from envs.sequence import GameSequence

PANELS = {  # tag under plasticity/ → panel title
    "dormant": "τ-dormant units (fraction)",
    "effective_rank": "effective rank of features (δ = 0.01)",
    "stable_rank": "stable rank of features",
    "feature_norm": "feature norm",
    "weight_norm": "weight norm (shared)",
    "distance": "distance from the task's start",
    "grad_norm": "TD gradient norm (probe)",
    "churn": "policy churn per update (own probe)",
}


@dataclass
class RunDiagnostics:
    label: str
    sequence: GameSequence
    series: dict[str, tuple[np.ndarray, np.ndarray]]  # tag → (steps, values), in step order

    def last(self, tag: str) -> float:
        return float(self.series[tag][1][-1]) if tag in self.series else float("nan")

    def mean(self, tag: str) -> float:
        return float(np.mean(self.series[tag][1])) if tag in self.series else float("nan")


def read_diagnostics(run_dir: Path, label: str | None = None) -> RunDiagnostics:
    """Every ``plasticity/<tag>`` scalar of ``PANELS`` logged by the run in ``run_dir``."""
    accumulator = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    series = {}
    for tag in PANELS:
        if f"plasticity/{tag}" in tags:
            events = sorted(accumulator.Scalars(f"plasticity/{tag}"), key=lambda e: (e.step, e.wall_time))
            series[tag] = (np.array([e.step for e in events]), np.array([e.value for e in events]))
    sequence = load_config(run_dir / CONFIG_NAME).sequence.build()
    return RunDiagnostics(label or run_dir.name, sequence, series)


def diagnostics_figure(runs: Sequence[RunDiagnostics], title: str = "Plasticity diagnostics over the run") -> Figure:
    """One panel per diagnostic, one line per run; the first run's segments shaded alternately."""
    fig = Figure(figsize=(13, 9.5), layout="constrained")
    axes = fig.subplots(4, 2, sharex=True).ravel()
    for ax, (tag, name) in zip(axes, PANELS.items(), strict=True):
        _shade_segments(ax, runs[0].sequence, None)
        for run in runs:
            if tag in run.series:
                ax.plot(*run.series[tag], lw=1.2, label=run.label)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-2:]:
        ax.set_xlabel("agent step")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 7), fontsize=9)
    fig.suptitle(title)
    return fig


def summary_markdown(runs: Sequence[RunDiagnostics]) -> str:
    """Per run: each diagnostic at the end of the run and (in brackets) its mean over the run."""
    lines = ["| run | " + " | ".join(PANELS) + " |", "|---" * (1 + len(PANELS)) + "|"]
    for run in runs:
        cells = [f"{run.last(tag):.3g} ({run.mean(tag):.3g})" for tag in PANELS]
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
