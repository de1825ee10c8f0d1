"""Builds a continual run from a ``Config`` and drives it: run directory, env stream, agent, logger, checkpoints."""

from __future__ import annotations

import functools
import json
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam, Logger, TensorBoardOutputFormat, configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from torch.utils.tensorboard import SummaryWriter

from agents.evaluation.periodic_evaluation import PeriodicEvaluationCallback
from agents.run.callbacks import (
    ContinualLoggingCallback,
    GracefulStopCallback,
    LiveOutputCallback,
    SegmentCheckpointCallback,
    StopRequest,
    TaskInferenceMonitor,
)
from agents.run.checkpoints import (
    CheckpointError,
    checkpoint_data,
    load_checkpoint,
    newest_valid_checkpoint,
    replay_path,
)
from agents.run.config import (
    RESUME_MAY_CHANGE,
    Config,
    ConfigError,
    flatten_settings,
    load_config,
    run_identity,
    save_config,
)
from agents.run.lock import LOCK_NAME, DirectoryError, directory_lock, directory_problem
from agents.run.plasticity import PlasticityCallback
from agents.run.rng import restore_rng_state
from agents.sb3.continual_dqn import CHECKPOINT_FORMAT, ContinualDQN
from agents.sb3.frame_replay_buffer import FrameStackReplayBuffer
from agents.sb3.vector_schedule import vector_train_schedule
from cl_rl.methods import REGISTRY, parse_method_names
from cl_rl.task_inference import FlatFMN
from cl_rl.task_source import OracleTaskSource, TaskSource
from envs.game_env import frames_per_step, make_game_env
from envs.sequence import GameSequence, GameStream, ParallelSequence
from envs.vector_sequence import AtariSequenceVecEnv

CONFIG_NAME = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"


class RunDirError(ValueError):
    """The run directory cannot be used as asked (already holds a run, holds none to resume, is not a writable
    directory, or another process writes it)."""


@dataclass
class RunResult:
    run_dir: Path
    model: ContinualDQN
    last_scores: dict[str, list[float]]
    seconds: float
    interrupted: str | None = None  # the signal that stopped the run early (SIGINT, SIGTERM), if any
    last_checkpoint: Path | None = None
    start_step: int = 0  # agent steps already done when this process started (a resumed run's checkpoint step)
    finished_before: bool = False  # resumed a run that had already finished: nothing was trained or written
    stopped_at: int | None = None  # interrupted: the agent step it stopped at (its checkpoint's)
    failed_checkpoints: tuple[str, ...] = ()  # checkpoints that could not be written (disk full), one line each

    @property
    def steps_per_second(self) -> float:
        """Agent steps per second of this process (evaluations and checkpoints included)."""
        return (self.model.num_timesteps - self.start_step) / self.seconds if self.seconds > 0 else 0.0


