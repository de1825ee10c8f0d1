"""The GPU check behind ``scripts/gpu_check.py``: speed, Atari learning and a revisit, each part time-boxed.

Parts, in order, each with a budget and all within one deadline (a part that would pass it stops early and reports
what it did; the report is rewritten after every part, so a killed run leaves the parts before it):

1. ``speed``: agent steps/s of stock SB3 ``DQN`` and of this agent with everything on (forget-me-not task inference,
   per-task frame replay, EWC with two anchors: ``agents.bench.speed_benchmark``'s ``sb3`` and ``full`` variants)
   on one game at one update per 4 transitions, for each ``n_envs``: one env on the Python chain, more through
   ale-py's C++ vector env (``full_cpp``; SB3 steps its own Atari chain in a ``DummyVecEnv``);
2. ``update``: ms per update of the full agent, plain and with each GPU lever (``agents.bench.gpu_levers``);
3. ``learning``: the game trained at the fastest setting of part 1, evaluated at even wall-clock intervals, against
   the random score and DQN's published score at that many frames (``PUBLISHED_DQN``);
4. ``sequence``: if time remains, game → other game → game with fine-tuning and with EWC, each game scored at every
   segment end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from agents.bench.gpu_levers import PLAIN, time_update_levers
from agents.bench.speed_benchmark import CPP, SETUP_POOL, BenchSettings, run_variant
from agents.evaluation.periodic_evaluation import PeriodicEvaluationCallback, evaluate_games
from agents.run.config import Config, config_from_dict
from agents.run.training import train
from agents.sb3.continual_dqn import ContinualDQN
from envs.atari import AtariSettings
from envs.games import canonical_game
from envs.scores import random_score

REPORT_FORMAT = 1
FRAMES_PER_ITERATION = 1_000_000  # Dopamine: an iteration is 250k agent steps of 4 frames
# DQN on Breakout in Dopamine's baselines: the mean return of the training episodes of each iteration (k: frames
# k·1M to (k+1)·1M), mean of its 5 runs, for iterations 0-5. Computed from google/dopamine
# baselines/atari/data/breakout.json at commit 5873f5494ee0c2d7c016d0ab2ad530354fec59d0 (agents "DQN": Nature DQN
# with RMSProp; "DQN (Adam + MSE in JAX)": Dopamine's JAX DQN with Adam 6.25e-5). Their protocol differs from this
# check's: sticky actions 0.25, training ε 0.01 after 1M frames, 80k frames before learning, training returns.
PUBLISHED_DQN = {
    "Breakout": {
        "source": "google/dopamine baselines/atari/data/breakout.json (commit 5873f54), mean of 5 runs per 1M frames",
        "DQN": (1.64, 3.06, 3.94, 6.69, 9.34, 12.08),
        "DQN (Adam + MSE in JAX)": (1.79, 6.52, 15.23, 18.86, 23.74, 27.84),
    }
}


@dataclass
class CheckSettings:
    """Budgets (seconds) and sizes of the check; ``dry_run()`` gives the CPU test's tiny ones."""

    game: str = "Breakout"
    other_game: str = "Pong"  # the sequence's second game
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu (noted in the report)
    deadline_s: float = 530.0  # the whole check, from the script's start (set-up included)
    margin_s: float = 10.0  # kept free before the deadline (the report, the process's end)
    speed_s: float = 100.0
    update_s: float = 60.0  # torch.compile's first call takes most of it
    learning_s: float = 260.0  # "about 5 minutes"; less when earlier parts left less
    sequence_s: float = 150.0  # at most: only what the deadline leaves (~60 s after 40 s of set-up and imports)
    min_sequence_s: float = 40.0  # below this the sequence part is skipped
    # speed
    n_envs: tuple[int, ...] = (1, 8, 16)
    speed_steps: int = 2_000  # timed agent steps per run
    learning_starts: int = 1_000
    warmup: int = 200  # per env 8 (scaled up with n_envs: the task inference's delay costs n_envs transitions a step)
    setup_steps: int = 300  # per set-up game (scaled up with n_envs, so that env 0 sees enough frames of each)
    buffer_size: int = 10_000
    fisher_batches: int = 2
    # update
    update_capacity: int = 10_000
    update_iters: int = 50
    update_repeats: int = 3
    compile: bool = True  # only on CUDA (the dry run on a CPU skips it)
    # learning and sequence
    learn_buffer: int = 100_000  # transitions per task
    learn_starts: int = 20_000  # Dopamine's min_replay_history, agent steps
    exploration_steps: int = 250_000  # ε 1 → 0.01, Dopamine's epsilon_decay_period
    target_update_interval: int = 8_000  # Dopamine's target_update_period, agent steps
    evaluations: int = 6  # evaluations over the learning part, the first before any update
    eval_episodes: int = 8  # played side by side
    eval_max_frames: int = 18_000  # cap of an evaluation episode (5 minutes of play)
    sequence_fisher_batches: int = 100

    @classmethod
    def dry_run(cls, **overrides: Any) -> CheckSettings:
        """Tiny budgets for a CPU (the test suite): every part runs, for seconds."""
        tiny: dict[str, Any] = {
            "deadline_s": 110.0,
            "margin_s": 2.0,
            "speed_s": 80.0,
            "update_s": 20.0,
            "learning_s": 10.0,
            "sequence_s": 18.0,
            "min_sequence_s": 10.0,
            "n_envs": (1, 2),
            "speed_steps": 8,
            "learning_starts": 64,
            "warmup": 64,
            "setup_steps": 120,
            "buffer_size": 500,
            "update_capacity": 300,
            "update_iters": 2,
            "update_repeats": 1,
            "learn_buffer": 2_000,
            "learn_starts": 64,
            "exploration_steps": 500,
            "target_update_interval": 100,
            "evaluations": 2,
            "eval_episodes": 1,
            "eval_max_frames": 800,
            "sequence_fisher_batches": 2,
        }
        return cls(**{**tiny, **overrides})

    def __post_init__(self) -> None:
        self.game, self.other_game = canonical_game(self.game), canonical_game(self.other_game)
        if self.game == self.other_game:
            raise ValueError(f"the sequence's two games must differ, got {self.game} twice")
        if not self.n_envs or min(self.n_envs) < 1:
            raise ValueError(f"n_envs must list ints >= 1, got {self.n_envs}")
        if self.deadline_s <= self.margin_s:
            raise ValueError(f"the deadline ({self.deadline_s} s) must exceed the margin ({self.margin_s} s)")


