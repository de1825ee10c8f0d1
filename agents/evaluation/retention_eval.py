"""Retention of a run measured from its checkpoints: retention matrix, metrics, plots, TensorBoard image.

Every chosen checkpoint of ``RUN_DIR/checkpoints`` is loaded and every game of the run's sequence is played with
training off by ``periodic_evaluation.evaluate_games`` (same seeds as the live evaluation, so a segment-end row
repeats what training logged under ``eval/`` with the same settings). The rows of the retention matrix are the
segment-end checkpoints; its metrics are those of ``cl_rl.retention``, taken on human-normalised scores. Written to
``RUN_DIR/eval/``:

    retention.csv, retention_hns.csv   R[i, j]: raw score / HNS on game j after segment i
    retention.json                     both matrices, the segments, every evaluated checkpoint, the settings
    curves.csv                         raw score of every game at every evaluated checkpoint
    metrics.json                       end mean HNS, total clipped HNS, forgetting, backward and forward transfer
    scores.png, total_clipped_hns.png, retention.png
    cache/step_<step>.json             one checkpoint's results, reused while the settings and checkpoint are the same

and the ``eval/`` scalars of each checkpoint with the heatmap as an image in TensorBoard (``RUN_DIR/tb/eval``).
Several runs are compared by ``compare_runs``: runs with the same ``run.name`` form a group (seeds of one method),
aggregated with rliable's IQM and stratified-bootstrap confidence intervals.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.evaluation import plots
from agents.evaluation.periodic_evaluation import TaskMode, evaluate_games
from agents.evaluation.play import PLAY_VERSION, GameEvaluation
from agents.evaluation.result_files import write_csv, write_json
from agents.run.checkpoints import list_checkpoints
from agents.run.config import Config, load_config
from agents.run.training import CHECKPOINT_DIR, CONFIG_NAME, TENSORBOARD_DIR
from agents.sb3.continual_dqn import ContinualDQN
from cl_rl.retention import (
    backward_transfer,
    final_average,
    forgetting,
    forward_transfer,
    reference_transfer,
    stratified_bootstrap,
    total_clipped,
)
from envs.scores import has_human_score, random_score
from envs.sequence import GameSequence

EVAL_DIR = "eval"


class EvaluationError(ValueError):
    """A run directory or a choice of checkpoints that cannot be evaluated; the message names the fix."""


@dataclass(frozen=True)
class EvalSettings:
    """How each game is played at each checkpoint (the defaults of the ``eval`` config section)."""

    episodes: int = 3
    epsilon: float = 0.05
    task_source: TaskMode = "configured"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise EvaluationError(f"--episodes must be >= 1, got {self.episodes}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise EvaluationError(f"--epsilon must lie in [0, 1], got {self.epsilon}")
        if self.task_source not in ("configured", "oracle"):
            raise EvaluationError(f"--task-source must be 'configured' or 'oracle', got {self.task_source!r}")


@dataclass
class RunEvaluation:
    """Mean raw score, HNS and playing task of every game (columns) at every evaluated checkpoint (rows)."""

    run_dir: Path
    config: Config
    sequence: GameSequence
    settings: EvalSettings
    steps: list[int]
    scores: np.ndarray
    hns: np.ndarray
    tasks: np.ndarray

    @property
    def games(self) -> list[str]:
        return list(self.sequence.games)

    @property
    def has_hns(self) -> bool:
        """Whether the games have human scores (ALE games). MinAtar games have none: their HNS are NaN, and the
        matrix, heatmap and text summary show raw scores instead."""
        return all(has_human_score(game) for game in self.games)

    @property
    def trained(self) -> list[int]:
        """Column of the game trained in each segment."""
        return [self.games.index(segment.game) for segment in self.sequence.segments]

    def retention(self, values: np.ndarray) -> np.ndarray:
        """Rows of ``values`` at the segment ends (NaN where that checkpoint was not evaluated)."""
        matrix = np.full((len(self.sequence), len(self.games)), np.nan)
        for i, end in enumerate(self.sequence.ends):
            if end in self.steps:
                matrix[i] = values[self.steps.index(end)]
        return matrix

    def metrics(self, reference_hns: dict[str, float] | None = None) -> dict[str, Any]:
        """The retention metrics of ``cl_rl.retention`` on the HNS matrix (forgetting also in raw score)."""
        hns, trained, games = self.retention(self.hns), self.trained, self.games
        bwt, bwt_games = backward_transfer(hns, trained)
        fwt, fwt_games = forward_transfer(hns, trained, np.zeros(len(games)))  # random play has HNS 0
        forget = forgetting(hns, trained)
        out: dict[str, Any] = {
            "games": games,
            "complete": bool(np.isfinite(hns).all()),
            "end_mean_hns": final_average(hns),
            "end_total_clipped_hns": total_clipped(hns[-1]),
            "max_total_clipped_hns": len(games),
            "mean_forgetting_hns": float(np.nanmean(forget)) if np.isfinite(forget).any() else math.nan,
            "forgetting_hns": dict(zip(games, forget.tolist(), strict=True)),
            "forgetting_score": dict(
                zip(games, forgetting(self.retention(self.scores), trained).tolist(), strict=True)
            ),
            "backward_transfer_hns": bwt,
            "backward_transfer_per_game_hns": dict(zip(games, bwt_games.tolist(), strict=True)),
            "forward_transfer_hns": fwt,
            "forward_transfer_per_game_hns": dict(zip(games, fwt_games.tolist(), strict=True)),
        }
        if reference_hns:
            reference = np.array([reference_hns.get(game, math.nan) for game in games])
            ref, ref_games = reference_transfer(hns, trained, reference)
            out["forward_transfer_reference_hns"] = ref
            out["forward_transfer_reference_per_game_hns"] = dict(zip(games, ref_games.tolist(), strict=True))
        return out


# --- evaluating ---------------------------------------------------------------------------------------------------
def load_run(run_dir: Path) -> tuple[Config, list[tuple[int, Path]]]:
    """The run's config and its checkpoints, oldest first; ``EvaluationError`` if it is not an evaluable run."""
    if not run_dir.is_dir():
        raise EvaluationError(f"run directory {str(run_dir)!r} does not exist; give a directory of scripts/train.py")
    if not (run_dir / CONFIG_NAME).is_file():
        raise EvaluationError(f"{str(run_dir)!r} holds no {CONFIG_NAME}: it is not a run directory of scripts/train.py")
    checkpoints = list_checkpoints(run_dir / CHECKPOINT_DIR)
    if not checkpoints:
        raise EvaluationError(
            f"{str(run_dir)!r} holds no checkpoint in {CHECKPOINT_DIR}/ yet; train it first (checkpoints are written "
            "at every segment end)"
        )
    return load_config(run_dir / CONFIG_NAME), checkpoints


