#!/usr/bin/env python
"""Train a continual DQN over a sequence of games: MinAtar (10×10 grids, learnt on a CPU in minutes) or Atari (ALE).

python scripts/train.py configs/first_run.yaml [key.sub=value ...] [--run-dir DIR] [--overwrite]
python scripts/train.py --resume RUN_DIR [run.key=value eval.key=value ...]

Configs: configs/first_run.yaml (MinAtar SpaceInvaders → Breakout → SpaceInvaders, about 5 min on a CPU),
configs/minatar_table.yaml and minatar.yaml (MinAtar), configs/atari.yaml (short ALE run), ewc_paper.yaml and
cora_atari.yaml (ALE protocols for a GPU); docs/CONFIGURATION.md describes every key.

It prints the run's games, method, task source and device, then a line at each switch of game or task and at each
evaluation, above a progress bar over the whole sequence (game, segment, task, recent score); at the end, every
game's score after every segment against random play, what was kept and what was forgotten, and the plot of it.
torch uses run.threads CPU threads (default 1: see docs/SPEED.md before raising it on a shared machine).

Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint, flushes TensorBoard and exits 0; --resume continues
from the newest valid checkpoint. Bad input (unknown game or key, bad value, unusable run directory or checkpoint)
exits 2 with a message that says what to change.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch

from agents.evaluation.run_summary import summarise_run
from agents.run.config import ConfigError, load_config
from agents.run.training import CheckpointError, RunDirError, RunResult, new_run_dir, resume, train
from envs.games import UnknownGameError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML config, e.g. configs/first_run.yaml")
    parser.add_argument("overrides", nargs="*", help="overrides such as agent.batch_size=64 run.seed=1 run.threads=2")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="where to write logs and checkpoints (default: runs/<run.name>__seed<run.seed>__<YYYYmmdd-HHMMSS>)",
    )
    parser.add_argument("--overwrite", action="store_true", help="delete an existing --run-dir and start again")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    parser.add_argument("--threads", type=int, help="torch CPU threads, same as run.threads=N (default: run.threads)")
    args = parser.parse_intermixed_args(argv)  # overrides before or after --run-dir and the other options
    if args.threads is not None:
        args.overrides.append(f"run.threads={args.threads}")

    try:
        if args.resume is not None:
            if args.run_dir or args.overwrite:
                raise ConfigError("--resume RUN_DIR continues RUN_DIR itself; drop --run-dir and --overwrite")
            # With --resume every positional argument is an override of the run's saved config.
            overrides = [a for a in (args.config, *args.overrides) if a is not None]
            if any("=" not in a for a in overrides):
                raise ConfigError(
                    "--resume RUN_DIR uses the config saved in RUN_DIR; give only run.*/eval.*/log.* overrides "
                    "(key=value)"
                )
            result = resume(args.resume, overrides)
        else:
            if args.config is None:
                parser.error("give a config file (e.g. configs/first_run.yaml) or --resume RUN_DIR")
            config = load_config(args.config, args.overrides)
            run_dir = args.run_dir or new_run_dir(config)
            print(f"run directory: {run_dir}")
            result = train(config, run_dir, overwrite=args.overwrite)
    except (ConfigError, RunDirError, CheckpointError, UnknownGameError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if result.finished_before:
        return 0  # resume() said so; nothing was written
    if result.interrupted:
        print(f"\n{result.interrupted}: stopped after agent step {result.stopped_at}")
        print(f"  checkpoint:  {result.last_checkpoint}")
        again = [sys.executable, os.path.relpath(__file__), "--resume", str(result.run_dir)]  # the interpreter running
        print(f"  continue with:  {shlex.join(again)}")
        return 0
    print_summary(result)
    return 0


def print_summary(result: RunResult) -> None:
    """Steps and speed of this process, what the agent kept of each game (``run_summary``), where the files are."""
    done = result.model.num_timesteps - result.start_step
    resumed = f" (resumed at {result.start_step})" if result.start_step else ""
    print(
        f"\nfinished: agent step {result.model.num_timesteps}{resumed}; {done} steps in {result.seconds:.0f} s, "
        f"{result.steps_per_second:.1f} steps/s (evaluations included; torch threads: {torch.get_num_threads()})"
    )
    print(summarise_run(result.run_dir))
    print(f"logs and checkpoints: {result.run_dir}")
    print(f"  TensorBoard:  tensorboard --logdir {result.run_dir / 'tb'}")
    print(f"  checkpoints:  {result.run_dir / 'checkpoints'}")


if __name__ == "__main__":
    sys.exit(main())