def resolve_device(wanted: str) -> tuple[str, list[str]]:
    """The torch device to use and the notes that explain a fallback."""
    if wanted == "auto":
        if th.cuda.is_available():
            return "cuda", []
        return "cpu", ["no CUDA device: the check ran on the CPU, so every figure here is a CPU figure, not a GPU one"]
    if wanted.startswith("cuda") and not th.cuda.is_available():
        raise ValueError(f"--device {wanted}: torch sees no CUDA device (torch {th.__version__}); use auto or cpu")
    return wanted, []


def machine(device: str) -> dict[str, Any]:
    """What ran the check: the GPU (if any), the CPUs, torch, Python."""
    info: dict[str, Any] = {
        "device": device,
        "torch": th.__version__,
        "cuda": th.version.cuda,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": None,
    }
    if device.startswith("cuda"):
        props = th.cuda.get_device_properties(th.device(device))
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return info


@dataclass
class Check:
    """A running check: its settings, deadline and report (a JSON-able dict, rewritten after every part)."""

    settings: CheckSettings
    out: Path
    started: float  # time.perf_counter() at the script's start
    command: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    write: Callable[[dict[str, Any], Path], None] = lambda report, out: None

    @property
    def deadline(self) -> float:
        return self.started + self.settings.deadline_s - self.settings.margin_s

    def run_part(self, name: str, budget: float, body: Callable[[float], dict[str, Any]], minimum: float = 1.0) -> None:
        """Run ``body(part_deadline)`` within ``min(budget, time left)``; record its result, or why it has none."""
        started = time.perf_counter()
        allowed = min(budget, self.deadline - started)
        part: dict[str, Any] = {"budget_s": round(budget, 1), "allowed_s": round(allowed, 1)}
        if allowed < minimum:
            part.update(status="skipped", note=f"{allowed:.0f} s left before the deadline, {minimum:.0f} s needed")
        else:
            try:
                part.update(status="done")
                part.update(body(started + allowed))
            except Exception as err:  # one part's failure must not cost the others' figures
                part.update(status="failed", error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(-3))
        part["elapsed_s"] = round(time.perf_counter() - started, 1)
        self.report["parts"][name] = part
        self.report["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        self.write(self.report, self.out)
        print(f"[gpu_check] {name}: {part['status']} in {part['elapsed_s']} s", flush=True)


# --- part 1: agent steps per second -----------------------------------------------------------------------------
def speed_settings(s: CheckSettings, device: str, n_envs: int, deadline: float) -> BenchSettings:
    """The benchmark's settings for ``n_envs``: set-up and warm-up scaled so that env 0 alone sees enough frames."""
    scale = max(1, n_envs // 8)
    return BenchSettings(
        game=s.game,
        seed=s.seed,
        steps=s.speed_steps,
        warmup=s.warmup * scale,
        buffer_size=s.buffer_size,
        learning_starts=s.learning_starts,
        setup_games=tuple(g for g in SETUP_POOL if g != s.game)[:2],
        setup_steps=s.setup_steps * scale,
        fisher_batches=s.fisher_batches,
        device=device,
        n_envs=n_envs,
        vector="python",  # the full_cpp variant switches to cpp itself
        deadline=deadline,
    )


def speed_part(s: CheckSettings, device: str, deadline: float) -> dict[str, Any]:
    """sb3 and the full agent side by side for each ``n_envs`` (the full agent on the C++ env from 2 envs), one run
    each; a run may use the part's time less a reserve for each run after it (half an even share), so that a slow
    run cannot crowd out the rest."""
    runs: list[dict[str, Any]] = []
    status = "done"
    plan = [(n, variant) for n in s.n_envs for variant in ("sb3", "full" if n == 1 else "full" + CPP)]
    reserve = (deadline - time.perf_counter()) / (2 * len(plan))
    for k, (n, variant) in enumerate(plan):
        now = time.perf_counter()
        if now >= deadline:
            runs.append({"n_envs": n, "variant": variant, "status": "not run: the part's budget was spent"})
            status = "partial"
            continue
        row: dict[str, Any] = {"n_envs": n, "variant": variant}
        try:
            run_deadline = deadline - reserve * (len(plan) - k - 1)
            timed = run_variant(variant, speed_settings(s, device, n, run_deadline))
            row.update(
                status="cut short by the budget" if timed.timed_steps < s.speed_steps else "done",
                steps_per_s=round(timed.steps_per_s, 1),
                timed_steps=timed.timed_steps,
                updates=timed.updates,
                peak_rss_mib=round(timed.peak_rss / 2**20),
                **timed.notes,
            )
        except Exception as err:
            row.update(status=f"failed: {type(err).__name__}: {err}")
            status = "partial"
        runs.append(row)
        print(f"[gpu_check] speed {row}", flush=True)
    sb3 = {r["n_envs"]: r["steps_per_s"] for r in runs if r["variant"] == "sb3" and "steps_per_s" in r}
    for r in runs:
        if "steps_per_s" in r and r["n_envs"] in sb3:
            r["vs_sb3"] = round(r["steps_per_s"] / sb3[r["n_envs"]], 3)
    ours = [r for r in runs if r["variant"] != "sb3" and "steps_per_s" in r]
    fastest = max(ours, key=lambda r: r["steps_per_s"]) if ours else None
    result: dict[str, Any] = {"status": status, "runs": runs, "game": s.game, "updates_per_transition": 0.25}
    if fastest is not None:
        result["fastest"] = {
            "n_envs": fastest["n_envs"],
            "vector": "cpp" if fastest["variant"].endswith(CPP) else "python",
            "steps_per_s": fastest["steps_per_s"],
        }
    return result


# --- part 2: one update -----------------------------------------------------------------------------------------
def update_part(s: CheckSettings, device: str, deadline: float) -> dict[str, Any]:
    times = time_update_levers(
        th.device(device),
        capacity=s.update_capacity,
        iters=s.update_iters,
        repeats=s.update_repeats,
        compile=s.compile and device.startswith("cuda"),
        deadline=deadline,
    )
    plain = times.ms[PLAIN]
    rows = [
        {"lever": name, "ms": round(ms, 3), "speedup_vs_plain": round(plain / ms, 2)} for name, ms in times.ms.items()
    ]
    rows += [{"lever": name, "skipped": why} for name, why in times.skipped.items()]
    return {"rows": rows, "compile_s": None if times.compile_seconds is None else round(times.compile_seconds, 1)}


# --- parts 3 and 4: learning ------------------------------------------------------------------------------------
def learning_config(
    s: CheckSettings, device: str, fastest: dict[str, Any], segments: list[dict[str, Any]], method: str, name: str,
    **agent: Any,
) -> Config:  # fmt: skip
    """This agent with everything on (task inference, per-task frame replay, EWC) at the fastest setting; ``agent``:
    overrides of its ``agent`` section."""
    return config_from_dict(
        {
            "run": {"name": name, "seed": s.seed, "device": device, "progress_bar": False, "checkpoint_every": 0},
            "sequence": {"segments": segments},
            "env": {"sticky_action_prob": 0.0, "terminal_on_life_loss": False},
            "task": {"source": "fmn"},
            "agent": {
                "network": "nature",
                "buffer_size": s.learn_buffer,
                "learning_starts": s.learn_starts,
                "exploration_steps": s.exploration_steps,
                "target_update_interval": s.target_update_interval,
                "train_freq": 4,
                "gradient_steps": 1,
                "n_envs": fastest["n_envs"],
                "vector": fastest["vector"],
                "replay": "frames",
                **agent,
            },
            "method": {"name": method, **({"ewc": {"batches": s.sequence_fisher_batches}} if method == "ewc" else {})},
            "eval": {"enabled": False},
        }
    )


class TimedEvaluation(BaseCallback):
    """Scores ``game`` at even wall-clock intervals up to ``deadline``, then stops training (last score included).

    Training stops early enough for the last evaluation to fit: at ``deadline`` less 1.5 × the longest evaluation so
    far (plus a second).
    """

    model: ContinualDQN

    def __init__(self, game: str, settings: AtariSettings, evaluations: int, episodes: int, deadline: float) -> None:
        super().__init__()
        self.game, self.settings, self.episodes, self.deadline = game, settings, episodes, deadline
        self.evaluations = max(evaluations, 2)
        self.history: list[dict[str, Any]] = []
        self.longest = 0.0
        self.next_at = 0.0
        self.interval = 0.0
        self.train_started = 0.0

    def _on_training_start(self) -> None:
        self.train_started = time.perf_counter()
        self.interval = (self.deadline - self.train_started) / (self.evaluations - 1)
        self.next_at = self.train_started

    def _on_step(self) -> bool:
        now = time.perf_counter()
        last = now >= self.deadline - 1.5 * self.longest - 1.0
        if last or now >= self.next_at:
            self.evaluate()
            self.next_at += self.interval
        return not last

    def evaluate(self) -> None:
        started = time.perf_counter()
        (result,) = evaluate_games(self.model, [self.game], self.settings, self.episodes, 0.05, "configured", 0)
        seconds = time.perf_counter() - started
        self.longest = max(self.longest, seconds)
        steps = self.model.num_timesteps
        self.history.append(
            {
                "step": steps,
                "frames": steps * self.settings.frame_skip,
                "train_seconds": round(started - self.train_started, 1),
                "score": round(result.score, 2),
                "scores": list(result.scores),
                "eval_seconds": round(seconds, 1),
            }
        )
        print(f"[gpu_check] {self.game} at step {steps}: {result.score:.2f} ({seconds:.1f} s)", flush=True)


def published_at(game: str, frames: int) -> dict[str, Any] | None:
    """DQN's published score for the 1M-frame iteration holding ``frames`` (the last tabled one beyond it)."""
    table = PUBLISHED_DQN.get(game)
    if table is None:
        return None
    iterations = len(table["DQN"])
    k = min(frames // FRAMES_PER_ITERATION, iterations - 1)
    return {
        "source": table["source"],
        "iteration": k,
        "frames": f"{k * FRAMES_PER_ITERATION:,}-{(k + 1) * FRAMES_PER_ITERATION:,}",
        "beyond_table": frames >= iterations * FRAMES_PER_ITERATION,
        **{agent: values[k] for agent, values in table.items() if agent != "source"},
    }


def eval_settings(config: Config, s: CheckSettings) -> AtariSettings:
    return dataclasses.replace(config.env, max_episode_frames=s.eval_max_frames)


def learning_part(s: CheckSettings, device: str, fastest: dict[str, Any], out: Path, deadline: float) -> dict[str, Any]:
    n = fastest["n_envs"]
    segments = [{"game": s.game, "steps": 1_000_000_000 // n * n}]  # ended by the clock, not by its length
    config = learning_config(s, device, fastest, segments, "ewc", "gpu_check_learning")
    evaluation = TimedEvaluation(s.game, eval_settings(config, s), s.evaluations, s.eval_episodes, deadline)
    result = train(config, out / "learning", overwrite=True, callbacks=[evaluation])
    steps = result.model.num_timesteps
    frames = steps * config.env.frame_skip
    for e in evaluation.history:  # DQN's published score at each evaluation's frames, for the curve side by side
        point = published_at(s.game, e["frames"])
        e["published"] = None if point is None else {k: v for k, v in point.items() if isinstance(v, float)}
    return {
        "game": s.game,
        "setting": {"n_envs": n, "vector": fastest["vector"], "updates_per_transition": 0.25, "device": device},
        "agent_steps": steps,
        "frames": frames,
        "seconds": round(result.seconds, 1),
        "steps_per_s": round(result.steps_per_second, 1),
        "tasks_created": result.model.n_tasks_created,
        "evaluations": evaluation.history,
        "random_score": random_score(s.game),
        "published": published_at(s.game, frames),
        "run_dir": str(out / "learning"),
        "protocol": (
            f"ε 1 → 0.01 over {s.exploration_steps:,} agent steps, learning from {s.learn_starts:,}, target sync every "
            f"{s.target_update_interval:,}, buffer {s.learn_buffer:,}, Adam 1e-4, Double DQN; evaluation ε 0.05, "
            f"{s.eval_episodes} episodes of at most {s.eval_max_frames:,} frames, no sticky actions"
        ),
    }


def sequence_part(
    s: CheckSettings, device: str, fastest: dict[str, Any], eval_seconds: float, out: Path, deadline: float
) -> dict[str, Any]:
    """game → other game → game, fine-tuning (method none) then EWC, each with half the time; scores per segment end.

    Segment lengths come from part 1's rate and the time left once the evaluations (two games at each of three
    segment ends, each as long as part 3's longest, ``eval_seconds``) and a set-up allowance are taken off.
    """
    n = fastest["n_envs"]
    per_run = (deadline - time.perf_counter()) / 2
    training = max(per_run - 3 * 2 * 1.2 * eval_seconds - 5.0, per_run / 4)
    steps = max(int(fastest["steps_per_s"] * training / 3) // n * n, 4 * n)
    games = [s.game, s.other_game, s.game]
    methods: dict[str, Any] = {}
    for k, method in enumerate(("none", "ewc")):
        run_deadline = time.perf_counter() + per_run if k == 0 else deadline
        segments = [{"game": g, "steps": steps} for g in games]
        short = {
            "learning_starts": max(min(s.learn_starts, steps // 4), 32),  # at least a minibatch
            "exploration_steps": min(s.exploration_steps, steps),
        }
        config = learning_config(s, device, fastest, segments, method, f"gpu_check_sequence_{method}", **short)
        ends = config.sequence.build().ends
        evaluation = PeriodicEvaluationCallback(
            config.sequence.build().games, eval_settings(config, s), ends, every=0, episodes=s.eval_episodes
        )
        stop = StopAt(run_deadline)
        result = train(config, out / f"sequence_{method}", overwrite=True, callbacks=[evaluation, stop])
        methods[method] = {
            "agent_steps": result.model.num_timesteps,
            "finished": result.model.num_timesteps >= ends[-1],
            "tasks_created": result.model.n_tasks_created,
            "after_segment": [
                {"step": step, "scores": {r.game: round(r.score, 2) for r in results}}
                for step, results in evaluation.history
            ],
        }
    return {"games": games, "steps_per_segment": steps, "methods": methods}


class StopAt(BaseCallback):
    """Stops training at a ``time.perf_counter()`` value."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def _on_step(self) -> bool:
        return time.perf_counter() < self.deadline


# --- the whole check --------------------------------------------------------------------------------------------
def run_check(
    s: CheckSettings, out: Path, started: float, command: str, write: Callable[[dict[str, Any], Path], None]
) -> dict[str, Any]:
    """All parts in order within the deadline; returns the report (also written after every part)."""
    device, notes = resolve_device(s.device)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "command": command,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": machine(device),
        "notes": notes,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(s).items()},
        "deadline_s": s.deadline_s,
        "parts": {},
    }
    check = Check(s, out, started, command, report, write)
    check.run_part("speed", s.speed_s, lambda d: speed_part(s, device, d))
    fastest = report["parts"]["speed"].get("fastest")
    if fastest is None:  # no measured rate: learn on one env, the plain setting
        fastest = {"n_envs": 1, "vector": "python", "steps_per_s": 0.0}
        notes.append("part 1 measured no rate of this agent: parts 3 and 4 use one env on the Python chain")
    check.run_part("update", s.update_s, lambda d: update_part(s, device, d))
    check.run_part("learning", s.learning_s, lambda d: learning_part(s, device, fastest, out, d))
    evaluations = report["parts"]["learning"].get("evaluations") or [{"eval_seconds": 5.0}]
    eval_seconds = max(e["eval_seconds"] for e in evaluations)
    if fastest["steps_per_s"] > 0:
        check.run_part(
            "sequence",
            s.sequence_s,
            lambda d: sequence_part(s, device, fastest, eval_seconds, out, d),
            minimum=s.min_sequence_s,
        )
    else:
        note = "part 1 measured no rate of this agent to size the segments with"
        report["parts"]["sequence"] = {"status": "skipped", "note": note, "budget_s": s.sequence_s}
        report["parts"]["sequence"].update(allowed_s=0.0, elapsed_s=0.0)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    write(report, out)
    return report


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=float) + "\n")
    tmp.replace(path)


__all__ = ["PUBLISHED_DQN", "CheckSettings", "published_at", "resolve_device", "run_check", "write_json"]