def select_checkpoints(
    available: list[tuple[int, Path]], sequence: GameSequence, choice: str = "all"
) -> list[tuple[int, Path]]:
    """``all``, ``segments`` (segment ends only), ``last``, or agent steps separated by commas (``200,350``)."""
    if choice == "all":
        return available
    if choice == "last":
        return available[-1:]
    if choice == "segments":
        chosen = [(step, path) for step, path in available if step in sequence.ends]
    else:
        by_step = dict(available)
        try:
            steps = [int(part) for part in choice.split(",") if part.strip()]
        except ValueError:
            raise EvaluationError(
                f"--checkpoints {choice!r}: give all, segments, last, or agent steps such as 200,350"
            ) from None
        missing = [step for step in steps if step not in by_step]
        if missing:
            raise EvaluationError(
                f"--checkpoints: no checkpoint at step(s) {missing}; available: {', '.join(map(str, by_step))}"
            )
        chosen = [(step, by_step[step]) for step in sorted(set(steps))]
    if not chosen:
        raise EvaluationError(f"--checkpoints {choice!r} selects none of the checkpoints {[s for s, _ in available]}")
    return chosen


def evaluate_checkpoint(
    path: Path,
    config: Config,
    settings: EvalSettings,
    cache: Path | None = None,
    on_game: Callable[[GameEvaluation], None] | None = None,
) -> list[GameEvaluation]:
    """Load one checkpoint (without its env or replay) and score every game of the run's sequence."""
    games = list(config.sequence.build().games)
    stat = path.stat()
    key = {
        **dataclasses.asdict(settings),
        "env": dataclasses.asdict(config.env),
        "games": games,
        "checkpoint": [stat.st_size, stat.st_mtime_ns],
        "play": PLAY_VERSION,
    }
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["key"] == key:
            results = [
                GameEvaluation(r["game"], tuple(r["scores"]), r["task"], r["known_tasks"]) for r in stored["results"]
            ]
            for result in results:
                if on_game is not None:
                    on_game(result)
            return results
    model = ContinualDQN.load(path, env=None, device=config.run.device)
    results = evaluate_games(
        model, games, config.env, settings.episodes, settings.epsilon, settings.task_source, settings.seed, on_game
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "results": [dataclasses.asdict(r) for r in results]}))
    return results


