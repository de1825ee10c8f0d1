"""The retention table: every method × seed trained on one preset, plus single-task references.

``plan_runs`` turns a preset (a YAML config whose sequence revisits its games) into runs: each method × seed as an
ordinary continual run, and each game of the sequence alone for as many agent steps as it gets in the whole sequence
(fine-tuning, true task id: the single-task reference). ``run_all`` trains them in parallel worker processes with
``agents.run.training`` (finished runs are reused, interrupted ones resumed; Ctrl-C stops every run at a checkpoint).
``build_table`` reads the scores back, normalises them by the references and aggregates each method's seeds;
``write_table`` writes the table and figures. Layout of ``OUT``:

    runs/<method>__seed<k>/               a run of scripts/train.py (config.yaml, checkpoints/, tb/), and
                                          table_run.json: finished or not, training seconds, updates
    runs/reference__<game>__seed<k>/      the single-task reference of <game>
    logs/<run>.log                        the run's stdout and stderr
    table.md, table.csv, table.json       the table (per method: IQM and 95 % CI of each metric, cost)
    runs.csv, references.csv              one row per run; the references against random play
    differences.csv                       each row against fine-tuning (and <method> against <method>@<source>)
    worst_drop_per_game.csv               each row's worst drop on every game, mean of seeds with its interval
    <method>_scores.png                   every game's score over training, switches marked (EWC paper, Fig. 3)
    <method>_retention.png                the normalised retention matrix, mean over seeds

Scores are read back from the runs' TensorBoard files: the ``eval/<game>/score`` scalars that
``PeriodicEvaluationCallback`` logs at every segment end (and every ``eval.every`` steps). That costs nothing and gives
the same numbers as evaluating the segment-end checkpoints with ``retention_eval`` (same settings, same seeds), which
would replay every game at every segment end once more. A segment end whose scalars are missing (a run killed
between its last checkpoint and its evaluation) is evaluated from its checkpoint (``evaluate_checkpoint``, cached).

Metrics (``cl_rl.retention``) are taken on reference-normalised scores, (score − random) / (reference − random), with
random play from ``envs.scores.random_score`` and the reference the mean end score of the single-task runs: the final
score on every game, forgetting (best score after one of the game's own segments minus the end score), worst drop
(the largest drop below that best at any later segment end), backward transfer (GEM), forward transfer (GEM's
zero-shot score before the game's first segment, random = 0) and forward transfer against the reference (score after
the first segment minus 1, Continual World). Each is aggregated over seeds × games as rliable does: IQM with a
stratified-bootstrap 95 % interval (Agarwal et al. 2021). ``table.md`` also lists each method's raw scores after
each segment (mean of seeds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation import plots
from agents.evaluation.differences import (
    DIFFERENCE_COLUMNS,
    Difference,
    difference_rows,
    differences,
    format_differences,
    per_game_intervals,
    split_row,
)
from agents.evaluation.result_files import json_ready, write_csv
from agents.evaluation.retention_eval import EvalSettings, eval_dir, evaluate_checkpoint
from agents.run.checkpoints import CheckpointError, checkpoint_path, list_checkpoints
from agents.run.config import Config, ConfigError, SequenceConfig, config_from_dict, load_config, settings_in_use
from agents.run.lock import directory_lock
from agents.run.training import (
    CHECKPOINT_DIR,
    CONFIG_NAME,
    TENSORBOARD_DIR,
    RunDirError,
    resume,
    train,
)
from cl_rl.methods import NONE, REGISTRY, parse_method_names
from cl_rl.retention import (
    Interval,
    backward_transfer,
    forgetting,
    forward_transfer,
    normalize,
    reference_transfer,
    stratified_bootstrap,
    worst_drop,
)
from envs.scores import random_score
from envs.sequence import GameSequence, Segment

FINETUNE = "finetune"
REFERENCE = "reference"
MARKER = "table_run.json"
_HOW_RUN = {"run.threads", "run.device", "run.progress_bar"}  # settings a finished or resumed run may differ in
METRICS = {  # key: (column title, what it is)
    "final": ("final score", "normalised score on every game at the end"),
    "forgetting": ("forgetting ↓", "best normalised score after one of the game's own segments minus the end score"),
    "worst_drop": ("worst drop ↓", "largest drop at any later segment end below the best score after an own segment"),
    "backward_transfer": ("backward transfer", "end score minus score after the game's last segment (GEM)"),
    "forward_transfer": ("forward transfer", "zero-shot score just before the game's first segment (random: 0)"),
    "forward_transfer_reference": ("FWT vs reference", "score after the game's first segment minus 1 (reference)"),
}
COST_NOTE = (
    "**run time**: wall time of a run's training, evaluations at segment ends included (mean of seeds); "
    "**time / update**: that time divided by the run's gradient updates (environment steps included)."
)


class TableError(ValueError):
    """Input the table cannot be built from (unknown method, unusable preset, stale run directory); names the fix."""


class TableInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped the runs; each left a checkpoint, and the same command resumes them."""


