"""Measure the random-policy score of every MinAtar game: the table in envs/data/minatar_scores.csv.

Plays `--episodes` full episodes of each game with uniformly random actions (all 6) through `envs.make_game_env`, with
the env settings a run trains with (`--config`'s ``env.minatar``; MinAtar's defaults: sticky actions 0.1, difficulty
ramping), and prints mean ± standard deviation of the episode scores. `--write` stores them in the package's table.

    .venv/bin/python scripts/measure_minatar_random.py --episodes 100 --write
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from agents.run.config import ConfigError, load_config
from envs.game_env import EnvSettings, make_game_env
from envs.games import MINATAR_GAMES

TABLE = Path(__file__).resolve().parents[1] / "envs" / "data" / "minatar_scores.csv"


def random_scores(game: str, settings: EnvSettings, episodes: int, seed: int) -> np.ndarray:
    """Scores of `episodes` episodes of `game` with uniformly random actions (env and actions seeded by `seed`)."""
    env = make_game_env(game, settings, seed=seed)
    scores: list[float] = []
    try:
        while len(scores) < episodes:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                scores.append(float(info["episode"]["r"]))
                env.reset()
    finally:
        env.close()
    return np.array(scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes per game (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the envs and the random actions")
    parser.add_argument("--config", help="take env.minatar from this run config (default: MinAtar's defaults)")
    parser.add_argument(
        "--write", action="store_true", help=f"write the table to {TABLE.relative_to(TABLE.parents[2])}"
    )
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error(f"--episodes must be >= 2 (a standard deviation needs two), got {args.episodes}")
    try:
        settings = load_config(args.config).env if args.config else EnvSettings()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"uniformly random actions, {args.episodes} episodes per game, {settings.minatar}")
    rows = []
    for k, game in enumerate(MINATAR_GAMES):
        scores = random_scores(game, settings, args.episodes, args.seed + k)
        mean, sd = float(scores.mean()), float(scores.std(ddof=1))
        print(f"  {game:<24} {mean:8.3f} ± {sd:.3f}")
        rows.append([game, f"{mean:.4f}", f"{sd:.4f}", args.episodes])
    if args.write:
        with TABLE.open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([["game", "random", "random_sd", "episodes"], *rows])
        print(f"written: {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