def new_run_dir(config: Config, root: Path = Path("runs")) -> Path:
    """A readable, unique directory name: ``<name>__seed<seed>__<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{config.run.name}__seed{config.run.seed}__{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def apply_threads(threads: int) -> None:
    """Set torch's intra-op CPU threads (``run.threads``; 0 leaves torch's default, one per core)."""
    if threads > 0:
        torch.set_num_threads(threads)


def check_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse a run directory that cannot be written (a file, a path under a file, no write permission) or, unless
    ``overwrite``, that already holds a run; writes nothing."""
    problem = directory_problem(run_dir)
    if problem is not None:
        raise RunDirError(f"run directory {str(run_dir)!r} {problem}; choose another --run-dir")
    if run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()) and not overwrite:
        raise RunDirError(
            f"run directory {str(run_dir)!r} already holds files. Continue it with --resume {run_dir}, "
            "choose another --run-dir, or pass --overwrite to delete it and start again."
        )


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """With ``run_dir``'s lock held: check it again (no other writer can add files now) and empty it, lock aside."""
    check_run_dir(run_dir, overwrite)
    for path in run_dir.iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock (``agents.run.lock``): a second writer gets a ``RunDirError`` naming the first."""
    try:
        with directory_lock(run_dir):
            yield
    except DirectoryError as err:  # another writer holds it, or it cannot be written
        raise RunDirError(str(err)) from None


def make_stream(config: Config, sequence: GameSequence) -> tuple[GameStream, VecEnv]:
    """The game stream as ``agent.n_envs`` envs that switch games together, and the SB3 ``VecEnv`` that steps them.

    ``agent.vector: python`` (the default): ``ParallelSequence`` in SB3's ``DummyVecEnv`` (envs stepped one after
    another in this process), every env the same Python chain as the one-env stream, for both families, so
    ``n_envs`` changes the amount of parallel experience but not the games. ``cpp``: ALE games in ale-py's C++
    ``AtariVectorEnv`` (``envs.vector_sequence.AtariSequenceVecEnv``, stream and ``VecEnv`` in one), which emulates
    in worker threads but draws no-op starts and seeds otherwise and takes no NOOP after a life loss
    (``envs/vector.py``). Not ``SubprocVecEnv``: on this project's 2-core CPU the update, not the emulator, bounds
    agent steps/s (docs/SPEED.md), so worker processes would not pay.
    """
    if config.agent.vector == "cpp":
        vec = AtariSequenceVecEnv(sequence, config.env, config.agent.n_envs)
        return vec, vec
    stream = ParallelSequence(sequence, functools.partial(make_game_env, settings=config.env), config.agent.n_envs)
    return stream, DummyVecEnv([functools.partial(lambda env: env, env) for env in stream.envs])


def make_task_source(config: Config) -> TaskSource:
    """The configured source of task ids: inferred from frames (``fmn``) or the true game (``oracle``)."""
    return FlatFMN(config.task.fmn) if config.task.source == "fmn" else OracleTaskSource()


def describe_run(config: Config, device: torch.device) -> str:
    """The run's first line: its games, the continual-learning method(s), where task ids come from, the device."""
    sequence = config.sequence.build()
    games = " → ".join(segment.game for segment in sequence.segments)
    names = parse_method_names(config.method.name)
    methods = (
        " + ".join(f"{n}, {REGISTRY[n].summary}" for n in names) or "none, fine-tuning: nothing protects earlier games"
    )
    tasks = "inferred from the observations (fmn)" if config.task.source == "fmn" else "the true game (oracle)"
    threads = f", {torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else ""
    return (
        f"{config.run.name}: {games}, {sequence.total_steps:,} agent steps\n  method: {methods}\n"
        f"  task ids: {tasks}; device: {device}{threads}"
    )


def make_agent(config: Config, env: VecEnv) -> ContinualDQN:
    a = config.agent
    train_freq, gradient_steps = vector_train_schedule(a.train_freq, a.gradient_steps, env.num_envs)
    return ContinualDQN(
        "ContinualCnnPolicy",
        env,
        task_source=make_task_source(config),
        double_dqn=a.double_dqn,
        exploration_steps=a.exploration_steps,
        exploration=a.exploration,
        ez_mu=a.ez_mu,
        learning_rate=a.learning_rate,
        buffer_size=a.buffer_size,
        learning_starts=a.learning_starts,
        batch_size=a.batch_size,
        gamma=a.gamma,
        train_freq=train_freq,  # in vector steps, so that gradient_steps / train_freq updates per transition stay
        gradient_steps=gradient_steps,
        target_update_interval=a.target_update_interval,
        exploration_initial_eps=a.exploration_initial_eps,
        exploration_final_eps=a.exploration_final_eps,
        max_grad_norm=a.max_grad_norm,
        policy_kwargs={"network": a.network, "gains": a.gains, "layer_norm": a.layer_norm},
        replay_buffer_kwargs={
            "buffer_class": FrameStackReplayBuffer if a.replay == "frames" else replay_class(a.n_step),
            "buffer_kwargs": {"n_steps": a.n_step, "gamma": a.gamma} if a.n_step > 1 else None,
            "memory_budget": int(a.replay_memory_gb * 2**30),
        },
        method=config.method.name,
        method_settings=method_settings(config),
        seed=config.run.seed,
        device=config.run.device,
    )


def replay_class(n_step: int) -> type[ReplayBuffer]:
    """SB3's buffer for one-step targets, or its ``NStepReplayBuffer`` (n-step returns and γ^n per sample)."""
    return NStepReplayBuffer if n_step > 1 else ReplayBuffer


def method_settings(config: Config) -> dict[str, Any]:
    """Each registered method's settings section of ``config``, by method name."""
    return {name: getattr(config.method, name) for name in REGISTRY}