class RunsFailed(RuntimeError):
    """Some runs raised an error; the message names them and their logs."""


class _Cancelled(BaseException):
    """The table stopped before this run started learning (nothing to checkpoint yet). Not an ``Exception``, so that
    no ``except Exception`` on the way swallows it, as ``KeyboardInterrupt``."""


# --- methods ------------------------------------------------------------------------------------------------------
def known_methods() -> tuple[str, ...]:
    """Every method of the project, fine-tuning first: the names of the method registry (``cl_rl.methods``)."""
    return (FINETUNE, *REGISTRY)


def method_overrides(name: str) -> list[str]:
    """The config overrides that select method ``name`` (``finetune``: no method; ``a+b``: both, as in a config)."""
    if name == FINETUNE:
        return [f"method.name={NONE}"]
    try:
        parse_method_names(name)
    except ValueError as err:
        raise TableError(f"{err}; or {FINETUNE} (no method)") from None
    return [f"method.name={name}"]


# --- planning -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run of the table: a method's seed on the whole sequence, or a game's single-task reference."""

    name: str  # directory name under OUT/runs
    method: str  # a method, or REFERENCE
    seed: int
    config: Config
    game: str | None = None  # the reference's game


def scaled_sequence(sequence: GameSequence, scale: float) -> GameSequence:
    """The same games with every segment ``scale`` times as long (at least one agent step)."""
    if scale <= 0:
        raise TableError(f"--steps-scale must be > 0, got {scale}")
    return GameSequence(tuple(Segment(s.game, max(1, round(s.steps * scale))) for s in sequence.segments))


def steps_per_game(sequence: GameSequence) -> dict[str, int]:
    """Agent steps each game gets over the whole sequence: the length of its single-task reference."""
    totals = dict.fromkeys(sequence.games, 0)
    for segment in sequence.segments:
        totals[segment.game] += segment.steps
    return totals


def preset_notes(sequence: GameSequence) -> list[str]:
    """What keeps a sequence from being a retention preset (three or more games, each visited at least twice)."""
    visits = {game: sum(s.game == game for s in sequence.segments) for game in sequence.games}
    notes = []
    if len(visits) < 3:
        notes.append(f"the sequence has {len(visits)} game(s); a retention preset has three or more")
    once = [game for game, n in visits.items() if n < 2]
    if once:
        notes.append(f"visited only once: {', '.join(once)} (a retention preset revisits every game)")
    return notes


