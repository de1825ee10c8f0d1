"""Sweeps: a base config expanded over axes of config keys into runs, each in its own run directory.

A sweep file names a base config, overrides for every run, and axes (any config key → a list of values, or a
mapping label → value); the runs are the Cartesian product of the axes. Everything here is independent of Ray:
expansion and validation (every run's config goes through ``load_config`` before anything is scheduled), the state
of a run read from its directory (new, restart, resume, done), the task body ``run_one`` that trains or resumes a
run, and the progress file a run keeps up to date for the live view. ``agents/run/sweep_ray.py`` schedules
``run_one`` as Ray tasks.

The seed axis is ``run.seed``: runs that differ only in it are seeds of one group, and their ``run.name`` is the
group's name, which is how the comparison (``retention_eval.compare_runs``) aggregates them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.callbacks import BaseCallback

from agents.run.checkpoints import checkpoint_problem, list_checkpoints, write_atomically
from agents.run.config import Config, ConfigError, apply_override, config_from_dict, load_config
from agents.run.training import CHECKPOINT_DIR, CONFIG_NAME, resume, train
from agents.sb3.continual_dqn import CHECKPOINT_FORMAT

SEED_KEY = "run.seed"
PROGRESS_NAME = "progress.json"
SWEEP_KEYS = ("name", "base", "overrides", "axes", "resources", "max_retries", "evaluate")
EVALUATE_CHOICES = ("segments", "last", "none")


class SweepError(ConfigError):
    """A sweep file that cannot be run as written; the message names the problem and the fix."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its directory name, group (``run.name``), axis values and validated config."""

    name: str
    group: str
    labels: dict[str, str]
    config: Config
    chosen: dict[str, Any] = field(default_factory=dict)  # the flat keys the sweep file sets (base, overrides, axes)

    @property
    def total_steps(self) -> int:
        return self.config.sequence.build().total_steps


@dataclass
class Sweep:
    """A validated sweep file and its runs."""

    name: str
    base: Path
    runs: list[RunSpec]
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3
    evaluate: str = "segments"
    axes: dict[str, list[str]] = field(default_factory=dict)


# --- expansion and validation ------------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file, expanding and validating every run's config. Raises ``SweepError``."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} does not exist; pass a YAML file like configs/sweeps/example.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"sweep file {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise SweepError(f"sweep file {str(path)!r} must hold a mapping with keys base, axes, ...")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SWEEP_KEYS)}")
    if "base" not in data:
        raise SweepError(f"sweep file {str(path)!r} names no base config: add base: configs/<name>.yaml")
    base = _resolve_base(Path(str(data["base"])), path)
    overrides = _mapping(data.get("overrides") or {}, "overrides")
    axes = _axes(data.get("axes"))
    resources = _mapping(data.get("resources") or {}, "resources")
    extra = sorted(set(resources) - {"num_cpus", "num_gpus"})
    if extra:
        raise SweepError(f"resources: unknown key(s) {', '.join(extra)}; valid: num_cpus, num_gpus")
    sweep = Sweep(
        name=str(data.get("name") or path.stem),
        base=base,
        runs=expand(base, overrides, axes),
        num_cpus=_number(resources.get("num_cpus", 1), "resources.num_cpus", low=0),
        num_gpus=_number(resources.get("num_gpus", 0), "resources.num_gpus", low=0),
        max_retries=int(_number(data.get("max_retries", 3), "max_retries", low=0, integer=True)),
        evaluate=str(data.get("evaluate", "segments")),
        axes={key: list(values) for key, values in axes.items()},
    )
    if sweep.evaluate not in EVALUATE_CHOICES:
        raise SweepError(f"evaluate must be one of {', '.join(EVALUATE_CHOICES)}; got {sweep.evaluate!r}")
    return sweep


def expand(base: Path, overrides: Mapping[str, Any], axes: Mapping[str, Mapping[str, Any]]) -> list[RunSpec]:
    """The Cartesian product of ``axes`` (key → label → value) over ``base`` + ``overrides``, each run validated."""
    common = [_override(key, value) for key, value in overrides.items()]
    keys = list(axes)
    runs: list[RunSpec] = []
    for choice in itertools.product(*(axes[key].items() for key in keys)):
        labels = {key: label for key, (label, _) in zip(keys, choice, strict=True)}
        point = [_override(key, value) for key, (_, value) in zip(keys, choice, strict=True)]
        where = ", ".join(f"{k}={v}" for k, v in labels.items())
        try:
            config = load_config(base, [*common, *point])
            group = labels.get("run.name") or "_".join(v for k, v in labels.items() if k != SEED_KEY)
            group = group or config.run.name
            config = load_config(base, [*common, *point, _override("run.name", group), "run.progress_bar=false"])
        except ConfigError as err:
            raise SweepError(f"the run {where or '(no axes)'} has a bad config: {err}") from err
        explicit = _flat(_raw(base, [*common, *point]))
        chosen = {k: v for k, v in _flat(config.to_dict()).items() if k in explicit}
        runs.append(RunSpec(f"{group}__seed{config.run.seed}", group, labels, config, chosen))
    names = [run.name for run in runs]
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        raise SweepError(
            f"several runs would share the run directory {twins[0]!r}: two axis values have the same label. Give the "
            "axis as a mapping label → value (e.g. {a: [..], b: [..]}) so that every run gets its own name"
        )
    return runs


