#!/usr/bin/env python
"""Train A → B with each consolidation method (same seed) and print how well each keeps A.

    python scripts/compare_consolidation.py [configs/atari.yaml] [key=value ...] --game-a Pong --game-b Breakout \
        --steps-a 20000 --steps-b 20000 --methods none,ewc,online_ewc,mas,generative_replay,lwf
"""

from __future__ import annotations

import argparse
import sys

from agents.evaluation.comparison import compare
from agents.run.config import ConfigError, load_config
from agents.run.training import apply_threads
from cl_rl.methods import parse_method_names
from envs.games import UnknownGameError, canonical_game


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "config",
        nargs="?",
        default="configs/atari.yaml",
        help="base config (agent, env, λ ...) (default: %(default)s)",
    )
    parser.add_argument("overrides", nargs="*", help="overrides such as method.ewc.lam=1000")
    parser.add_argument(
        "--game-a", default="Pong", help="the first game, whose retention is measured (default: %(default)s)"
    )
    parser.add_argument("--game-b", default="Breakout", help="the second game (default: %(default)s)")
    parser.add_argument("--steps-a", type=int, default=20_000, help="agent steps on A (default: %(default)s)")
    parser.add_argument("--steps-b", type=int, default=20_000, help="agent steps on B (default: %(default)s)")
    parser.add_argument(
        "--methods", default="none,ewc,online_ewc,mas", help="comma-separated method names (default: %(default)s)"
    )
    parser.add_argument(
        "--eval-episodes", type=int, default=3, help="episodes per score (0: skip scores) (default: %(default)s)"
    )
    parser.add_argument(
        "--log-dir", help="write each method's TensorBoard logs under this directory (default: none written)"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        game_a, game_b = canonical_game(args.game_a), canonical_game(args.game_b)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for m in methods:
            try:
                parse_method_names(m)
            except ValueError as err:
                raise ConfigError(f"--methods: {err}") from err
    except (ConfigError, UnknownGameError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config.run.progress_bar = False
    apply_threads(config.run.threads)
    results = compare(
        config, game_a, game_b, args.steps_a, args.steps_b, methods, args.eval_episodes, log_dir=args.log_dir
    )
    print(f"\n{game_a} ({args.steps_a} steps) -> {game_b} ({args.steps_b} steps), seed {config.run.seed}")
    header = f"{'method':<17} {'Q drift on A':>12} {'A after A':>10} {'A after B':>10} {'B after B':>10} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.method:<17} {r.q_drift_a:>12.4f} {r.score_a_after_a:>10.1f} {r.score_a_after_b:>10.1f} "
            f"{r.score_b_after_b:>10.1f} {r.seconds:>8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
