"""Builds a continual run from a ``Config`` and drives it: run directory, env stream, agent, logger, checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.logger import HParam, configure
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.callbacks import ContinualLoggingCallback, SegmentCheckpointCallback, StopAtStepCallback
from agents.checkpoints import list_checkpoints, replay_path
from agents.config import Config, ConfigError, load_config, save_config
from agents.continual_dqn import ContinualDQN
from cl_rl.task_source import OracleTaskSource
from envs.atari import make_atari_env
from envs.sequence import GameSequence, SequenceEnv

CONFIG_NAME = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"


class RunDirError(ValueError):
    """The run directory cannot be used as asked (already holds a run, or holds none to resume)."""


@dataclass
class RunResult:
    run_dir: Path
    model: ContinualDQN
    last_scores: dict[str, list[float]]
    seconds: float


def new_run_dir(config: Config, root: Path = Path("runs")) -> Path:
    """A readable, unique directory name: ``<name>__seed<seed>__<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{config.run.name}__seed{config.run.seed}__{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to train into a directory that already holds a run, unless ``overwrite``."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"run directory {str(run_dir)!r} already holds files. Continue it with --resume {run_dir}, "
                "choose another --run-dir, or pass --overwrite to delete it and start again."
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def make_stream(config: Config, sequence: GameSequence) -> tuple[SequenceEnv, DummyVecEnv]:
    """The game stream as one env, wrapped as SB3's single-env VecEnv."""
    stream = SequenceEnv(sequence, functools.partial(make_atari_env, settings=config.env))
    return stream, DummyVecEnv([lambda: stream])


def make_agent(config: Config, env: DummyVecEnv) -> ContinualDQN:
    a = config.agent
    return ContinualDQN(
        "ContinualCnnPolicy",
        env,
        task_source=OracleTaskSource(),
        double_dqn=a.double_dqn,
        exploration_steps=a.exploration_steps,
        learning_rate=a.learning_rate,
        buffer_size=a.buffer_size,
        learning_starts=a.learning_starts,
        batch_size=a.batch_size,
        gamma=a.gamma,
        train_freq=a.train_freq,
        gradient_steps=a.gradient_steps,
        target_update_interval=a.target_update_interval,
        exploration_initial_eps=a.exploration_initial_eps,
        exploration_final_eps=a.exploration_final_eps,
        max_grad_norm=a.max_grad_norm,
        policy_kwargs={"network": a.network, "gains": a.gains},
        consolidation=dataclasses.asdict(config.consolidation),
        seed=config.run.seed,
        device=config.run.device,
    )


def train(config: Config, run_dir: Path, overwrite: bool = False) -> RunResult:
    """Start a new run in ``run_dir`` and train over the whole sequence."""
    prepare_run_dir(run_dir, overwrite)
    save_config(config, run_dir / CONFIG_NAME)
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    return _learn(config, sequence, stream, model, run_dir, first_time=True)


def resume(run_dir: Path) -> RunResult:
    """Continue a run from its newest checkpoint, with the config saved in the run directory."""
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise RunDirError(f"{str(run_dir)!r} holds no {CONFIG_NAME}: it is not a run directory of scripts/train.py")
    config = load_config(config_path)
    checkpoints = list_checkpoints(run_dir / CHECKPOINT_DIR)
    if not checkpoints:
        raise RunDirError(f"{str(run_dir)!r} holds no checkpoint yet; start the run again with --overwrite")
    _, newest = checkpoints[-1]
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = ContinualDQN.load(newest, env=env, device=config.run.device)
    if replay_path(newest).is_file():
        model.load_replay_buffer(replay_path(newest))
    stream.seek(model.num_timesteps)
    return _learn(config, sequence, stream, model, run_dir, first_time=False)


def _learn(
    config: Config, sequence: GameSequence, stream: SequenceEnv, model: ContinualDQN, run_dir: Path, first_time: bool
) -> RunResult:
    logger = configure(str(run_dir / TENSORBOARD_DIR), ["tensorboard"])
    model.set_logger(logger)
    if first_time:
        _log_config(model, config)
    logging_cb = ContinualLoggingCallback(frame_skip=config.env.frame_skip)
    checkpoint_cb = SegmentCheckpointCallback(
        run_dir / CHECKPOINT_DIR,
        segment_ends=list(sequence.ends),
        every=config.run.checkpoint_every,
        keep=config.run.keep_checkpoints,
        save_replay=config.run.save_replay,
    )
    remaining = sequence.total_steps - model.num_timesteps
    start = time.perf_counter()
    try:
        if remaining > 0:
            model.learn(
                remaining,
                callback=[logging_cb, checkpoint_cb, StopAtStepCallback(sequence.total_steps)],
                log_interval=1,
                reset_num_timesteps=first_time,
                progress_bar=config.run.progress_bar,
            )
    finally:
        logger.close()
        stream.close()
    return RunResult(run_dir, model, logging_cb.last_scores, time.perf_counter() - start)


def _log_config(model: ContinualDQN, config: Config) -> None:
    """The resolved config as TensorBoard text and as hparams."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    model.logger.record("config", "```\n" + text + "```", exclude=("stdout", "log", "json", "csv"))
    hparams = _flatten(config.to_dict())
    model.logger.record("hparams", HParam(hparams, {"train/loss": 0.0}), exclude=("stdout", "log", "json", "csv"))
    model.logger.dump(0)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


__all__ = ["ConfigError", "RunDirError", "RunResult", "new_run_dir", "resume", "train"]
