#!/usr/bin/env python
"""Train a continual DQN over a sequence of Atari games.

python scripts/train.py configs/default.yaml [key.sub=value ...] [--run-dir DIR] [--overwrite]
python scripts/train.py --resume RUN_DIR [run.key=value eval.key=value ...]

Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint, flushes TensorBoard and exits 0; --resume continues
from the newest valid checkpoint. Bad input (unknown game or key, bad value, unusable run directory or checkpoint)
exits 2 with a message that says what to change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.run.config import ConfigError, load_config
from agents.run.training import CheckpointError, RunDirError, new_run_dir, resume, train
from envs.games import UnknownGameError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML config, e.g. configs/default.yaml")
    parser.add_argument("overrides", nargs="*", help="overrides such as agent.batch_size=64 run.seed=1")
    parser.add_argument("--run-dir", type=Path, help="where to write logs and checkpoints (default: runs/<name>)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing --run-dir and start again")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    args = parser.parse_args(argv)

    try:
        if args.resume is not None:
            if args.run_dir or args.overwrite:
                raise ConfigError("--resume RUN_DIR continues RUN_DIR itself; drop --run-dir and --overwrite")
            # With --resume every positional argument is an override of the run's saved config.
            overrides = [a for a in (args.config, *args.overrides) if a is not None]
            if any("=" not in a for a in overrides):
                raise ConfigError(
                    "--resume RUN_DIR uses the config saved in RUN_DIR; give only run.*/eval.* overrides (key=value)"
                )
            result = resume(args.resume, overrides)
        else:
            if args.config is None:
                parser.error("give a config file (e.g. configs/default.yaml) or --resume RUN_DIR")
            config = load_config(args.config, args.overrides)
            run_dir = args.run_dir or new_run_dir(config)
            print(f"run directory: {run_dir}")
            result = train(config, run_dir, overwrite=args.overwrite)
    except (ConfigError, RunDirError, CheckpointError, UnknownGameError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if result.interrupted:
        print(f"\n{result.interrupted}: stopped after agent step {result.model.num_timesteps}")
        print(f"  checkpoint:  {result.last_checkpoint}")
        print(f"  continue with:  python scripts/train.py --resume {result.run_dir}")
        return 0

    print(f"\nfinished {result.model.num_timesteps} agent steps in {result.seconds:.0f} s")
    for game, scores in result.last_scores.items():
        tail = scores[-5:]
        print(f"  {game:<16} episodes={len(scores):<4} mean score of last {len(tail)}: {sum(tail) / len(tail):.1f}")
    print(f"logs and checkpoints: {result.run_dir}")
    print(f"  TensorBoard:  tensorboard --logdir {result.run_dir / 'tb'}")
    print(f"  checkpoints:  {result.run_dir / 'checkpoints'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