def _axes(raw: Any) -> dict[str, dict[str, Any]]:
    """``axes:`` as key → label → value; a list's labels are its values written as path-safe text."""
    if not isinstance(raw, dict) or not raw:
        raise SweepError("axes must be a non-empty mapping of config key → list of values, e.g. run.seed: [0, 1, 2]")
    axes: dict[str, dict[str, Any]] = {}
    for key, values in raw.items():
        if isinstance(values, dict):
            labelled = {_label(label): value for label, value in values.items()}
        elif isinstance(values, list):
            labelled = {_label(value): value for value in values}
            if len(labelled) < len(values):
                raise SweepError(f"axis {key!r}: two of its values {values!r} have the same label; give each once")
        else:
            raise SweepError(f"axis {key!r} must be a list of values (or a mapping label → value), got {values!r}")
        if not labelled:
            raise SweepError(f"axis {key!r} is empty: give it at least one value, or remove it")
        axes[str(key)] = labelled
    return axes


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text).strip("-") or "-"


def _override(key: str, value: Any) -> str:
    """``key=value`` for ``apply_override``; JSON is YAML, so lists and mappings come through whole."""
    return f"{key}={json.dumps(value)}"


def _resolve_base(base: Path, sweep_file: Path) -> Path:
    if base.is_file():
        return base
    beside = sweep_file.parent / base
    if beside.is_file():
        return beside
    raise SweepError(
        f"base config {str(base)!r} does not exist (looked in the current directory and beside {str(sweep_file)!r}); "
        "name a YAML config such as configs/tiny.yaml"
    )


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SweepError(f"{where} must be a mapping of key → value, got {raw!r}")
    return {str(k): v for k, v in raw.items()}


