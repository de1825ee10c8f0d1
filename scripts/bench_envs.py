#!/usr/bin/env python
"""Emulator frames per second of the Python chain and of the C++ vector env adapter, under random actions.

The Python chain is SB3's DummyVecEnv over `make_atari_env` (one process, envs stepped in turn); the adapter is
`make_atari_vec_env` (ale-py's C++ AtariVectorEnv, one worker thread per env up to the CPU count).

    OMP_NUM_THREADS=1 python scripts/bench_envs.py [--game Pong] [--seconds 3] [--n-envs 1,2,4,8]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.run.arguments import integer, positive
from envs.atari import N_ACTIONS, AtariSettings, make_atari_env
from envs.games import canonical_game
from envs.vector import make_atari_vec_env


def frames_per_second(env: VecEnv, seconds: float, frame_skip: int, seed: int = 0) -> float:
    """Emulator frames per second (agent steps x envs x frame skip) of `env` over about `seconds` of random play."""
    rng = np.random.default_rng(seed)
    env.reset()
    for _ in range(10):  # warm-up: first frames, thread start
        env.step(rng.integers(N_ACTIONS, size=env.num_envs))
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        env.step(rng.integers(N_ACTIONS, size=env.num_envs))
        steps += 1
    env.close()
    return steps * env.num_envs * frame_skip / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Pong", help="the game played (default: %(default)s)")
    parser.add_argument(
        "--seconds", type=positive, default=3.0, help="seconds of timed play per measurement (default: %(default)s)"
    )
    parser.add_argument(
        "--n-envs", default="1,2,4,8", help="comma-separated numbers of parallel envs (default: %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=integer(0),
        default=0,
        help="C++ worker threads (0: min(n_envs, CPU count)) (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        game = canonical_game(args.game)
        counts = [int(n) for n in args.n_envs.split(",") if n.strip()]
        if not counts or min(counts) < 1:
            raise ValueError(f"--n-envs must list ints >= 1, got {args.n_envs!r}")
    except ValueError as err:  # UnknownGameError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = AtariSettings()
    print(f"{game}, default AtariSettings, random actions, {args.seconds:g} s each; emulator frames/s")
    print(f"{'n_envs':>6}  {'python chain':>12}  {'C++ adapter':>11}  {'ratio':>5}")
    for n in counts:
        chain = DummyVecEnv([lambda i=i: make_atari_env(game, settings, seed=i) for i in range(n)])
        chain_fps = frames_per_second(chain, args.seconds, settings.frame_skip)
        vec = make_atari_vec_env(game, settings, n, seed=0, num_threads=args.threads)
        vec_fps = frames_per_second(vec, args.seconds, settings.frame_skip)
        print(f"{n:>6}  {chain_fps:>12,.0f}  {vec_fps:>11,.0f}  {vec_fps / chain_fps:>5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