def evaluate_run(
    run_dir: Path, checkpoints: str = "all", overrides: Mapping[str, Any] | None = None, progress: bool = True
) -> RunEvaluation:
    """Score every game at each chosen checkpoint of ``run_dir``, with a progress bar over checkpoints × games.

    The settings are the run's ``eval`` section (as the live evaluation used), with ``overrides`` of its fields.
    """
    config, available = load_run(run_dir)
    e = config.eval
    settings = EvalSettings(e.episodes, e.epsilon, e.task_source, e.seed)
    settings = dataclasses.replace(settings, **{k: v for k, v in (overrides or {}).items() if v is not None})
    sequence = config.sequence.build()
    chosen = select_checkpoints(available, sequence, checkpoints)
    rows: list[list[GameEvaluation]] = []
    with tqdm(total=len(chosen) * len(sequence.games), desc=run_dir.name, unit="game", disable=not progress) as bar:
        for step, path in chosen:
            bar.set_postfix_str(f"step {step}")
            cache = run_dir / EVAL_DIR / "cache" / f"step_{step:010d}.json"
            rows.append(evaluate_checkpoint(path, config, settings, cache, on_game=lambda _: bar.update(1)))
    return RunEvaluation(
        run_dir=run_dir,
        config=config,
        sequence=sequence,
        settings=settings,
        steps=[step for step, _ in chosen],
        scores=np.array([[r.score for r in row] for row in rows]),
        hns=np.array([[r.hns for r in row] for row in rows]),
        tasks=np.array([[r.task for r in row] for row in rows]),
    )


def reference_scores(
    run_dirs: Sequence[Path], overrides: Mapping[str, Any] | None = None, progress: bool = True
) -> dict[str, float]:
    """HNS of single-task reference runs at their last checkpoint, by game."""
    reference: dict[str, float] = {}
    for run_dir in run_dirs:
        evaluation = evaluate_run(run_dir, "last", overrides, progress)
        if len(evaluation.games) != 1:
            raise EvaluationError(
                f"--reference {str(run_dir)!r} trains {len(evaluation.games)} games ({', '.join(evaluation.games)}); "
                "a reference must be a single-task run: a sequence of one game"
            )
        reference[evaluation.games[0]] = float(evaluation.hns[-1, 0])
    return reference


