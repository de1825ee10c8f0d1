"""Choosing each method's strength from a sweep (configs/sweeps/minatar_strengths.yaml, minatar_memory.yaml) for the
retention table, by a criterion fixed before the sweep runs.

Criterion of a method at one value of its strength: ½ · (final + 1 − worst drop), with ``final`` and ``worst drop``
the means over the sweep's seeds × games of the retention table's metrics (``cl_rl.retention``) on
reference-normalised scores (0 random play, 1 the single-task reference of the table). It weighs ending well and
never losing much equally; both are 1 for an agent that ends at the reference and never drops. A game without a
scale (reference not above random) is left out. The highest criterion wins; a tie goes to the smaller value
(``read_candidates`` lists each method's values in increasing order).

The chosen values go into a YAML file, method → {config key: value} (``bench_retention.py --tuned``), applied to that
method's rows only: memory per task is ``agent.buffer_size``, a setting every method has.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.evaluation.retention_table import TableError, read_run, run_metrics
from agents.run.config import ConfigError, flatten_settings, load_config
from agents.run.sweep import run_state
from agents.run.training import CONFIG_NAME
from cl_rl.retention import normalize
from envs.scores import random_score

STRENGTH_KEYS = {  # method → the config key of its strength
    "ewc": "method.ewc.lam",
    "online_ewc": "method.online_ewc.lam",
    "mas": "method.mas.lam",
    "lwf": "method.lwf.alpha",
    "generative_replay": "method.generative_replay.alpha",
    "vcl": "method.vcl.kl_weight",
    "agem": "agent.buffer_size",  # memory per task: each earlier task's replay buffer
    "gem": "agent.buffer_size",
    "rehearsal": "agent.buffer_size",
}


@dataclass
class Candidate:
    """One method at one value of its strength, over the sweep's seeds."""

    method: str
    key: str
    value: Any
    runs: list[str] = field(default_factory=list)
    final: list[float] = field(default_factory=list)  # per seed: mean over games
    worst_drop: list[float] = field(default_factory=list)

    @property
    def criterion(self) -> float:
        return 0.5 * (float(np.mean(self.final)) + 1.0 - float(np.mean(self.worst_drop)))


def read_references(table_dir: Path) -> dict[str, float]:
    """Each game's single-task reference (mean of seeds) from a retention table's ``references.csv``."""
    path = Path(table_dir) / "references.csv"
    if not path.is_file():
        raise TableError(
            f"{path} does not exist: train the table's references first "
            "(python scripts/bench_retention.py PRESET --methods finetune --out TABLE_DIR)"
        )
    with path.open() as f:
        return {row["game"]: float(row["reference_mean"]) for row in csv.DictReader(f)}


def read_candidates(sweep_dirs: Sequence[Path], reference: Mapping[str, float]) -> list[Candidate]:
    """Every finished sweep run of a method of ``STRENGTH_KEYS``, grouped by method and strength, in sweep order.

    Raises ``TableError`` when a run has not finished or a game has no reference."""
    found: dict[tuple[str, str], Candidate] = {}
    unfinished = []
    for sweep_dir in sweep_dirs:
        runs = sorted(p.parent for p in Path(sweep_dir).glob(f"*/{CONFIG_NAME}"))
        if not runs:
            raise TableError(f"{sweep_dir} holds no sweep runs: run python scripts/sweep.py SWEEP.yaml first")
        for run_dir in runs:
            try:
                config = load_config(run_dir / CONFIG_NAME)
            except ConfigError as err:
                raise TableError(f"{run_dir / CONFIG_NAME} cannot be read ({err})") from err
            method = config.method.name
            if method not in STRENGTH_KEYS:
                continue
            if run_state(run_dir, config.sequence.build().total_steps) != "done":
                unfinished.append(str(run_dir))
                continue
            key = STRENGTH_KEYS[method]
            value = flatten_settings(config.to_dict())[key]
            candidate = found.setdefault((method, repr(value)), Candidate(method, key, value))
            final, drop = _run_means(run_dir, reference)
            candidate.runs.append(run_dir.name)
            candidate.final.append(final)
            candidate.worst_drop.append(drop)
    if unfinished:
        raise TableError(
            f"{len(unfinished)} sweep run(s) not finished ({', '.join(unfinished[:3])}); launch the sweep again to "
            "finish them"
        )
    return sorted(found.values(), key=lambda c: (list(STRENGTH_KEYS).index(c.method), _order(c.value)))


def _order(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.inf


def _run_means(run_dir: Path, reference: Mapping[str, float]) -> tuple[float, float]:
    """One run's final score and worst drop, each the mean over games with a scale."""
    run = read_run(run_dir)
    missing = [g for g in run.games if g not in reference]
    if missing:
        raise TableError(f"no single-task reference for {', '.join(missing)} (the sweep's games) in --references")
    random = np.array([random_score(g) for g in run.games])
    ref = np.array([reference[g] for g in run.games])
    metrics = run_metrics(normalize(run.retention(), random, ref), run.trained)
    scaled = ref > random
    if not scaled.any():
        raise TableError("no game's reference is above random play: the references cannot normalise the sweep")
    final, drop = metrics["final"][scaled], metrics["worst_drop"][scaled]
    if not np.isfinite(drop).any():
        raise TableError(f"{run_dir}: no game has a segment end after its own: the sweep's sequence must revisit")
    return float(np.nanmean(final)), float(np.nanmean(drop))


def choose(candidates: Sequence[Candidate]) -> dict[str, Candidate]:
    """Per method, the candidate with the highest criterion (the first listed, the smaller value, on a tie)."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.method not in best or candidate.criterion > best[candidate.method].criterion:
            best[candidate.method] = candidate
    return best


def tuned_settings(chosen: Mapping[str, Candidate]) -> dict[str, dict[str, Any]]:
    """method → {config key: chosen value}: the file ``bench_retention.py --tuned`` reads."""
    return {method: {c.key: c.value} for method, c in chosen.items()}


def read_tuned(path: Path) -> dict[str, dict[str, Any]]:
    """A ``--tuned`` file: method → {config key: value}; ``TableError`` names what is wrong."""
    if not Path(path).is_file():
        raise TableError(f"--tuned {str(path)!r} does not exist; write it with scripts/select_strengths.py")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise TableError(f"--tuned {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise TableError(f"--tuned {str(path)!r} must map each method to {{config key: value}}, got {data!r}")
    return {str(m): {str(k): v for k, v in settings.items()} for m, settings in data.items()}


def format_selection(candidates: Sequence[Candidate], chosen: Mapping[str, Candidate]) -> str:
    """The sweep's results as Markdown: every candidate's means and criterion, the chosen ones marked."""
    lines = [
        "| method | setting | value | seeds | final | worst drop | criterion | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in candidates:
        mark = "✓" if chosen.get(c.method) is c else ""
        lines.append(
            f"| {c.method} | {c.key} | {c.value:g} | {len(c.runs)} | {np.mean(c.final):.2f} | "
            f"{np.mean(c.worst_drop):.2f} | {c.criterion:.3f} | {mark} |"
        )
    return "\n".join(lines) + "\n"