def plan_runs(
    preset: Path,
    methods: Sequence[str],
    seeds: Sequence[int],
    task_source: str = "fmn",
    steps_scale: float = 1.0,
    overrides: Sequence[str] = (),
    threads: int = 1,
    tuned: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[GameSequence, list[RunSpec]]:
    """The sequence and every run of the table, seed by seed: each game's reference, then every method.

    A method named ``<method>@<source>`` (``ewc@oracle``) runs with that task source instead of ``task_source``: a
    row of its own beside ``<method>`` (``agents.evaluation.differences``). ``threads``: torch threads of each run
    (``run.threads``). ``tuned``: method → {config key: value} for that method's rows only (its strengths, chosen by
    ``scripts/select_strengths.py``; a method ``a+b`` takes both's).
    """
    for source in (task_source, *(split_row(m)[1] for m in methods)):
        if source is not None and source not in ("fmn", "oracle"):
            raise TableError(f"a task source must be fmn or oracle (--task-source, <method>@<source>), got {source!r}")
    if not methods or not seeds:
        raise TableError("give at least one method and one seed")
    methods, seeds = list(dict.fromkeys(methods)), list(dict.fromkeys(seeds))  # a run named twice is one run
    sequence = scaled_sequence(load_config(preset, list(overrides)).sequence.build(), steps_scale)
    overrides = [*overrides, f"run.threads={threads}"]
    specs = []
    # Seed-major, references first: a table cut short (or grown over several invocations) has every method and its
    # normalisation at the seeds it reached, rather than some methods at every seed and others at none.
    for seed in seeds:
        for game, steps in steps_per_game(sequence).items():
            alone = GameSequence((Segment(game, steps),))  # one game is one task: its true id; nothing to protect
            name = f"{REFERENCE}__{_safe(game)}"
            config = _config(preset, [*overrides, *method_overrides(FINETUNE), "task.source=oracle"], name, seed)
            specs.append(RunSpec(f"{name}__seed{seed}", REFERENCE, seed, _with_sequence(config, alone), game))
        for method in methods:
            chosen = [*method_overrides(split_row(method)[0]), f"task.source={split_row(method)[1] or task_source}"]
            chosen += [
                f"{key}={json.dumps(value)}"
                for name in split_row(method)[0].split("+")
                for key, value in (tuned or {}).get(name, {}).items()
            ]
            config = _config(preset, [*overrides, *chosen], method, seed)
            specs.append(RunSpec(f"{method}__seed{seed}", method, seed, _with_sequence(config, sequence)))
    return sequence, specs


def _config(preset: Path, overrides: list[str], name: str, seed: int) -> Config:
    return load_config(preset, [*overrides, f"run.name={name}", f"run.seed={seed}", "run.progress_bar=false"])


def _with_sequence(config: Config, sequence: GameSequence) -> Config:
    return dataclasses.replace(config, sequence=SequenceConfig(segments=sequence.to_list()))


def _safe(game: str) -> str:
    return game.replace("/", "-")


# --- running ------------------------------------------------------------------------------------------------------
def run_dir_of(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / spec.name


def run_state(run_dir: Path, config: Config) -> str:
    """``finished``, ``partial`` (resumable or restartable) or ``new``; ``TableError`` if it holds another config."""
    saved = run_dir / CONFIG_NAME
    if not saved.is_file():
        return "new"
    try:
        old = load_config(saved)
    except ConfigError as err:
        raise TableError(f"{saved} cannot be read ({err}); delete {run_dir} or choose another --out") from err
    new, before = settings_in_use(config), settings_in_use(old)
    changed = sorted(k for k in new.keys() | before.keys() if new.get(k) != before.get(k) and k not in _HOW_RUN)
    if changed:
        raise TableError(
            f"{run_dir} was trained with another config (differs in {', '.join(changed[:5])}); "
            "choose another --out, or delete that run directory to train it again"
        )
    marker = run_dir / MARKER
    return "finished" if marker.is_file() and json.loads(marker.read_text())["finished"] else "partial"


def run_all(specs: Sequence[RunSpec], out: Path, jobs: int, log: Callable[[str], None] = print) -> None:
    """Train every run not finished yet in ``jobs`` worker processes (spawned).

    Ctrl-C or SIGTERM stops every running run at a checkpoint and raises ``TableInterrupted``. ``out``'s lock
    (``agents.run.lock``) is held throughout: a second table on ``out`` while this one trains is refused with
    ``RunDirLocked``.
    """
    with directory_lock(out, "table directory"):
        _run_all(specs, out, jobs, log)


def _run_all(specs: Sequence[RunSpec], out: Path, jobs: int, log: Callable[[str], None]) -> None:
    todo = []
    for spec in specs:
        state = run_state(run_dir_of(out, spec), spec.config)
        if state == "finished":
            log(f"reused   {spec.name} (finished run)")
        else:
            todo.append(spec)
            log(f"{'resume' if state == 'partial' else 'train'}    {spec.name}")
    if not todo:
        return
    (out / "logs").mkdir(parents=True, exist_ok=True)
    failed, stopped = [], []
    context = multiprocessing.get_context("spawn")
    stop = context.Event()  # set on Ctrl-C: runs already handed to a worker but not started do not start
    with (
        _sigterm_as_interrupt(),
        ProcessPoolExecutor(min(jobs, len(todo)), context, initializer=_init_worker, initargs=(stop,)) as pool,
    ):
        futures = {
            pool.submit(_train_or_resume, s.config.to_dict(), run_dir_of(out, s), out / "logs" / f"{s.name}.log"): s
            for s in todo
        }
        try:
            for k, future in enumerate(as_completed(futures), 1):
                spec = futures[future]
                try:
                    info = future.result()
                except _Cancelled:
                    stopped.append(spec.name)
                    continue
                except Exception as err:  # a bug or a broken run: the others go on; the log says more
                    failed.append(f"{spec.name} ({type(err).__name__}: {err}; log: {out / 'logs' / spec.name}.log)")
                    log(f"[{k}/{len(todo)}] FAILED   {spec.name}: {type(err).__name__}: {err}")
                    continue
                if not info["finished"]:
                    stopped.append(spec.name)
                log(
                    f"[{k}/{len(todo)}] {'finished' if info['finished'] else 'stopped '} {spec.name}: "
                    f"{info['steps']} agent steps, {info['seconds'] / 60:.1f} min of training"
                )
        except KeyboardInterrupt:
            log("stopping: every running run writes a checkpoint (a second Ctrl-C stops at once) ...")
            stop.set()
            for child in multiprocessing.active_children():
                assert child.pid is not None  # an active child has started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)  # workers outside the terminal's process group stop too
            pool.shutdown(wait=True, cancel_futures=True)
            raise TableInterrupted(
                "interrupted: the runs stopped at a checkpoint; the same command resumes them"
            ) from None
    if failed:
        raise RunsFailed("runs failed: " + "; ".join(failed))
    if stopped:
        raise TableInterrupted(f"stopped before the end: {', '.join(stopped)}; the same command resumes them")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """In the main thread, SIGTERM stops the table as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_IN_TASK = False
_STOP: Any = None  # the table's stop event, in a worker


def _init_worker(stop: Any) -> None:
    """A worker's stop signals: they end a run that has not started learning yet, and are ignored between runs."""
    global _STOP
    _STOP = stop

    def handle(signum: int, frame: Any) -> None:
        if _IN_TASK:  # while learning, training's own handler is in place and stops at a checkpoint instead
            raise _Cancelled(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)


def _train_or_resume(data: dict[str, Any], path: Path, log_path: Path) -> dict[str, Any]:
    """Run in a worker: resume the run from its newest checkpoint, or train it from the start; write its marker.

    The config travels as plain data (``Config.to_dict``): its method section is a dataclass built at run time.
    """
    global _IN_TASK
    if _STOP is not None and _STOP.is_set():
        raise _Cancelled("the table was stopped before this run started")
    config, marker = config_from_dict(data), path / MARKER
    earlier = json.loads(marker.read_text())["seconds"] if marker.is_file() else 0.0
    _IN_TASK = True
    try:
        with _output_to(log_path):
            try:
                print(f"resuming {path}", flush=True)
                result = resume(path, [f"run.{key}={getattr(config.run, key)}" for key in ("threads", "device")])
            except (CheckpointError, RunDirError) as err:  # no valid checkpoint (or no config.yaml) yet: start again
                print(f"training {path} from the start ({err})", flush=True)
                result = train(config, path, overwrite=True)
    finally:
        _IN_TASK = False
    info = {
        "finished": result.interrupted is None and result.model.num_timesteps >= config.sequence.build().total_steps,
        "interrupted": result.interrupted,
        "steps": int(result.model.num_timesteps if result.stopped_at is None else result.stopped_at),
        "updates": int(result.model._n_updates),
        "seconds": earlier + result.seconds,
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    return info


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``, appending."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as f:
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# --- reading scores -----------------------------------------------------------------------------------------------
@dataclass
class RunScores:
    """Raw score of every game (columns) at every evaluation of one run (rows), and what the run cost."""

    name: str
    sequence: GameSequence
    steps: list[int]
    scores: np.ndarray
    seconds: float
    updates: int
    plasticity: dict[str, float] = field(default_factory=dict)  # END_PLASTICITY's last logged values
    task_inference: dict[str, float] = field(default_factory=dict)  # ``logged_task_inference``

    @property
    def games(self) -> list[str]:
        return list(self.sequence.games)

    @property
    def trained(self) -> list[int]:
        return [self.games.index(s.game) for s in self.sequence.segments]

    def retention(self) -> np.ndarray:
        """R[i, j]: raw score on game j right after segment i."""
        return self.scores[[self.steps.index(end) for end in self.sequence.ends]]


def read_run(run_dir: Path, rescore: bool = False) -> RunScores:
    """The scores a finished run logged under ``eval/`` (missing segment ends evaluated from their checkpoints).

    ``rescore``: every checkpoint is evaluated again with today's evaluation code instead (cached per checkpoint in
    ``RUN_DIR/eval/cache``, so ``scripts/evaluate.py`` on the runs can fill it beforehand, in parallel): for runs whose
    logged scores came from an older evaluation code.
    """
    config = load_config(run_dir / CONFIG_NAME)
    sequence = config.sequence.build()
    games = list(sequence.games)
    e = config.eval
    settings = EvalSettings(e.episodes, e.epsilon, e.task_source, e.seed)

    def evaluated(step: int, checkpoint: Path) -> list[float]:
        cache = eval_dir(run_dir, settings.task_source) / "cache" / f"step_{step:010d}.json"
        return [r.score for r in evaluate_checkpoint(checkpoint, config, settings, cache)]

    if rescore:
        logged = {step: evaluated(step, path) for step, path in list_checkpoints(run_dir / CHECKPOINT_DIR)}
    else:
        logged = logged_scores(run_dir / TENSORBOARD_DIR, games)
    for end in sequence.ends:
        if end not in logged:
            checkpoint = checkpoint_path(run_dir / CHECKPOINT_DIR, end)
            if not checkpoint.is_file():
                raise TableError(f"{run_dir} has neither a score nor a checkpoint at segment end {end}; train it again")
            logged[end] = evaluated(end, checkpoint)
    marker = json.loads((run_dir / MARKER).read_text()) if (run_dir / MARKER).is_file() else {}
    steps = sorted(logged)
    return RunScores(
        run_dir.name,
        sequence,
        steps,
        np.array([logged[s] for s in steps], dtype=float),
        float(marker.get("seconds", math.nan)),
        int(marker.get("updates", 0)),
        end_of_run_plasticity(run_dir / TENSORBOARD_DIR),
        logged_task_inference(run_dir / TENSORBOARD_DIR),
    )


TASK_INFERENCE = {  # key: (TensorBoard tag, how its values over the run become one figure)
    "tasks": ("task/n_tasks", "last"),
    "spurious_switches": ("task/spurious_switches", "last"),
    "ari": ("task/ari", "last"),
    "unrecognised": ("eval/unrecognised", "sum"),
}


def logged_task_inference(tb_dir: Path) -> dict[str, float]:
    """How a run's task inference did (``agents.run.callbacks.TaskInferenceMonitor``, the periodic evaluation): tasks
    created, spurious switches and ARI of training at the end, and evaluations that played a trained game with a
    task the agent did not have, summed over the run (a step logged twice counts once: the later value)."""
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    out = {}
    for key, (tag, how) in TASK_INFERENCE.items():
        if tag in tags:
            by_step = {e.step: e.value for e in sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time)}
            out[key] = by_step[max(by_step)] if how == "last" else float(sum(by_step.values()))
    return out


END_PLASTICITY = {"dormant": "dormant units", "effective_rank": "effective rank"}  # plasticity/<key> (agents/run)


def end_of_run_plasticity(tb_dir: Path) -> dict[str, float]:
    """The last logged ``plasticity/dormant`` and ``plasticity/effective_rank`` of a run (absent: not logged)."""
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    last = {}
    for key in END_PLASTICITY:
        if f"plasticity/{key}" in tags:
            events = accumulator.Scalars(f"plasticity/{key}")
            last[key] = max(events, key=lambda e: (e.step, e.wall_time)).value
    return last


def logged_scores(tb_dir: Path, games: Sequence[str]) -> dict[int, list[float]]:
    """Step → score of every game, from the ``eval/<game>/score`` scalars (a step logged twice: the later value)."""
    accumulator = EventAccumulator(
        str(tb_dir), size_guidance={"scalars": 0, "tensors": 1, "images": 1, "histograms": 1, "audio": 1}
    )
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    by_game: list[dict[int, float]] = []
    for game in games:
        tag = f"eval/{game}/score"
        events = sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time) if tag in tags else []
        by_game.append({e.step: e.value for e in events})
    common = set.intersection(*(set(d) for d in by_game)) if by_game else set()
    return {step: [d[step] for d in by_game] for step in sorted(common)}


# --- the table ----------------------------------------------------------------------------------------------------
def run_metrics(normalised: np.ndarray, trained: Sequence[int]) -> dict[str, np.ndarray]:
    """Per game, each metric of ``METRICS`` on a reference-normalised retention matrix (NaN where undefined)."""
    n_games = normalised.shape[1]
    return {
        "final": normalised[-1],
        "forgetting": forgetting(normalised, trained),
        "worst_drop": worst_drop(normalised, trained),
        "backward_transfer": backward_transfer(normalised, trained)[1],
        "forward_transfer": forward_transfer(normalised, trained, np.zeros(n_games))[1],
        "forward_transfer_reference": reference_transfer(normalised, trained, np.ones(n_games))[1],
    }


def aggregate(values: np.ndarray, reps: int = 50_000, seed: int = 0) -> Interval | None:
    """IQM over seeds × games with a stratified-bootstrap 95 % CI; games undefined in a seed are left out."""
    values = np.asarray(values, dtype=float)
    kept = values[:, ~np.isnan(values).any(axis=0)]
    return stratified_bootstrap(kept, reps=reps, seed=seed) if kept.size else None


@dataclass
class MethodRow:
    method: str
    runs: list[RunScores]
    normalised: list[np.ndarray]  # each run's normalised retention matrix
    per_game: dict[str, np.ndarray]  # metric -> seeds × games
    intervals: dict[str, Interval | None]

    @property
    def seconds(self) -> float:
        return float(np.mean([r.seconds for r in self.runs]))

    @property
    def ms_per_update(self) -> float:
        updates = sum(r.updates for r in self.runs)
        return 1000 * sum(r.seconds for r in self.runs) / updates if updates else math.nan


@dataclass
class Table:
    sequence: GameSequence
    random: dict[str, float]
    reference: dict[str, list[float]]  # game -> end score of each reference seed
    reference_runs: list[RunScores]
    rows: list[MethodRow]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)  # agents.evaluation.differences
    worst_drop_per_game: dict[str, list[Interval | None]] = field(default_factory=dict)  # row -> per game

    @property
    def games(self) -> list[str]:
        return list(self.sequence.games)

    def reference_mean(self) -> np.ndarray:
        return np.array([np.mean(self.reference[game]) for game in self.games])


