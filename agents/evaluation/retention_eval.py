"""Retention of a run measured from its checkpoints: retention matrix, metrics, plots, TensorBoard image.

Every chosen checkpoint of ``RUN_DIR/checkpoints`` is loaded and every game of the run's sequence is played with
training off by ``periodic_evaluation.evaluate_games`` (same seeds as the live evaluation, so a segment-end row
repeats what training logged under ``eval/`` with the same settings). The rows of the retention matrix are the
segment-end checkpoints; its metrics are those of ``cl_rl.retention`` (forgetting and worst drop as the retention
table defines them), in the unit that fits the games (``RunEvaluation.unit``): human-normalised scores (HNS) for ALE
games; for MinAtar games, which have no human scores, scores normalised by single-task reference runs when
``--reference`` gives them ((score − random) / (reference − random)), raw scores otherwise. Written to
``RUN_DIR/eval/`` (``RUN_DIR/eval_oracle/`` for true task ids, so the two task sources never overwrite each other):

    retention.csv                      R[i, j]: raw score on game j after segment i
    retention_hns.csv                  the same in HNS (ALE games only)
    retention.json                     the matrices, the segments, every evaluated checkpoint, the settings
    curves.csv                         raw score of every game at every evaluated checkpoint
    metrics.json                       end mean, forgetting, worst drop, backward and forward transfer (+ ALE: total
                                       clipped HNS), with their unit
    scores.png, retention.png (+ ALE: total_clipped_hns.png)
    cache/step_<step>.json             one checkpoint's results, reused while the settings and checkpoint are the same

and the ``eval/`` scalars of each checkpoint with the heatmap as an image in TensorBoard (``RUN_DIR/tb/eval``, or
``tb/eval_oracle``).
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
from agents.run.checkpoints import list_checkpoints, load_checkpoint
from agents.run.config import Config, load_config
from agents.run.training import CHECKPOINT_DIR, CONFIG_NAME, TENSORBOARD_DIR
from cl_rl.retention import (
    backward_transfer,
    final_average,
    forgetting,
    forward_transfer,
    normalize,
    reference_transfer,
    stratified_bootstrap,
    total_clipped,
    worst_drop,
)
from envs.scores import has_human_score, human_normalized_score, random_score
from envs.sequence import GameSequence

EVAL_DIR = "eval"
UNITS = {"hns": "human-normalised score", "reference": "reference-normalised score", "raw": "raw score"}


def eval_dir(run_dir: Path, task_source: str = "configured") -> Path:
    """Where an evaluation with ``task_source`` writes: ``RUN_DIR/eval`` (the agent's own ids) or ``eval_oracle``."""
    return run_dir / (EVAL_DIR if task_source == "configured" else f"{EVAL_DIR}_{task_source}")


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

    @property
    def random(self) -> np.ndarray:
        """Mean score of random play on each game (``envs.scores``)."""
        return np.array([random_score(game) for game in self.games])

    @property
    def complete(self) -> bool:
        """Whether every segment end was evaluated (on every game)."""
        return bool(np.isfinite(self.retention(self.scores)).all())

    def unit(self, reference: Mapping[str, float] | None = None) -> str:
        """``hns`` for ALE games, ``reference`` for MinAtar games with a reference score for each, else ``raw``."""
        if self.has_hns:
            return "hns"
        return "reference" if reference and all(g in reference for g in self.games) else "raw"

    def normalised(self, reference: Mapping[str, float] | None = None) -> np.ndarray:
        """Every evaluated checkpoint's scores in ``unit(reference)``."""
        unit = self.unit(reference)
        if unit == "hns":
            return self.hns
        if unit == "reference":
            assert reference is not None, "unit 'reference' needs the reference scores"
            return normalize(self.scores, self.random, np.array([reference[g] for g in self.games]))
        return self.scores

    def metrics(self, reference: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The retention metrics of ``cl_rl.retention`` in ``unit(reference)``; forgetting and worst drop also raw.

        ``reference``: raw scores of single-task runs by game (``reference_scores``).
        """
        unit, values, trained, games = self.unit(reference), self.normalised(reference), self.trained, self.games
        matrix, raw = self.retention(values), self.retention(self.scores)
        baseline = self.random if unit == "raw" else np.zeros(len(games))  # random play's score in this unit
        bwt, bwt_games = backward_transfer(matrix, trained)
        fwt, fwt_games = forward_transfer(matrix, trained, baseline)
        forget, drop = forgetting(matrix, trained), worst_drop(matrix, trained)

        def per_game(values: np.ndarray) -> dict[str, float]:
            return dict(zip(games, values.tolist(), strict=True))

        out: dict[str, Any] = {
            "games": games,
            "unit": unit,
            "complete": self.complete,
            "random_score": per_game(self.random),
            "retention": matrix,  # R[i, j] in this unit, one row per segment
            "end_mean": final_average(matrix),
            "forgetting": per_game(forget),
            "mean_forgetting": _nanmean(forget),
            "worst_drop": per_game(drop),
            "mean_worst_drop": _nanmean(drop),
            "forgetting_raw": per_game(forgetting(raw, trained)),
            "worst_drop_raw": per_game(worst_drop(raw, trained)),
            "backward_transfer": bwt,
            "backward_transfer_per_game": per_game(bwt_games),
            "forward_transfer": fwt,
            "forward_transfer_per_game": per_game(fwt_games),
        }
        if unit == "hns":
            out["end_total_clipped_hns"] = total_clipped(matrix[-1])
            out["max_total_clipped_hns"] = len(games)
        if reference:  # each reference's score in this unit (NaN for a game without one)
            ref_row = np.array([self._in_unit(g, reference[g], unit) if g in reference else math.nan for g in games])
            mean, ref_games = reference_transfer(matrix, trained, ref_row)
            out["forward_transfer_reference"] = mean
            out["forward_transfer_reference_per_game"] = per_game(ref_games)
        return out

    @staticmethod
    def _in_unit(game: str, score: float, unit: str) -> float:
        """A raw score in ``unit``; a reference-normalised single-task reference is 1 by definition."""
        return human_normalized_score(game, score) if unit == "hns" else 1.0 if unit == "reference" else score


# --- evaluating ---------------------------------------------------------------------------------------------------
def load_run(run_dir: Path) -> tuple[Config, list[tuple[int, Path]]]:
    """The run's config and its checkpoints, oldest first; ``EvaluationError`` if it is not an evaluable run."""
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise EvaluationError(f"run directory {str(run_dir)!r} {what}; give a directory of scripts/train.py")
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
    fix = "leave it out with --checkpoints (e.g. --checkpoints segments or steps such as 200,350), or delete it"
    model = load_checkpoint(path, device=config.run.device, fix=fix)
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
            cache = eval_dir(run_dir, settings.task_source) / "cache" / f"step_{step:010d}.json"
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
    """Raw scores of single-task reference runs at their last checkpoint, by game."""
    reference: dict[str, float] = {}
    for run_dir in run_dirs:
        evaluation = evaluate_run(run_dir, "last", overrides, progress)
        if len(evaluation.games) != 1:
            raise EvaluationError(
                f"--reference {str(run_dir)!r} trains {len(evaluation.games)} games ({', '.join(evaluation.games)}); "
                "a reference must be a single-task run: a sequence of one game"
            )
        reference[evaluation.games[0]] = float(evaluation.scores[-1, 0])
    return reference


# --- writing ------------------------------------------------------------------------------------------------------
def write_run(evaluation: RunEvaluation, reference: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Write the retention matrix, metrics, plots and TensorBoard image into ``eval_dir``; returns the metrics.

    ``reference``: raw scores of single-task runs by game (``reference_scores``).
    """
    out = eval_dir(evaluation.run_dir, evaluation.settings.task_source)
    out.mkdir(parents=True, exist_ok=True)
    ev, games = evaluation, evaluation.games
    segments = [
        {"segment": i, "game": s.game, "end_step": end}
        for i, (s, end) in enumerate(zip(ev.sequence.segments, ev.sequence.ends, strict=True))
    ]
    matrices = [("retention.csv", ev.scores)] + ([("retention_hns.csv", ev.hns)] if ev.has_hns else [])
    for name, values in matrices:
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
    metrics = ev.metrics(reference)
    settings = dataclasses.asdict(ev.settings)
    write_json(out / "metrics.json", {**metrics, "settings": settings})
    write_json(
        out / "retention.json",
        {
            "games": games,
            "segments": segments,
            "score": ev.retention(ev.scores),
            **({"hns": ev.retention(ev.hns)} if ev.has_hns else {}),
            "random_score": ev.random,
            "checkpoints": {
                "steps": ev.steps,
                "score": ev.scores,
                **({"hns": ev.hns} if ev.has_hns else {}),
                "task": ev.tasks,
            },
            "settings": settings,
        },
    )
    plots.save(plots.score_curves(ev.steps, ev.scores, games, ev.sequence, list(ev.random)), out / "scores.png")
    total = cast(np.ndarray, total_clipped(ev.hns))  # one total per checkpoint: hns is 2-D
    if ev.has_hns:
        plots.save(plots.total_clipped_curve(ev.steps, total, len(games), ev.sequence), out / "total_clipped_hns.png")
    unit = metrics["unit"]
    heatmap = plots.retention_heatmap(ev.retention(ev.normalised(reference)), games, ev.sequence, label=UNITS[unit])
    plots.save(heatmap, out / "retention.png")
    _write_tensorboard(ev, total, plots.to_rgb_array(heatmap))
    return metrics


def _write_tensorboard(ev: RunEvaluation, total: np.ndarray, heatmap: np.ndarray) -> None:
    """The checkpoints' scores as ``eval/`` scalars and the heatmap as an image, in a fresh ``tb/eval`` run."""
    directory = ev.run_dir / TENSORBOARD_DIR / eval_dir(ev.run_dir, ev.settings.task_source).name
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
                    "end_mean_hns": m["end_mean"],
                    "end_total_clipped_hns": m["end_total_clipped_hns"],
                    "mean_forgetting_hns": m["mean_forgetting"],
                    "mean_worst_drop_hns": m["mean_worst_drop"],
                    "backward_transfer_hns": m["backward_transfer"],
                    "forward_transfer_hns": m["forward_transfer"],
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
    """The retention matrix in the metrics' unit (with random play's row) and the headline metrics, as text."""
    s, width = ev.settings, max(9, *(len(g) + 2 for g in ev.games))
    unit = metrics["unit"]
    cell = f"{{:>{width}.{2 if unit == 'raw' else 3}f}}"
    lines = [
        f"{ev.run_dir}: {len(ev.steps)} checkpoint(s), {s.episodes} episode(s) per game, ε = {s.epsilon}, "
        f"task ids: {s.task_source}",
        f"retention matrix ({UNITS[unit]} on each game after each segment):",
        f"  {'after segment':<24}" + "".join(f"{g:>{width}}" for g in ev.games),
    ]
    for (i, segment), row in zip(enumerate(ev.sequence.segments), metrics["retention"], strict=True):
        cells = "".join(cell.format(v) if np.isfinite(v) else f"{'-':>{width}}" for v in row)
        lines.append(f"  {f'{i}: {segment.game}':<24}{cells}")
    if unit == "raw":
        lines.append(f"  {'random play':<24}" + "".join(cell.format(v) for v in ev.random))
    if not metrics["complete"]:
        lines.append("  (segment ends without a row were not evaluated: --checkpoints all or segments scores them)")

    def per_game(key: str) -> str:
        return ", ".join(f"{g.split('/')[-1]} {v:.3f}" for g, v in metrics[key].items() if np.isfinite(v)) or "-"

    lines += [
        f"forgetting (best after an own segment − end): {per_game('forgetting')}",
        f"worst drop (largest fall below that best at any later segment end): {per_game('worst_drop')}",
    ]
    summary = f"end mean {metrics['end_mean']:.3f} | BWT {metrics['backward_transfer']:.3f} | "
    summary += f"FWT {metrics['forward_transfer']:.3f} ({UNITS[unit]})"
    if unit == "hns":
        total, most = metrics["end_total_clipped_hns"], metrics["max_total_clipped_hns"]
        summary = f"total clipped HNS {total:.3f} of {most} | " + summary
    if "forward_transfer_reference" in metrics:
        summary += f" | FWT vs reference {metrics['forward_transfer_reference']:.3f}"
    lines += [summary, f"written: {eval_dir(ev.run_dir, s.task_source)} (retention.csv/json, metrics.json, *.png)"]
    return "\n".join(lines)


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


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