# --- writing ------------------------------------------------------------------------------------------------------
def write_run(evaluation: RunEvaluation, reference_hns: dict[str, float] | None = None) -> dict[str, Any]:
    """Write the retention matrix, metrics, plots and TensorBoard image into ``RUN_DIR/eval``; returns the metrics."""
    out = evaluation.run_dir / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    ev, games = evaluation, evaluation.games
    segments = [
        {"segment": i, "game": s.game, "end_step": end}
        for i, (s, end) in enumerate(zip(ev.sequence.segments, ev.sequence.ends, strict=True))
    ]
    for name, values in (("retention.csv", ev.scores), ("retention_hns.csv", ev.hns)):
        matrix = ev.retention(values)
        write_csv(
            out / name,
            ["segment", "trained_game", "step", *games],
            [
                [seg["segment"], seg["game"], seg["end_step"], *row]
                for seg, row in zip(segments, matrix.tolist(), strict=True)
            ],
        )
    write_csv(
        out / "curves.csv",
        ["step", *games],
        [[step, *row] for step, row in zip(ev.steps, ev.scores.tolist(), strict=True)],
    )
    metrics = ev.metrics(reference_hns)
    settings = dataclasses.asdict(ev.settings)
    write_json(out / "metrics.json", {**metrics, "settings": settings})
    write_json(
        out / "retention.json",
        {
            "games": games,
            "segments": segments,
            "score": ev.retention(ev.scores),
            "hns": ev.retention(ev.hns),
            "checkpoints": {"steps": ev.steps, "score": ev.scores, "hns": ev.hns, "task": ev.tasks},
            "settings": settings,
        },
    )
    random = [random_score(game) for game in games]
    total = cast(np.ndarray, total_clipped(ev.hns))  # one total per checkpoint: hns is 2-D
    plots.save(plots.score_curves(ev.steps, ev.scores, games, ev.sequence, random), out / "scores.png")
    plots.save(plots.total_clipped_curve(ev.steps, total, len(games), ev.sequence), out / "total_clipped_hns.png")
    if ev.has_hns:
        heatmap = plots.retention_heatmap(ev.retention(ev.hns), games, ev.sequence)
    else:
        heatmap = plots.retention_heatmap(ev.retention(ev.scores), games, ev.sequence, label="raw score")
    plots.save(heatmap, out / "retention.png")
    _write_tensorboard(ev, total, plots.to_rgb_array(heatmap))
    return metrics


def _write_tensorboard(ev: RunEvaluation, total: np.ndarray, heatmap: np.ndarray) -> None:
    """The checkpoints' scores as ``eval/`` scalars and the heatmap as an image, in a fresh ``tb/eval`` run."""
    directory = ev.run_dir / TENSORBOARD_DIR / EVAL_DIR
    for old in directory.glob("events.out.tfevents.*"):
        old.unlink()  # an earlier evaluation of this run: replaced, not duplicated
    writer = SummaryWriter(str(directory))
    try:
        for k, step in enumerate(ev.steps):
            for j, game in enumerate(ev.games):
                writer.add_scalar(f"eval/{game}/score", ev.scores[k, j], step)
                if ev.has_hns:
                    writer.add_scalar(f"eval/{game}/hns", ev.hns[k, j], step)
            if ev.has_hns:
                writer.add_scalar("eval/total_clipped_hns", total[k], step)
        writer.add_image("eval/retention_matrix", heatmap, ev.steps[-1], dataformats="HWC")
    finally:
        writer.close()


# --- comparing runs -----------------------------------------------------------------------------------------------
def compare_runs(evaluations: Sequence[RunEvaluation], out: Path, reps: int = 50_000) -> list[dict[str, Any]]:
    """One row per run with, per group (``run.name``), IQMs of end HNS with 95 % CIs; CSV, JSON and PNG in ``out``."""
    no_hns = [str(ev.run_dir) for ev in evaluations if not ev.has_hns]
    if no_hns:
        raise EvaluationError(
            f"run(s) {', '.join(no_hns)} play games without human scores (MinAtar), and this comparison aggregates "
            "HNS: compare them with the retention table (agents/evaluation/retention_table.py), which normalises "
            "scores by single-task reference runs"
        )
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[RunEvaluation]] = {}
    for ev in evaluations:
        groups.setdefault(ev.config.run.name, []).append(ev)
    rows, aggregates = [], {}
    for name, runs in groups.items():
        if len({tuple(ev.games) for ev in runs}) > 1:
            raise EvaluationError(f"runs named {name!r} play different games; compare seeds of the same sequence")
        end_hns = np.array([ev.retention(ev.hns)[-1] for ev in runs])
        if np.isnan(end_hns).any():
            raise EvaluationError(f"a run named {name!r} lacks its last segment-end evaluation; use --checkpoints all")
        iqm = stratified_bootstrap(end_hns, reps=reps)
        totals = np.array([[total_clipped(row)] for row in end_hns])
        total_iqm = stratified_bootstrap(totals, reps=reps)
        aggregates[name] = (iqm.value, iqm.low, iqm.high)
        for ev in runs:
            m = ev.metrics()
            rows.append(
                {
                    "group": name,
                    "seed": ev.config.run.seed,
                    "run_dir": str(ev.run_dir),
                    "end_mean_hns": m["end_mean_hns"],
                    "end_total_clipped_hns": m["end_total_clipped_hns"],
                    "mean_forgetting_hns": m["mean_forgetting_hns"],
                    "backward_transfer_hns": m["backward_transfer_hns"],
                    "forward_transfer_hns": m["forward_transfer_hns"],
                    "group_iqm_end_hns": iqm.value,
                    "group_iqm_end_hns_ci": [iqm.low, iqm.high],
                    "group_iqm_total_clipped_hns": total_iqm.value,
                    "group_iqm_total_clipped_hns_ci": [total_iqm.low, total_iqm.high],
                }
            )
    write_csv(out / "comparison.csv", list(rows[0]), [list(row.values()) for row in rows])
    write_json(out / "comparison.json", rows)
    curves: dict[str, list[tuple[Sequence[int], np.ndarray]]] = {
        name: [(ev.steps, cast(np.ndarray, total_clipped(ev.hns))) for ev in runs] for name, runs in groups.items()
    }
    n_games = max(len(ev.games) for ev in evaluations)
    plots.save(plots.comparison(curves, aggregates, n_games), out / "comparison.png")
    return rows