def build_table(
    out: Path,
    sequence: GameSequence,
    specs: Sequence[RunSpec],
    reps: int = 50_000,
    settings: dict | None = None,
    finished_only: bool = False,
    rescore: bool = False,
) -> Table:
    """Read every run of ``specs`` back from ``out`` and compute each method's metrics.

    ``finished_only``: build from the runs finished so far (a table still running, or grown over several calls); the
    notes say how many seeds each method has. ``rescore``: score every run's checkpoints again (``read_run``).
    """
    if finished_only:
        planned = Counter(s.method for s in specs)
        specs = [s for s in specs if run_state(run_dir_of(out, s), s.config) == "finished"]
        have = Counter(s.method for s in specs)
        missing_references = [g for g in sequence.games if not any(s.game == g for s in specs)]
        if missing_references:
            raise TableError(f"no finished single-task reference yet for {', '.join(missing_references)}")
    games = list(sequence.games)
    random = {game: random_score(game) for game in games}
    reference: dict[str, list[float]] = {game: [] for game in games}
    reference_runs = []
    for spec in specs:
        if spec.method == REFERENCE:
            run = read_run(run_dir_of(out, spec), rescore)
            reference[str(spec.game)].append(float(run.scores[-1, 0]))
            reference_runs.append(run)
    table = Table(sequence, random, reference, reference_runs, [], dict(settings or {}), preset_notes(sequence))
    if finished_only:
        short = [f"{m} {have[m]}/{n}" for m, n in planned.items() if have[m] < n]
        if short:
            table.notes.append(f"partial table, finished seeds of planned: {', '.join(short)}")
    low = [g for g, ref in zip(games, table.reference_mean(), strict=True) if not ref > random[g]]
    if low:
        table.notes.append(f"single-task reference not above random on {', '.join(low)}: normalised scores undefined")
    random_row = np.array([random[g] for g in games])
    for method in dict.fromkeys(s.method for s in specs if s.method != REFERENCE):
        runs = [read_run(run_dir_of(out, s), rescore) for s in specs if s.method == method]
        normalised = [normalize(run.retention(), random_row, table.reference_mean()) for run in runs]
        metrics = [run_metrics(n, runs[0].trained) for n in normalised]
        per_game = {key: np.array([m[key] for m in metrics]) for key in METRICS}
        intervals = {key: aggregate(values, reps) for key, values in per_game.items()}
        table.rows.append(MethodRow(method, runs, normalised, per_game, intervals))
    table.differences = differences({r.method: r.per_game for r in table.rows}, games, FINETUNE, reps)
    table.worst_drop_per_game = {r.method: per_game_intervals(r.per_game["worst_drop"], reps) for r in table.rows}
    return table