def train(config: Config, run_dir: Path, overwrite: bool = False, callbacks: Sequence[BaseCallback] = ()) -> RunResult:
    """Start a new run in ``run_dir`` and train over the whole sequence (``callbacks``: extra SB3 callbacks)."""
    check_run_dir(run_dir, overwrite)
    with run_dir_lock(run_dir):
        prepare_run_dir(run_dir, overwrite)
        save_config(config, run_dir / CONFIG_NAME)
        sequence = config.sequence.build()
        stream, env = make_stream(config, sequence)
        model = make_agent(config, env)
        return _learn(config, sequence, stream, model, run_dir, first_time=True, callbacks=callbacks)


def resume(run_dir: Path, overrides: Sequence[str] = (), callbacks: Sequence[BaseCallback] = ()) -> RunResult:
    """Continue a run from its newest valid checkpoint, with the config saved in the run directory.

    ``overrides`` may change only ``run.*`` and ``eval.*`` settings (for this process; config.yaml is kept as it was
    written), ``log.*`` settings too: anything else would make the checkpoint describe a different run.
    """
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise RunDirError(f"{str(run_dir)!r} holds no {CONFIG_NAME}: it is not a run directory of scripts/train.py")
    config = load_config(config_path)
    if overrides:
        config = _resume_overrides(config, load_config(config_path, list(overrides)))
    with run_dir_lock(run_dir):
        _, newest = newest_valid_checkpoint(run_dir / CHECKPOINT_DIR, CHECKPOINT_FORMAT)
        check_identity(checkpoint_data(newest).get("run_identity"), config, newest)
        sequence = config.sequence.build()
        stream, env = make_stream(config, sequence)
        try:
            fix = "start the run again with --overwrite"
            model = load_checkpoint(newest, env=env, device=config.run.device, fix=fix)
            if replay_path(newest).is_file():
                model.load_replay_buffer(replay_path(newest))
        except Exception as err:
            stream.close()
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"replay buffers {replay_path(newest)} cannot be loaded ({err})") from err
        step, total = model.num_timesteps, sequence.total_steps
        if step >= total:
            stream.close()
            print(f"run already finished: {newest} is at agent step {step} of {total}; nothing to do", flush=True)
            return RunResult(run_dir, model, {}, 0.0, last_checkpoint=newest, start_step=step, finished_before=True)
        if model.rng_state is not None:
            restore_rng_state(model.rng_state, model.action_space)
        stream.seek(step)
        return _learn(
            config, sequence, stream, model, run_dir, first_time=False, callbacks=callbacks, resumed_from=newest
        )


def check_identity(saved: dict[str, Any] | None, config: Config, checkpoint: Path) -> None:
    """Refuse to resume ``checkpoint`` with a config that defines another run (``run_identity``): every key whose
    value differs is listed with the checkpoint's value and the config's."""
    if saved is None:
        warnings.warn(f"{checkpoint} records no run identity (older version): its config is not checked", stacklevel=2)
        return
    now = json.loads(json.dumps(run_identity(config)))  # as the checkpoint's JSON holds it (tuples become lists)
    # A setting only one side knows was added or removed since the checkpoint: its code's behaviour then is the run's
    differ = sorted(k for k in saved.keys() & now.keys() if saved[k] != now[k])
    if differ:
        shown = "; ".join(f"{k}: {saved[k]!r} in the checkpoint, {now[k]!r} now" for k in differ[:8])
        more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
        raise ConfigError(
            f"{checkpoint} was trained with other settings than {checkpoint.parent.parent / CONFIG_NAME} now holds: "
            f"{shown}{more}. Put back the config the run was started with, or start a new run with --run-dir "
            "(only run.*, eval.* and log.* may change on --resume)"
        )


# Settings that fix the shapes of the network, the observations or the saved state: a checkpoint cannot take others.
_SHAPE_KEYS = (
    "agent.network",
    "agent.gains",
    "agent.layer_norm",
    "env.screen_size",
    "env.frame_stack",
    "task.fmn.size",
    "task.fmn.levels",
)


def _resume_overrides(saved: Config, wanted: Config) -> Config:
    old, new = flatten_settings(saved.to_dict()), flatten_settings(wanted.to_dict())
    changed = sorted(k for k in new if old.get(k) != new[k])
    shape = [k for k in changed if k.startswith(_SHAPE_KEYS)]
    if shape:
        raise ConfigError(
            f"--resume with {', '.join(shape)} changed: that changes the network shape, so the run's checkpoints "
            "cannot be loaded into it. Resume without it, or start a new run with --run-dir"
        )
    fixed = [k for k in changed if not k.startswith(RESUME_MAY_CHANGE)]
    if fixed:
        raise ConfigError(
            f"--resume cannot change {', '.join(fixed)}: the checkpoint was trained with the saved values. Only run.*, "
            "eval.* and log.* settings may be overridden on resume; start a new run for the others"
        )
    return wanted


