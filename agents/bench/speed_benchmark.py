"""Agent steps per second of stock stable-baselines3 DQN against this agent, plus memory.

Three variants run on the same game, seed and hyperparameters (batch, one update per ``train_freq`` agent steps,
buffer size, Nature CNN, learning rate, ε):

- ``sb3``: stock SB3 ``DQN("CnnPolicy")`` on SB3's own Atari chain (``make_atari_env`` + ``VecFrameStack``), the
  full 18-action set, SB3's ``ReplayBuffer``;
- ``plain``: ``ContinualDQN`` with the continual machinery off: oracle task id, one game, no consolidation, the
  configured replay kind (``frames`` by default; ``plain_sb3_replay`` uses SB3's ``ReplayBuffer`` per task);
- ``full``: everything on: forget-me-not task inference, per-task frame buffers, EWC with two earlier anchors. The
  stream is ``setup_games[0]`` → ``setup_games[1]`` → ``game``; the task inference must itself detect both switches,
  and each switch computes that task's Fisher (``fisher_batches`` minibatches, few so that the set-up stays short).
  The timed segment is refused unless two EWC terms are active in every update.
- ``full8``: ``full`` after eight set-up games (``SETUP_POOL``): eight EWC anchors. With the closed-form penalty
  gradient (``cl_rl.consolidation``) an update costs the same as with two; autograd through each anchor grew with them.

MinAtar (``BenchSettings.for_minatar``): the same variants on MinAtar games with the MinAtar paper's network
(conv 16·3×3, fully connected 128; SB3 gets it as ``MinAtarCNN``, this agent as ``network: minatar`` with its
per-task gains), one update per agent step, DQN targets for both, SB3's ``ReplayBuffer`` for both.

Several envs (``n_envs``; ``scripts/bench_speed.py --n-envs 1,2,4,8``): both agents step ``n_envs`` copies of the
game in SB3's ``DummyVecEnv`` (this agent through ``agent.n_envs``, all envs switching games together) and keep one
update per ``train_freq`` transitions: ``agents.sb3.vector_schedule.vector_train_schedule`` gives both the same SB3
``train_freq`` / ``gradient_steps``. Rates are agent steps (transitions, all envs together) per second.

C++ vector env (``vector``; ``scripts/bench_speed.py --vector python,cpp``): a variant of this agent named with
``_cpp`` (``plain_cpp``, ``full_cpp``) runs it with ``agent.vector: cpp``, its envs in ale-py's C++ ``AtariVectorEnv``
(``envs.vector_sequence``) instead of ``DummyVecEnv``; ALE games only.

Only agent steps after ``learning_starts`` + ``warmup`` are timed, so every timed step is a training step with a
forward pass (ε is fixed at ``epsilon``; the default, 0.01, is the annealed value) and one update every
``train_freq`` steps. Peak resident memory is the process's high-water mark, reset before each variant through
``/proc/self/clear_refs`` (Linux ≥ 4.0; elsewhere the process-wide peak).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env as sb3_make_atari_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn
from torch.nn import functional as F

from agents.run.config import Config, LogConfig, config_from_dict, replay_bytes_per_task
from agents.run.plasticity import PlasticityCallback
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import ContinualDQN
from agents.sb3.networks import ARCHITECTURES
from agents.sb3.policy import ContinualDQNPolicy
from agents.sb3.replay import buffer_nbytes
from agents.sb3.vector_schedule import vector_train_schedule
from cl_rl.consolidation import QuadraticPenalty
from cl_rl.methods.quadratic import QuadraticMethod
from cl_rl.task_modulation import shared_parameters
from envs.games import ale_env_id, canonical_game

VARIANTS = ("sb3", "plain", "plain_sb3_replay", "plain_plasticity", "full", "full8")
CPP = "_cpp"  # suffix of a variant of this agent run on the C++ vector env (agent.vector: cpp), e.g. plain_cpp
# Earlier games of the full variants, in order (each must differ from the timed game and be told apart by the FMN).
SETUP_POOL = ("Breakout", "Freeway", "SpaceInvaders", "Seaquest", "Enduro", "Boxing", "MsPacman", "Asteroids", "Qbert")
EWC_PROTOCOL = (10, 50_000)  # the EWC paper's Atari protocol: 10 tasks × 50k transitions per task's buffer


@dataclass
class BenchSettings:
    """What every variant shares; defaults: the short ALE run's agent (configs/atari.yaml), ε annealed."""

    game: str = "Pong"  # the timed game
    seed: int = 0
    steps: int = 1_000  # timed agent steps per run
    warmup: int = 200  # training agent steps after learning_starts before the timer starts
    buffer_size: int = 10_000  # transitions per (task's) replay buffer
    learning_starts: int = 1_000  # transitions before the first update (per task for this agent)
    batch_size: int = 32
    train_freq: int = 4  # agent steps per update
    target_update_interval: int = 2_000  # agent steps between target-network syncs
    epsilon: float = 0.01  # fixed ε of every variant: a forward pass on 99% of the steps
    double_dqn: bool = True  # this agent's target (SB3's DQN has no Double-DQN option)
    setup_games: tuple[str, ...] = ("Breakout", "Freeway")  # earlier tasks of the full variant, each anchored by EWC
    setup_steps: int = 300  # agent steps of each set-up game (random actions: its buffer stays under learning_starts)
    fisher_batches: int = 2  # minibatches of each anchor's Fisher (the paper: 100; only the set-up pays for them)
    device: str = "cpu"
    network: str = "nature"  # this agent's torso (agents.sb3.networks); SB3 gets NatureCNN, or MinAtarCNN for minatar
    task_source: str = "fmn"  # the full variants' task ids: inferred (fmn) or the true game (oracle)
    n_envs: int = 1  # envs stepped side by side (DummyVecEnv) by every variant, at the same updates per transition
    vector: str = "python"  # how this agent steps its envs (agent.vector): python (DummyVecEnv) or cpp (AtariVectorEnv)
    # time.perf_counter() value at which a run stops: its rate is then taken over the steps timed so far (a
    # time-boxed check, scripts/gpu_check.py); a run stopped before its timed span began raises DeadlinePassed
    deadline: float = math.inf
    # agent steps between the plasticity diagnostics of the plain_plasticity variant (plain with them logged)
    plasticity_every: int = LogConfig().plasticity_every

    @classmethod
    def for_minatar(cls, **overrides: Any) -> BenchSettings:
        """MinAtar defaults: Breakout timed after SpaceInvaders and Freeway, one update per step, DQN targets."""
        defaults: dict[str, Any] = {
            "game": "MinAtar/Breakout",
            "setup_games": ("MinAtar/SpaceInvaders", "MinAtar/Freeway"),
            "train_freq": 1,
            "double_dqn": False,
            "network": "minatar",
        }
        return cls(**{**defaults, **overrides})

    @property
    def minatar(self) -> bool:
        return self.network == "minatar"

    def __post_init__(self) -> None:
        for name in ("steps", "buffer_size", "batch_size", "train_freq", "setup_steps", "fisher_batches", "n_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.learning_starts < self.batch_size:
            raise ValueError(
                f"warmup must be >= 0 and learning_starts >= batch_size, got {self.warmup} and {self.learning_starts}"
            )
        self.game = canonical_game(self.game)
        self.setup_games = tuple(canonical_game(g) for g in self.setup_games)
        if self.minatar != self.game.startswith("MinAtar/"):
            raise ValueError(f"network {self.network!r} does not fit the game {self.game}: use minatar for MinAtar")
        if self.game in self.setup_games:
            raise ValueError(f"the timed game {self.game} must differ from the set-up games {self.setup_games}")
        if self.vector not in ("python", "cpp") or (self.vector == "cpp" and self.minatar):
            raise ValueError(f"vector must be python, or cpp for ALE games (not MinAtar), got {self.vector!r}")

    @property
    def period(self) -> int:
        """Agent steps of one rollout with whole updates: lcm(train_freq, n_envs) (train_freq with one env)."""
        return math.lcm(self.train_freq, self.n_envs)

    def aligned(self, steps: int) -> int:
        """``steps`` rounded up to a multiple of ``period``, so that a span holds whole rollouts."""
        return -(-steps // self.period) * self.period

    @property
    def first_timed_step(self) -> int:
        """Agent step (of the timed game) at which the timer starts: a multiple of ``period``, after warm-up."""
        return self.aligned(self.learning_starts + self.warmup)


class DeadlinePassed(RuntimeError):
    """A run reached ``BenchSettings.deadline`` before its timed span began: it measured nothing."""


@dataclass
class VariantResult:
    name: str
    steps_per_s: float
    peak_rss: int  # bytes: the process's peak resident memory during this variant
    rss_before: int  # bytes resident when the variant started
    replay_bytes_per_transition: float  # bytes the timed task's buffer allocated per transition it can hold
    notes: dict[str, float] = field(default_factory=dict)
    cpu_steps_per_s: float = math.nan  # steps per second of this process's CPU time: less sensitive to other jobs
    timed_steps: int = 0  # agent steps in the timed span (fewer than asked when the deadline cut it short)
    updates: int = 0  # updates taken in the timed span


# --- memory -------------------------------------------------------------------------------------------------------
def _proc_status(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process; False where unsupported (then peaks are process-wide)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """Peak resident memory in bytes since the last ``reset_peak_rss`` (or since the process started)."""
    hwm = _proc_status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    rss = _proc_status("VmRSS")
    return rss if rss is not None else peak_rss()


# --- timing -------------------------------------------------------------------------------------------------------
class Stopwatch(BaseCallback):
    """Times agent steps ``start`` to ``start + steps`` (global step numbers) and then stops ``learn``.

    The clock starts right after step ``start`` is taken, so the span holds ``steps`` env steps and, with ``start``
    and ``steps`` multiples of ``train_freq``, exactly ``steps / train_freq`` updates. It reads wall-clock time and
    the process's CPU time: on a machine shared with other jobs the second varies much less between runs (with one
    torch thread and envs in the process, it is the time the process itself computed).
    """

    def __init__(
        self,
        start: int,
        steps: int,
        on_start: Callable[[BaseAlgorithm], None] | None = None,
        deadline: float = math.inf,
    ) -> None:
        super().__init__()
        self.start, self.steps, self.on_start, self.deadline = start, steps, on_start, deadline
        self.started = self.stopped = 0.0
        self.cpu_started = self.cpu_stopped = 0.0
        self.updates = 0  # updates (gradient steps) taken inside the timed span
        self.cut_short = False  # the deadline ended the span early; `steps` then counts the steps it timed

    def _on_step(self) -> bool:
        if self.num_timesteps == self.start:
            if self.on_start is not None:
                self.on_start(self.model)
            self.updates = -self.model._n_updates
            self.started = time.perf_counter()
            self.cpu_started = time.process_time()
        elif self.num_timesteps == self.start + self.steps:
            self._stop()
            return False
        elif time.perf_counter() > self.deadline:
            if self.num_timesteps < self.start:
                raise DeadlinePassed(f"the deadline passed at agent step {self.num_timesteps}, before {self.start}")
            self.steps, self.cut_short = self.num_timesteps - self.start, True
            self._stop()
            return False
        return True

    def _stop(self) -> None:
        self.stopped = time.perf_counter()
        self.cpu_stopped = time.process_time()
        self.updates += self.model._n_updates

    @property
    def steps_per_s(self) -> float:
        assert self.stopped > self.started > 0, "the timed span never ended: learn() stopped before it"
        return self.steps / (self.stopped - self.started)

    @property
    def cpu_steps_per_s(self) -> float:
        assert self.stopped > self.started > 0, "the timed span never ended: learn() stopped before it"
        return self.steps / max(self.cpu_stopped - self.cpu_started, 1e-9)


def _timed_learn(
    model: BaseAlgorithm, start: int, s: BenchSettings, on_start=None, callbacks: Sequence[BaseCallback] = ()
) -> Stopwatch:
    """Run ``model`` through the timed span (or to ``s.deadline``); the stopwatch holds the rates and counts."""
    steps = s.aligned(s.steps)
    watch = Stopwatch(start, steps, on_start, s.deadline)
    model.learn(start + steps + s.period, callback=[watch, *callbacks], log_interval=1_000_000, progress_bar=False)
    expected = watch.steps // s.train_freq
    # e.g. the timed task's buffer was still under learning_starts; a span cut short may end inside a rollout
    if watch.updates != expected and not (watch.cut_short and abs(watch.updates - expected) <= s.period):
        raise RuntimeError(
            f"{type(model).__name__}: the timed span of {watch.steps} agent steps held {watch.updates} updates, not "
            f"{expected}: raise warmup (the task inference's delay costs n_envs transitions a step)"
        )
    return watch


# --- the variants -------------------------------------------------------------------------------------------------
class MinAtarCNN(BaseFeaturesExtractor):
    """The ``minatar`` torso of ``agents.sb3.networks`` without per-task gains: stock SB3's network on MinAtar."""

    def __init__(self, observation_space: spaces.Box) -> None:
        ((out_channels, kernel, stride),), width = ARCHITECTURES["minatar"]
        super().__init__(observation_space, features_dim=width)
        channels, height, _ = observation_space.shape
        side = (height - kernel) // stride + 1
        self.net = nn.Sequential(
            nn.Conv2d(channels, out_channels, kernel, stride),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(out_channels * side * side, width),
            nn.ReLU(),
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


def _sb3_env(s: BenchSettings) -> VecEnv:
    """SB3's own Atari chain (``make_atari_env`` + ``VecFrameStack``), or the MinAtar env of this project."""
    if s.minatar:
        from envs.minatar import MinAtarSettings, make_minatar_env  # MinAtar's package only where it is asked for

        makers: list[Callable[[], gym.Env]] = [
            functools.partial(make_minatar_env, s.game, MinAtarSettings(), seed=s.seed + i) for i in range(s.n_envs)
        ]
        return DummyVecEnv(makers)
    env = sb3_make_atari_env(
        ale_env_id(s.game),
        n_envs=s.n_envs,
        seed=s.seed,
        env_kwargs={
            "frameskip": 1,  # SB3's AtariWrapper skips frames itself
            "repeat_action_probability": 0.0,
            "full_action_space": True,
            "max_num_frames_per_episode": 108_000,
        },
        wrapper_kwargs={"terminal_on_life_loss": False},  # as this agent's default run
    )
    return VecFrameStack(env, n_stack=4)


def run_sb3(s: BenchSettings) -> tuple[Stopwatch, float]:
    """Stock SB3 DQN (``CnnPolicy``) on SB3's Atari chain or on MinAtar; (its stopwatch, replay bytes per
    transition)."""
    env = _sb3_env(s)
    minatar = {"features_extractor_class": MinAtarCNN, "net_arch": []} if s.minatar else None
    train_freq, gradient_steps = vector_train_schedule(s.train_freq, 1, s.n_envs)
    model = DQN(
        "CnnPolicy",
        env,
        policy_kwargs=minatar,
        learning_rate=1e-4,
        buffer_size=s.buffer_size,
        learning_starts=s.learning_starts,
        batch_size=s.batch_size,
        gamma=0.99,
        train_freq=train_freq,
        gradient_steps=gradient_steps,
        target_update_interval=s.target_update_interval,
        exploration_initial_eps=s.epsilon,
        exploration_final_eps=s.epsilon,
        max_grad_norm=10.0,
        optimize_memory_usage=False,
        seed=s.seed,
        device=s.device,
    )
    try:
        watch = _timed_learn(model, s.first_timed_step, s)
        assert model.replay_buffer is not None  # DQN makes its buffer in __init__
        return watch, buffer_nbytes(model.replay_buffer) / s.buffer_size
    finally:
        env.close()


def setup_games(s: BenchSettings, anchors: int) -> tuple[str, ...]:
    """The earlier games of a full variant with ``anchors`` anchors: ``s.setup_games``, or the first of the pool."""
    if anchors == len(s.setup_games):
        return s.setup_games
    return tuple(g for g in SETUP_POOL if g != s.game)[:anchors]


def agent_config(s: BenchSettings, full: bool, replay: str | None = None, anchors: int = 2) -> Config:
    """This agent's config for a variant: the plain one plays ``game`` alone; the full one is preceded by set-up."""
    timed = s.first_timed_step + s.aligned(s.steps) + 4 * s.period
    segments = [{"game": g, "steps": s.aligned(s.setup_steps)} for g in setup_games(s, anchors)] if full else []
    segments.append({"game": s.game, "steps": timed})
    return config_from_dict(
        {
            "run": {"seed": s.seed, "device": s.device, "progress_bar": False, "checkpoint_every": 0},
            "sequence": {"segments": segments},
            "env": {"sticky_action_prob": 0.0, "terminal_on_life_loss": False},
            "task": {"source": s.task_source if full else "oracle"},
            "agent": {
                "network": s.network,
                "double_dqn": s.double_dqn,
                "buffer_size": s.buffer_size,
                "learning_starts": s.learning_starts,
                "batch_size": s.batch_size,
                "train_freq": s.train_freq,  # per transition: make_agent converts it for n_envs as run_sb3 does
                "gradient_steps": 1,
                "n_envs": s.n_envs,
                "vector": s.vector,
                "target_update_interval": s.target_update_interval,
                "exploration_initial_eps": s.epsilon,
                "exploration_final_eps": s.epsilon,
                "replay": replay or ("sb3" if s.minatar else "frames"),
            },
            "method": {"name": "ewc", "ewc": {"batches": s.fisher_batches}} if full else {"name": "none"},
            "eval": {"enabled": False},
        }
    )


def active_anchors(model: ContinualDQN) -> int:
    """EWC anchors active while the current task trains (the closed form gives no loss terms to count)."""
    return sum(len(m.core.active_keys(model.current_task)) for m in model.methods if isinstance(m, QuadraticMethod))


def _require_anchors(model: BaseAlgorithm, anchors: int) -> None:
    assert isinstance(model, ContinualDQN)
    n = active_anchors(model)
    if n < anchors:
        raise RuntimeError(
            f"the full variant must train under >= {anchors} EWC anchors, but {n} are active ("
            f"task {model.current_task} of {model.n_tasks_created}): the task inference missed a switch; "
            "lengthen setup_steps"
        )


def run_agent(
    s: BenchSettings, full: bool, replay: str | None = None, anchors: int = 2, plasticity: bool = False
) -> tuple[Stopwatch, float, dict[str, float]]:
    """This agent (plain or full); (its stopwatch, replay bytes per transition, notes on tasks and anchors).

    ``plasticity``: with the plasticity diagnostics every ``s.plasticity_every`` steps (agents/run/plasticity.py).
    """
    config = agent_config(s, full, replay, anchors)
    _, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    start = (len(setup_games(s, anchors)) * s.aligned(s.setup_steps) if full else 0) + s.first_timed_step
    try:
        check = functools.partial(_require_anchors, anchors=anchors) if full else None
        diagnostics = PlasticityCallback(s.plasticity_every)
        before_span = [0.0]  # the diagnostics' CPU seconds when the timed span starts

        def mark_span(_: BaseAlgorithm) -> None:
            before_span[0] = diagnostics.cpu_seconds

        on_start = mark_span if plasticity else check
        watch = _timed_learn(model, start, s, on_start=on_start, callbacks=[diagnostics] if plasticity else [])
        notes = {"tasks": float(model.n_tasks_created), "anchors": float(active_anchors(model))}
        if plasticity:
            span = watch.cpu_stopped - watch.cpu_started
            notes["diagnostics_cpu_share"] = (diagnostics.cpu_seconds - before_span[0]) / span
        return watch, buffer_nbytes(model.replay_buffer.buffer()) / s.buffer_size, notes
    finally:
        env.close()


def with_vectors(variants: tuple[str, ...], vectors: tuple[str, ...]) -> tuple[str, ...]:
    """``variants`` with each of this agent's also run on the C++ vector env, right after it, if ``vectors`` has cpp."""
    if "cpp" not in vectors:
        return variants
    return tuple(v for name in variants for v in ((name,) if name == "sb3" else (name, name + CPP)))


def run_variant(name: str, s: BenchSettings) -> VariantResult:
    """One timed run of variant ``name`` (``<variant>_cpp``: on the C++ vector env) with its peak resident memory."""
    if name.endswith(CPP) and name != "sb3" + CPP:
        result = run_variant(name.removesuffix(CPP), dataclasses.replace(s, vector="cpp"))
        return dataclasses.replace(result, name=name)
    gc.collect()
    reset_peak_rss()
    before = current_rss()
    notes: dict[str, float] = {}
    if name == "sb3":
        watch, per_transition = run_sb3(s)
    elif name == "plain":
        watch, per_transition, notes = run_agent(s, full=False)
    elif name == "plain_sb3_replay":
        watch, per_transition, notes = run_agent(s, full=False, replay="sb3")
    elif name == "plain_plasticity":
        watch, per_transition, notes = run_agent(s, full=False, plasticity=True)
    elif name == "full":
        watch, per_transition, notes = run_agent(s, full=True)
    elif name == "full8":
        watch, per_transition, notes = run_agent(s, full=True, anchors=8)
    else:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    result = VariantResult(
        name, watch.steps_per_s, peak_rss(), before, per_transition, notes, watch.cpu_steps_per_s, watch.steps,
        watch.updates,
    )  # fmt: skip
    gc.collect()
    return result


def run_benchmark(
    s: BenchSettings, variants: tuple[str, ...], repeats: int, report: Callable[[VariantResult], None] = print
) -> dict[str, list[VariantResult]]:
    """``repeats`` rounds of every variant, alternating (each round starts one variant later, to spread drift)."""
    results: dict[str, list[VariantResult]] = {v: [] for v in variants}
    for r in range(repeats):
        for i in range(len(variants)):
            name = variants[(i + r) % len(variants)]
            result = run_variant(name, s)
            results[name].append(result)
            report(result)
    return results


# --- the report ---------------------------------------------------------------------------------------------------
def median_rate(runs: list[VariantResult]) -> float:
    return float(np.median([r.steps_per_s for r in runs]))


def median_cpu_rate(runs: list[VariantResult]) -> float:
    return float(np.median([r.cpu_steps_per_s for r in runs]))


def ewc_protocol_bytes(replay: str) -> int:
    """Replay memory of the EWC paper's protocol (10 tasks × 50k transitions) with ``replay`` buffers."""
    tasks, size = EWC_PROTOCOL
    sequence = {"segments": [{"game": "Pong", "steps": 1}]}
    config = config_from_dict({"sequence": sequence, "agent": {"replay": replay, "buffer_size": size}})
    return tasks * replay_bytes_per_task(config)


def format_report(results: dict[str, list[VariantResult]], threads: int) -> list[str]:
    """The summary table, the memory figures and the last line ``ratio_full_vs_sb3=… ratio_plain_vs_sb3=… …``."""
    mib = 2**20
    base = median_rate(results["sb3"])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [f"torch threads: {threads}; load average at the end (1, 5, 15 min): {load}", ""]
    lines.append(
        f"{'variant':<17} {'steps/s (median)':>16} {'runs':>24} {'vs sb3':>7} {'peak RSS MiB':>12} {'(+MiB)':>7} "
        f"{'B/transition':>12} {'CPU steps/s':>11} {'vs sb3':>7}"
    )
    cpu_base = median_cpu_rate(results["sb3"])
    for name, runs in results.items():
        rates = ", ".join(f"{r.steps_per_s:.1f}" for r in runs)
        peak = max(r.peak_rss for r in runs) / mib
        growth = max(r.peak_rss - r.rss_before for r in runs) / mib
        lines.append(
            f"{name:<17} {median_rate(runs):>16.1f} {rates:>24} {median_rate(runs) / base:>6.2f}x "
            f"{peak:>12.0f} {growth:>+7.0f} {runs[0].replay_bytes_per_transition:>12,.0f} "
            f"{median_cpu_rate(runs):>11.1f} {median_cpu_rate(runs) / cpu_base:>6.2f}x"
        )
    lines.append("")
    tasks, size = EWC_PROTOCOL
    for replay in ("frames", "sb3"):
        total = ewc_protocol_bytes(replay)
        lines.append(
            f"EWC protocol ({tasks} tasks x {size:,} transitions), {replay} replay: "
            f"{total / size / tasks:,.0f} B/transition, {total / 2**30:.2f} GiB"
        )
    peak = max(r.peak_rss for runs in results.values() for r in runs)
    lines.append(f"peak RSS of any variant: {peak / mib:.0f} MiB (+MiB: above the RSS at the variant's start)")
    full, plain = median_rate(results["full"]), median_rate(results["plain"])
    cpu_full, cpu_plain = median_cpu_rate(results["full"]), median_cpu_rate(results["plain"])
    lines.append(
        f"per CPU second: ratio_full_vs_sb3={cpu_full / cpu_base:.3f} ratio_plain_vs_sb3={cpu_plain / cpu_base:.3f}"
    )
    if "plain_plasticity" in results:
        with_diagnostics = median_rate(results["plain_plasticity"]) / plain
        cpu_with_diagnostics = median_cpu_rate(results["plain_plasticity"]) / cpu_plain
        lines.append(
            f"ratio_plasticity_vs_plain={with_diagnostics:.3f} (per CPU second {cpu_with_diagnostics:.3f}; "
            "plasticity diagnostics logged at their cadence)"
        )
        shares = [r.notes["diagnostics_cpu_share"] for r in results["plain_plasticity"]]
        lines.append(
            f"diagnostics_cpu_share={float(np.median(shares)):.4f} (CPU time inside the diagnostics over the timed "
            "span's, median of runs: the ratio's part the machine's load cannot blur)"
        )
    if "full8" in results:
        lines.append(f"ratio_full8_vs_sb3={median_rate(results['full8']) / base:.3f} (eight EWC anchors)")
    lines.append(
        f"ratio_full_vs_sb3={full / base:.3f} ratio_plain_vs_sb3={plain / base:.3f} steps_per_s_full={full:.1f}"
    )
    return lines


def format_n_envs_report(by_n: dict[int, dict[str, list[VariantResult]]]) -> list[str]:
    """Agent steps/s (median) of every variant for each ``n_envs``, with each variant's ratio to ``sb3`` at that n,
    and each ``<variant>_cpp``'s ratio to ``<variant>`` (C++ vector env against DummyVecEnv)."""
    variants = list(next(iter(by_n.values())))
    twins = [v for v in variants if v.endswith(CPP) and v.removesuffix(CPP) in variants]
    rate_heads = [f"{v} steps/s" for v in variants]
    ratio_heads = [f"{v}/sb3" for v in variants if v != "sb3"] + [f"{v}/{v.removesuffix(CPP)}" for v in twins]
    widths = [max(15, len(h)) for h in rate_heads] + [max(10, len(h)) for h in ratio_heads]
    lines = [" ".join(f"{h:>{w}}" for h, w in zip(["n_envs", *rate_heads, *ratio_heads], [6, *widths], strict=True))]
    for n, results in by_n.items():
        rates = {v: median_rate(results[v]) for v in variants}
        cells = [f"{rates[v]:.1f}" for v in variants]
        cells += [f"{rates[v] / rates['sb3']:.2f}x" for v in variants if v != "sb3"]
        cells += [f"{rates[v] / rates[v.removesuffix(CPP)]:.2f}x" for v in twins]
        lines.append(" ".join(f"{c:>{w}}" for c, w in zip([str(n), *cells], [6, *widths], strict=True)))
    return lines


# --- one update, lever by lever -----------------------------------------------------------------------------------
def time_update_levers(network: str = "nature", repeats: int = 5, iters: int = 10, seed: int = 0) -> dict[str, float]:
    """Milliseconds per DQN update (batch 32, Double-DQN target, clipping, Adam) with each speed lever on or off.

    Random weights, batches and importances (timing only); EWC anchors of earlier tasks as the agent stores them.
    Variants run interleaved ``repeats`` times (median of each): Adam single-tensor / foreach / fused; the EWC penalty
    with 2 and 8 anchors by autograd through each anchor (``closed_form: false``) or in closed form; one forward over
    observations and next observations together instead of two.
    """
    th.manual_seed(seed)
    shape, n_actions = ((10, 10, 10), 6) if network == "minatar" else ((4, 84, 84), 18)
    space = spaces.Box(0, 255, shape, np.uint8)
    policy = ContinualDQNPolicy(space, spaces.Discrete(n_actions), lambda _: 1e-4, network=network)
    for _ in range(9):
        policy.add_task()
    q, target = policy.q_net, policy.q_net_target
    params = dict(shared_parameters(q))
    penalties = {}
    for anchors in (2, 8):
        penalty = QuadraticPenalty("ewc", params, lambda task: {n: th.rand_like(p) for n, p in params.items()})
        for task in range(anchors):
            penalty.on_task_switch(task, task + 1)
        penalties[anchors] = penalty
    policy.set_task(8)
    obs, next_obs = (th.randint(0, 256, (32, *shape), dtype=th.uint8) for _ in range(2))
    actions, rewards = th.randint(0, n_actions, (32, 1)), th.rand(32, 1)
    kinds: dict[str, dict[str, Any]] = {
        "single": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }
    adams = {kind: th.optim.Adam(policy.parameters(), lr=1e-4, **kwargs) for kind, kwargs in kinds.items()}

    def update(adam: str, anchors: int = 0, closed_form: bool = True, joint: bool = False) -> None:
        with th.no_grad():
            next_target = target(next_obs)
        if joint:
            both = q(th.cat([obs, next_obs]))
            q_obs, next_online = both[:32], both[32:].detach()
        else:
            with th.no_grad():
                next_online = q(next_obs)
            q_obs = q(obs)
        best = next_online.argmax(dim=1, keepdim=True)
        y = rewards + 0.99 * next_target.gather(1, best)
        loss = F.smooth_l1_loss(q_obs.gather(1, actions), y)
        if anchors and not closed_form:
            loss = loss + sum(penalties[anchors].penalty(8).values())
        adams[adam].zero_grad()
        loss.backward()
        if anchors and closed_form:
            penalties[anchors].add_gradient(8)
        th.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        adams[adam].step()

    variants: dict[str, Callable[[], None]] = {
        "Adam single-tensor": lambda: update("single"),
        "Adam foreach": lambda: update("foreach"),
        "Adam fused": lambda: update("fused"),
        "fused, one forward over obs and next obs": lambda: update("fused", joint=True),
        "fused + EWC 2 anchors, autograd": lambda: update("fused", 2, closed_form=False),
        "fused + EWC 8 anchors, autograd": lambda: update("fused", 8, closed_form=False),
        "fused + EWC 2 anchors, closed form": lambda: update("fused", 2),
        "fused + EWC 8 anchors, closed form": lambda: update("fused", 8),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            run()  # warm-up (and Adam's state)
            started = time.perf_counter()
            for _ in range(iters):
                run()
            times[name].append((time.perf_counter() - started) / iters * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


# --- the operators' own time --------------------------------------------------------------------------------------
def time_bare_steps(repeats: int = 3, iters: int = 300, seed: int = 0, compile: bool = False) -> dict[str, float]:
    """CPU ms of one MinAtar agent step's network work alone: a batch-1 act forward and one DQN update of 32 (target
    and online forwards, Huber loss, backward, clipping, Adam), in a bare loop without env, replay or RL loop.

    ``this agent``: the ``minatar`` network with per-task gains and fused Adam; ``sb3``: ``MinAtarCNN`` in SB3's
    ``DQNPolicy`` with its default (single-tensor) Adam. What a step of either agent costs beyond these is Python
    and the env; the ratio of the two bounds what removing that Python could give (docs/SPEED.md).

    ``compile``: also ``this agent, compiled``: the same step with its losses' forward (target, online, Huber) through
    ``torch.compile`` (inductor; the backward comes from AOTAutograd's compiled graph), the act, clipping and Adam
    eager; the key ``compile seconds`` is the first call's compile time.
    """
    th.manual_seed(seed)
    space, actions_space = spaces.Box(0, 255, (10, 10, 10), np.uint8), spaces.Discrete(6)
    ours = ContinualDQNPolicy(space, actions_space, lambda _: 1e-4, network="minatar", optimizer_kwargs={"fused": True})
    ours.add_task()
    ours.set_task(0)
    sb3 = DQNPolicy(space, actions_space, lambda _: 1e-4, features_extractor_class=MinAtarCNN, net_arch=[])
    obs, next_obs = (th.randint(0, 2, (32, 10, 10, 10), dtype=th.uint8) * 255 for _ in range(2))
    acts, rewards, dones = th.randint(0, 6, (32, 1)), th.rand(32, 1), th.zeros(32, 1)
    one = obs[:1]

    def td_loss(policy: DQNPolicy) -> th.Tensor:
        with th.no_grad():
            target = rewards + (1 - dones) * 0.99 * policy.q_net_target(next_obs).max(dim=1, keepdim=True)[0]
        return F.smooth_l1_loss(policy.q_net(obs).gather(1, acts), target)

    def step(policy: DQNPolicy, loss_of: Callable[[DQNPolicy], th.Tensor] = td_loss) -> None:
        with th.inference_mode():
            policy.q_net(one).argmax(dim=1).cpu()
        loss = loss_of(policy)
        policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(policy.q_net.parameters(), 10.0)
        policy.optimizer.step()

    variants: list[tuple[str, DQNPolicy, Callable[[DQNPolicy], th.Tensor]]] = [
        ("this agent", ours, td_loss),
        ("sb3", sb3, td_loss),
    ]
    compile_seconds = None
    if compile:
        compiled = th.compile(td_loss)
        started = time.perf_counter()
        step(ours, compiled)
        compile_seconds = time.perf_counter() - started
        variants.append(("this agent, compiled", ours, compiled))
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(repeats):
        for name, policy, loss_of in variants:
            for _ in range(20):
                step(policy, loss_of)
            started = time.process_time()
            for _ in range(iters):
                step(policy, loss_of)
            times[name].append((time.process_time() - started) / iters * 1e3)
    result = {name: float(np.median(t)) for name, t in times.items()}
    if compile_seconds is not None:
        result["compile seconds"] = compile_seconds
    return result