# --- writing ------------------------------------------------------------------------------------------------------
def write_table(table: Table, out: Path) -> list[Path]:
    """table.md/csv/json, runs.csv, references.csv and two PNGs per method in ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "table.md", out / "table.csv", out / "table.json", out / "runs.csv", out / "references.csv"]
    (out / "table.md").write_text(format_markdown(table))
    write_csv(
        out / "table.csv",
        ["method", "seeds", *(f"{k}_{p}" for k in METRICS for p in ("iqm", "low", "high")), "run_s", "ms_per_update"],
        [
            [row.method, len(row.runs), *_interval_cells(row), round(row.seconds, 1), round(row.ms_per_update, 3)]
            for row in table.rows
        ],
    )
    write_csv(
        out / "runs.csv",
        ["method", "run", *(f"{k}_mean" for k in METRICS), "run_s", "updates"],
        [
            [row.method, run.name, *(_nanmean(row.per_game[k][i]) for k in METRICS), round(run.seconds, 1), run.updates]
            for row in table.rows
            for i, run in enumerate(row.runs)
        ],
    )
    write_csv(
        out / "references.csv",
        ["game", "steps", "random", "reference_mean", "reference_seeds", "above_random"],
        [
            [game, steps, table.random[game], ref, ";".join(f"{v:g}" for v in table.reference[game]), ref > rnd]
            for (game, steps), ref, rnd in zip(
                steps_per_game(table.sequence).items(), table.reference_mean(), table.random.values(), strict=True
            )
        ],
    )
    write_csv(out / "differences.csv", DIFFERENCE_COLUMNS, difference_rows(table.differences))
    write_csv(
        out / "worst_drop_per_game.csv",
        ["method", "game", "mean", "low", "high"],
        [
            [row, game, *((i.value, i.low, i.high) if i else (math.nan,) * 3)]
            for row, intervals in table.worst_drop_per_game.items()
            for game, i in zip(table.games, intervals, strict=True)
        ],
    )
    written += [out / "differences.csv", out / "worst_drop_per_game.csv"]
    (out / "table.json").write_text(json.dumps(json_ready(_as_json(table)), indent=2) + "\n")
    for row in table.rows:
        written += _figures(table, row, out)
    return written


def format_markdown(table: Table) -> str:
    """The table as Markdown: methods with IQM [95 % CI] of each metric and cost; references against random."""
    s = table.settings
    lines = [
        "# Retention table",
        "",
        f"Preset `{s.get('preset', '?')}`, task ids: {s.get('task_source', '?')}, seeds: {s.get('seeds', '?')}. "
        "Sequence: " + " → ".join(f"{seg.game} ({seg.steps:,})" for seg in table.sequence.segments) + " agent steps.",
        "",
        "Scores normalised per game: 0 = random play, 1 = the single-task reference (the game trained alone for as "
        "many steps as in the whole sequence). Each cell: IQM over seeds × games [stratified-bootstrap 95 % CI].",
        "",
        "| method | " + " | ".join(title for title, _ in METRICS.values()) + " | run time | time / update |",
        "|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    for row in table.rows:
        cells = [_format_interval(row.intervals[k]) for k in METRICS]
        cost = f"{row.seconds / 60:.1f} min | {row.ms_per_update:.1f} ms"
        lines.append(f"| {row.method} | " + " | ".join(cells) + f" | {cost} |")
    lines += ["", "Metrics: " + "; ".join(f"**{t}**: {d}" for t, d in METRICS.values()) + "."]
    lines += [COST_NOTE, ""]
    lines += ["## Single-task references", ""]
    lines.append("| game | agent steps | random | reference (mean of seeds) | reference − random | seeds |")
    lines.append("|---" * 6 + "|")
    for (game, steps), ref in zip(steps_per_game(table.sequence).items(), table.reference_mean(), strict=True):
        seeds = ", ".join(f"{v:.2f}" for v in table.reference[game])
        rnd = table.random[game]
        lines.append(f"| {game} | {steps:,} | {rnd:.2f} | {ref:.2f} | {ref - rnd:.2f} | {seeds} |")
    lines += ["", *format_differences(table.differences)]
    lines += ["", *_per_game_worst_drop(table), "", *_plasticity_at_the_end(table), "", *_task_inference(table)]
    lines += ["", *_segment_end_scores(table)]
    if table.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in table.notes)]
    if s.get("command"):
        lines += ["", f"Command: `{s['command']}`"]
    return "\n".join(lines) + "\n"


def _per_game_worst_drop(table: Table) -> list[str]:
    """Each method's worst drop on every game (mean of seeds [bootstrap 95 % CI]): which game a method loses, which
    the pooled IQM of the table's column hides when one game carries the forgetting and the others carry noise."""
    short = [game.split("/")[-1] for game in table.games]
    lines = [
        "## Worst drop per game (mean of seeds [bootstrap 95 % CI, seeds resampled])",
        "",
        "| method | " + " | ".join(short) + " |",
        "|---" * (1 + len(short)) + "|",
    ]
    for row in table.rows:
        intervals = table.worst_drop_per_game.get(row.method) or [None] * len(short)  # None: a seed lacks the game
        lines.append(f"| {row.method} | " + " | ".join(_format_interval(i) for i in intervals) + " |")
    return lines