def _learn(
    config: Config,
    sequence: GameSequence,
    stream: GameStream,
    model: ContinualDQN,
    run_dir: Path,
    first_time: bool,
    callbacks: Sequence[BaseCallback] = (),
    resumed_from: Path | None = None,
) -> RunResult:
    apply_threads(config.run.threads)
    start_step = model.num_timesteps
    model.run_identity = run_identity(config)
    logger = _tensorboard_logger(run_dir / TENSORBOARD_DIR, None if first_time else start_step)
    model.set_logger(logger)
    if first_time:
        _log_config(model, config)
    logging_cb = ContinualLoggingCallback(frame_skip=frames_per_step(sequence.family, config.env))
    checkpoint_cb = SegmentCheckpointCallback(
        run_dir / CHECKPOINT_DIR,
        segment_ends=list(sequence.ends),
        every=config.run.checkpoint_every,
        keep=config.run.keep_checkpoints,
        save_replay=config.run.save_replay,
    )
    evaluation = []
    if config.eval.enabled:
        evaluation.append(PeriodicEvaluationCallback.from_config(config.eval, sequence, config.env))
    remaining = sequence.total_steps - model.num_timesteps
    stop = StopRequest()
    graceful = GracefulStopCallback(stop, checkpoint_cb)
    print(describe_run(config, model.device), flush=True)
    start = time.perf_counter()
    previous_handlers = _catch_stop_signals(stop)
    try:
        if remaining > 0:
            model.learn(
                remaining,
                callback=[
                    TaskInferenceMonitor(),  # before logging_cb, which dumps the logger at segment ends
                    logging_cb,
                    PlasticityCallback(config.log.plasticity_every, config.log.probe_size, config.log.dormant_tau),
                    checkpoint_cb,
                    *evaluation,
                    graceful,
                    LiveOutputCallback(sequence, bar=config.run.progress_bar, resumed_from=resumed_from),
                    *callbacks,
                ],
                log_interval=1,
                reset_num_timesteps=first_time,
            )
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        logger.close()  # flushes TensorBoard
        stream.close()
    interrupted = stop.signal_name if graceful.stopped_at is not None else None
    seconds = time.perf_counter() - start
    return RunResult(
        run_dir,
        model,
        logging_cb.last_scores,
        seconds,
        interrupted,
        checkpoint_cb.last_saved,
        start_step=start_step,
        stopped_at=graceful.stopped_at,
        failed_checkpoints=tuple(checkpoint_cb.failed),
    )


def _tensorboard_logger(folder: Path, resumed_at: int | None) -> Logger:
    """SB3's TensorBoard logger. A resumed run's writer purges, in TensorBoard's view, the events that the earlier
    process wrote after ``resumed_at`` (its checkpoint's step; a killed run wrote some before it died), so the curves
    go on from the checkpoint without duplicates."""
    if resumed_at is None:
        return configure(str(folder), ["tensorboard"])
    output = TensorBoardOutputFormat.__new__(TensorBoardOutputFormat)
    output.writer, output._is_closed = SummaryWriter(log_dir=str(folder), purge_step=resumed_at + 1), False
    return Logger(str(folder), [output])


def _catch_stop_signals(stop: StopRequest) -> dict[int, Any]:
    """Route SIGINT and SIGTERM to ``stop`` (a second Ctrl-C stops at once); returns the handlers to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals reach only the main thread; a run driven from another thread stops by other means
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signal_name = signal.Signals(signum).name

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handle)
    return previous


def _log_config(model: ContinualDQN, config: Config) -> None:
    """The resolved config as TensorBoard text and as hparams."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    model.logger.record("config", "```\n" + text + "```", exclude=("stdout", "log", "json", "csv"))
    hparams = flatten_settings(config.to_dict())
    model.logger.record("hparams", HParam(hparams, {"train/loss": 0.0}), exclude=("stdout", "log", "json", "csv"))
    model.logger.dump(0)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "RunDirError",
    "RunResult",
    "apply_threads",
    "flatten_settings",
    "new_run_dir",
    "resume",
    "train",
]