def _number(value: Any, where: str, low: float, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < low:
        kind = "an integer" if integer else "a number"
        raise SweepError(f"{where} must be {kind} >= {low}, got {value!r}")
    return value


# --- the state of a run on disk ----------------------------------------------------------------------------------
def run_state(run_dir: Path, total_steps: int) -> str:
    """What a run needs: ``new`` (no directory), ``restart`` (stopped before its first checkpoint), ``resume``
    (has a checkpoint short of the end) or ``done`` (a whole checkpoint at the last step)."""
    if not (run_dir / CONFIG_NAME).is_file():
        return "new"
    found = list_checkpoints(run_dir / CHECKPOINT_DIR)
    if not found:
        return "restart"
    step, path = found[-1]
    if step >= total_steps and checkpoint_problem(path, CHECKPOINT_FORMAT) is None:
        return "done"
    return "resume"


def check_existing(run_dir: Path, spec: RunSpec) -> None:
    """Refuse a run directory written with another config (the sweep file changed since it was launched)."""
    if not (run_dir / CONFIG_NAME).is_file():
        return
    saved = _flat(load_config(run_dir / CONFIG_NAME).to_dict())
    changed = sorted(k for k, v in spec.chosen.items() if saved.get(k) != v)  # new defaults in the code do not count
    if changed:
        raise SweepError(
            f"{str(run_dir)!r} holds a run with another config ({', '.join(changed[:5])} differ): the sweep file "
            "changed since it was launched. Use another --sweep-dir (or name:) for the new sweep"
        )


def _raw(base: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The base file's mapping with ``overrides`` applied, before defaults: what the sweep sets explicitly."""
    data = yaml.safe_load(base.read_text()) or {}
    for override in overrides:
        apply_override(data, override)
    return data


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- the body of one run's task ----------------------------------------------------------------------------------
def run_one(run_dir: str, config: dict[str, Any], evaluate: str = "segments") -> dict[str, Any]:
    """Train, restart or resume the run in ``run_dir`` (whichever its directory calls for) up to its last step.

    Called again after its worker died, it resumes from the newest checkpoint, so a retry continues the run.
    Returns the run's state on disk afterwards and, when it finished, scores its checkpoints (cached in
    ``run_dir/eval``) so that the driver's comparison reads them back without playing.
    """
    path, cfg = Path(run_dir), config_from_dict(config)
    state = run_state(path, cfg.sequence.build().total_steps)
    progress = ProgressCallback(path / PROGRESS_NAME, action=state)
    if state == "new" or state == "restart":
        result = train(cfg, path, overwrite=state == "restart", callbacks=[progress])
    elif state == "resume":
        result = resume(path, callbacks=[progress])
    else:
        return {"run_dir": run_dir, "state": "done", "interrupted": None}
    progress.finish(result.interrupted or "finished", result.stopped_at)
    final = run_state(path, cfg.sequence.build().total_steps)
    if final == "done" and evaluate != "none":
        from agents.evaluation.retention_eval import evaluate_run  # plays the games: only where a run finished

        evaluate_run(path, evaluate, progress=False)
    return {"run_dir": run_dir, "state": final, "interrupted": result.interrupted, "seconds": result.seconds}


class ProgressCallback(BaseCallback):
    """Keeps ``progress.json`` in the run directory: step, current game, latest score per game, worker pid, and one
    entry per attempt (how it started: new, restart, resume from step N), rewritten at most every ``every_s``."""

    def __init__(self, path: Path, action: str, every_s: float = 0.5) -> None:
        super().__init__()
        self.path, self.action, self.every_s = path, action, every_s
        self.state: dict[str, Any] = {}
        self._written = 0.0

    def _on_training_start(self) -> None:
        old = read_progress(self.path.parent) or {}
        attempt = {"action": self.action, "from_step": self.num_timesteps, "pid": os.getpid(), "time": time.time()}
        self.state = {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "step": self.num_timesteps,
            "game": None,
            "scores": old.get("scores", {}),
            "attempts": [*old.get("attempts", []), attempt],
        }
        self._write()

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        self.state["step"], self.state["game"] = self.num_timesteps, info.get("game")
        episode = info.get("episode")
        if episode is not None:
            self.state["scores"][info["game"]] = float(episode["r"])
        if time.monotonic() - self._written >= self.every_s:
            self._write()
        return True

    def finish(self, status: str, step: int | None = None) -> None:
        """The run's end: ``status`` and, if it was stopped, the ``step`` it stopped at (its checkpoint's)."""
        if self.state:
            self.state["status"] = status
            if step is not None:
                self.state["step"] = step
            self._write()

    def _write(self) -> None:
        self.state["updated"] = time.time()
        text = json.dumps(self.state)
        write_atomically(self.path, lambda tmp: Path(tmp).write_text(text))
        self._written = time.monotonic()


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``progress.json`` (None when it has none yet or it cannot be read)."""
    try:
        return json.loads((run_dir / PROGRESS_NAME).read_text())
    except (OSError, ValueError):
        return None


def progress_line(name: str, total: int, state: str, progress: Mapping[str, Any] | None, width: int = 24) -> str:
    """One line of the live view: run, state, step of total, current game and latest score per game."""
    step = (progress or {}).get("step", total if state == "done" else 0)
    game = (progress or {}).get("game") or "-"
    scores = "  ".join(f"{g} {s:g}" for g, s in ((progress or {}).get("scores") or {}).items())
    percent = 100 * step / total if total else 0
    return f"  {name:<{width}} {state:<11} {step:>9,}/{total:<9,} {percent:3.0f}%  {game:<14} {scores}"


def format_plan(sweep: Sweep, states: Sequence[str]) -> str:
    """What a launch will do: how many runs are new, to resume or already done."""
    counts = {s: sum(1 for x in states if x == s) for s in ("new", "restart", "resume", "done")}
    axes = " × ".join(f"{k} ({len(v)})" for k, v in sweep.axes.items())
    return (
        f"sweep {sweep.name!r}: {len(sweep.runs)} runs ({axes}) from {sweep.base}; "
        f"{counts['new']} new, {counts['resume'] + counts['restart']} to resume, {counts['done']} done"
    )


__all__ = [
    "RunSpec",
    "Sweep",
    "SweepError",
    "check_existing",
    "compare_sweep",
    "expand",
    "format_plan",
    "load_sweep",
    "progress_line",
    "read_progress",
    "run_one",
    "run_state",
]


def compare_sweep(sweep: Sweep, sweep_dir: Path) -> str | None:
    """The comparison over the sweep's finished runs (IQM of end HNS per group with 95 % stratified-bootstrap
    intervals, ``retention_eval.compare_runs``), written to ``sweep_dir/comparison``; None when nothing to compare."""
    from agents.evaluation.retention_eval import compare_runs, evaluate_run, format_comparison

    if sweep.evaluate == "none":
        return None
    done = [sweep_dir / r.name for r in sweep.runs if run_state(sweep_dir / r.name, r.total_steps) == "done"]
    if not done:
        return None
    evaluations = [evaluate_run(run_dir, sweep.evaluate, progress=False) for run_dir in done]  # cached by the runs
    out = sweep_dir / "comparison"
    rows = compare_runs(evaluations, out)
    return f"{format_comparison(rows)}\nwritten: {out} (comparison.csv, comparison.json, comparison.png)"