def _plasticity_at_the_end(table: Table) -> list[str]:
    """Each method's plasticity diagnostics at the end of its runs (mean of seeds; docs/PLASTICITY.md)."""
    lines = [
        "## Plasticity at the end of the run (mean of seeds)",
        "",
        "Fraction of τ-dormant units (all hidden layers) and effective rank of the penultimate features, on the last "
        "task's probe batch (agents/run/plasticity.py).",
        "",
        "| method | " + " | ".join(END_PLASTICITY.values()) + " |",
        "|---" * (1 + len(END_PLASTICITY)) + "|",
    ]
    for row in table.rows:
        values = [[r.plasticity[k] for r in row.runs if k in r.plasticity] for k in END_PLASTICITY]
        cells = [f"{np.mean(v):.3g}" if v else "–" for v in values]
        lines.append(f"| {row.method} | " + " | ".join(cells) + " |")
    return lines


def _task_inference(table: Table) -> list[str]:
    """Each method's task inference over its runs, apart from the scores: a game split into several tasks or an
    evaluation played with a task the agent does not have is a recognition failure, not forgetting."""
    n_games = len(table.games)
    lines = [
        "## Task inference (over seeds)",
        "",
        "Tasks created per game, spurious switches and ARI (inferred tasks against the true games) of training, and "
        "evaluations that played a game already trained with a task the agent did not have (its scores count as "
        "that method's; this column says how many such there are).",
        "",
        "| method | tasks per game (mean, max) | spurious switches (mean, max) | ARI (mean, min) "
        "| unrecognised evaluations |",
        "|---|---|---|---|---|",
    ]
    for row in table.rows:
        got = {k: [r.task_inference[k] for r in row.runs if k in r.task_inference] for k in TASK_INFERENCE}
        if not got["tasks"]:
            lines.append(f"| {row.method} | – | – | – | – |")
            continue
        per_game = np.array(got["tasks"]) / n_games
        spurious, ari = np.array(got["spurious_switches"] or [np.nan]), np.array(got["ari"] or [np.nan])
        lines.append(
            f"| {row.method} | {per_game.mean():.2f}, {per_game.max():.2f} | {spurious.mean():.1f}, "
            f"{spurious.max():.0f} | {ari.mean():.3f}, {ari.min():.3f} | {sum(got['unrecognised']):.0f} |"
        )
    return lines