def format_run(ev: RunEvaluation, metrics: dict[str, Any]) -> str:
    """The retention matrix (HNS; raw scores for games without a human score) and the headline metrics, as text."""
    s, width = ev.settings, max(9, *(len(g) + 2 for g in ev.games))
    values, what = (ev.hns, "HNS") if ev.has_hns else (ev.scores, "raw score, as these games have no human score,")
    lines = [
        f"{ev.run_dir}: {len(ev.steps)} checkpoint(s), {s.episodes} episode(s) per game, ε = {s.epsilon}, "
        f"task ids: {s.task_source}",
        f"retention matrix ({what} on each game after each segment):",
        f"  {'after segment':<24}" + "".join(f"{g:>{width}}" for g in ev.games),
    ]
    for (i, segment), row in zip(enumerate(ev.sequence.segments), ev.retention(values), strict=True):
        cells = "".join(f"{v:>{width}.3f}" if np.isfinite(v) else f"{'-':>{width}}" for v in row)
        lines.append(f"  {f'{i}: {segment.game}':<24}{cells}")
    if not ev.has_hns:
        forgetting = ", ".join(f"{game} {value:.3f}" for game, value in metrics["forgetting_score"].items())
        lines += [
            f"forgetting (raw score): {forgetting}",
            f"written: {ev.run_dir / EVAL_DIR} (retention.csv/json, *.png)",
        ]
        return "\n".join(lines)
    summary = (
        f"end mean HNS {metrics['end_mean_hns']:.3f} | total clipped HNS {metrics['end_total_clipped_hns']:.3f} of "
        f"{metrics['max_total_clipped_hns']} | mean forgetting {metrics['mean_forgetting_hns']:.3f} | "
        f"BWT {metrics['backward_transfer_hns']:.3f} | FWT {metrics['forward_transfer_hns']:.3f}"
    )
    if "forward_transfer_reference_hns" in metrics:
        summary += f" | FWT vs reference {metrics['forward_transfer_reference_hns']:.3f}"
    lines += [summary, f"written: {ev.run_dir / EVAL_DIR} (retention.csv/json, metrics.json, *.png)"]
    return "\n".join(lines)


def format_comparison(rows: list[dict[str, Any]]) -> str:
    """``compare_runs``' rows as a table."""
    header = (
        f"{'group':<16}{'seed':>5}{'end HNS':>9}{'total clip':>11}{'forget':>8}{'BWT':>8}{'FWT':>8}"
        "   group IQM end HNS [95% CI]"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        low, high = r["group_iqm_end_hns_ci"]
        lines.append(
            f"{r['group']:<16}{r['seed']:>5}{r['end_mean_hns']:>9.3f}{r['end_total_clipped_hns']:>11.3f}"
            f"{r['mean_forgetting_hns']:>8.3f}{r['backward_transfer_hns']:>8.3f}{r['forward_transfer_hns']:>8.3f}"
            f"   {r['group_iqm_end_hns']:.3f} [{low:.3f}, {high:.3f}]"
        )
    return "\n".join(lines)