def _segment_end_scores(table: Table) -> list[str]:
    """Each method's raw score on every game after each segment (mean of seeds): the retention matrices in numbers,
    where a game lost in mid-sequence and relearnt on its revisit shows (the worst-drop column in one figure)."""
    short = [game.split("/")[-1] for game in table.games]
    header = " | ".join(f"after {i + 1}: {seg.game.split('/')[-1]}" for i, seg in enumerate(table.sequence.segments))
    lines = [
        "## Raw scores after each segment (mean of seeds)",
        "",
        f"Each cell: {' / '.join(short)}.",
        "",
        f"| method | {header} |",
        "|---" * (1 + len(table.sequence.segments)) + "|",
    ]
    for row in table.rows:
        mean = np.mean([run.retention() for run in row.runs], axis=0)
        cells = " | ".join(" / ".join(f"{v:.1f}" for v in scores) for scores in mean)
        lines.append(f"| {row.method} | {cells} |")
    return lines


def _figures(table: Table, row: MethodRow, out: Path) -> list[Path]:
    steps = sorted(set.intersection(*(set(run.steps) for run in row.runs)))
    scores = np.array([run.scores[[run.steps.index(s) for s in steps]] for run in row.runs])
    random = [table.random[g] for g in table.games]
    curves = plots.score_curves(
        steps,
        scores.mean(axis=0),
        table.games,
        table.sequence,
        random,
        spread=(scores.min(axis=0), scores.max(axis=0)),
        reference=table.reference_mean().tolist(),
        title=f"{row.method}: score on every game (mean of {len(row.runs)} seed(s), band: min–max)",
    )
    heatmap = plots.retention_heatmap(
        np.mean(row.normalised, axis=0),  # NaN only where a game has no scale, in every seed alike
        table.games,
        table.sequence,
        label="normalised score",
        title=f"{row.method}: retention, 0 random, 1 reference\n(mean of {len(row.runs)} seed(s))",
    )
    paths = [out / f"{row.method}_scores.png", out / f"{row.method}_retention.png"]
    plots.save(curves, paths[0])
    plots.save(heatmap, paths[1])
    return paths


def _as_json(table: Table) -> dict[str, Any]:
    return {
        "settings": table.settings,
        "sequence": table.sequence.to_list(),
        "games": table.games,
        "random": table.random,
        "reference": {g: {"mean": float(np.mean(v)), "seeds": v} for g, v in table.reference.items()},
        "notes": table.notes,
        "metrics": {key: description for key, (_, description) in METRICS.items()},
        "differences": [
            {"row": d.row, "compared_with": d.baseline, "comparison": d.key, "game": d.game, "clear": d.clear}
            | dataclasses.asdict(d.interval)
            for d in table.differences
        ],
        "methods": {
            row.method: {
                **{k: dataclasses.asdict(i) if i else None for k, i in row.intervals.items()},
                "run_seconds_mean": row.seconds,
                "ms_per_update": row.ms_per_update,
                "worst_drop_per_game": {
                    g: dataclasses.asdict(i) if i else None
                    for g, i in zip(table.games, table.worst_drop_per_game.get(row.method, []), strict=False)
                },
                "runs": [
                    {
                        "run": run.name,
                        "seconds": run.seconds,
                        "updates": run.updates,
                        "retention_score": run.retention(),
                        "retention_normalised": normalised,
                        "per_game": {k: row.per_game[k][i] for k in METRICS},
                        "task_inference": run.task_inference,
                    }
                    for i, (run, normalised) in enumerate(zip(row.runs, row.normalised, strict=True))
                ],
            }
            for row in table.rows
        },
    }


def _interval_cells(row: MethodRow) -> list[float]:
    cells: list[float] = []
    for key in METRICS:
        i = row.intervals[key]
        cells += [i.value, i.low, i.high] if i else [math.nan] * 3
    return cells


def _format_interval(interval: Interval | None) -> str:
    if interval is None:
        return "–"
    return f"{interval.value:.2f} [{interval.low:.2f}, {interval.high:.2f}]"


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
