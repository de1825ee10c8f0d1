#!/usr/bin/env python
"""Memory and sampling cost of the frame-once replay buffer against SB3's ReplayBuffer, on a real ALE stream.

    python scripts/bench_replay.py [--game Pong] [--transitions 20000] [--batches 2000]

Fills both buffers with the same random-policy transitions (exactly as SB3's loop stores them), checks that they
return the same stacks, and prints allocated bytes per transition, resident memory added while filling, and the time
to sample a minibatch of 32. The last line is ``bytes_per_transition=<x>`` (the frame-once buffer's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.run.arguments import integer
from agents.sb3.frame_replay_buffer import FrameStackReplayBuffer
from agents.sb3.replay import buffer_nbytes
from envs.atari import AtariSettings, make_atari_env
from envs.games import UnknownGameError, canonical_game


def rss() -> int:
    """Resident memory of this process in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Pong", help="the game whose frames fill the buffers (default: %(default)s)")
    parser.add_argument(
        "--transitions", type=integer(1), default=20_000, help="capacity, filled completely (default: %(default)s)"
    )
    parser.add_argument(
        "--batches", type=integer(5), default=2_000, help="minibatches of 32 timed per buffer (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        game = canonical_game(args.game)
    except UnknownGameError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    venv = DummyVecEnv([lambda: make_atari_env(game, AtariSettings(), seed=0)])
    n = args.transitions
    print(f"{game}: {n} transitions of {venv.observation_space.shape} uint8 observations, random policy")

    before = rss()
    frames = FrameStackReplayBuffer(n, venv.observation_space, venv.action_space, "cpu")
    reference = ReplayBuffer(n, venv.observation_space, venv.action_space, "cpu")
    obs, rng = venv.reset(), np.random.default_rng(0)
    added_frames = added_sb3 = 0
    for _ in range(n):
        action = rng.integers(venv.action_space.n, size=1)
        new_obs, reward, done, infos = venv.step(action)
        next_obs = new_obs.copy()
        if done[0]:
            next_obs[0] = infos[0]["terminal_observation"]
        t0 = rss()
        frames.add(obs, next_obs, action.reshape(1, 1), reward, done, infos)
        t1 = rss()
        reference.add(obs, next_obs, action.reshape(1, 1), reward, done, infos)
        added_frames += t1 - t0
        added_sb3 += rss() - t1
        obs = new_obs
    venv.close()
    held = np.arange(frames.memory.tail, frames.memory.head)
    same = np.array_equal(frames.memory.get(held).observations.numpy(), reference.observations[held % n, 0])
    print(f"rebuilt stacks equal SB3's stored ones: {same} ({len(held)} transitions held)")

    # Alternate the two buffers over 5 rounds and take medians, so that a busy CPU affects both alike.
    rounds: dict[str, list[float]] = {"frames": [], "sb3": []}
    for _ in range(5):
        for name, buffer in (("frames", frames), ("sb3", reference)):
            start = time.perf_counter()
            for _ in range(max(args.batches // 5, 1)):
                buffer.sample(32)
            rounds[name].append(1e6 * (time.perf_counter() - start) / max(args.batches // 5, 1))
    timings = {name: float(np.median(values)) for name, values in rounds.items()}
    per_frames, per_sb3 = buffer_nbytes(frames) / n, buffer_nbytes(reference) / n
    print(
        f"\n{'buffer':<8} {'allocated B/transition':>22} {'RSS added B/transition':>23} {'sample 32 (µs, median)':>23}"
    )
    print(f"{'frames':<8} {per_frames:>22.0f} {added_frames / n:>23.0f} {timings['frames']:>23.0f}")
    print(f"{'sb3':<8} {per_sb3:>22.0f} {added_sb3 / n:>23.0f} {timings['sb3']:>23.0f}")
    print(f"SB3 / frames: {per_sb3 / per_frames:.1f}× the memory; total RSS added {(rss() - before) / 2**20:.0f} MiB")
    print(
        f"EWC paper's protocol (10 tasks × 50k transitions): {10 * 50_000 * per_frames / 2**30:.2f} GiB frames vs "
        f"{10 * 50_000 * per_sb3 / 2**30:.1f} GiB SB3"
    )
    print(f"bytes_per_transition={per_frames:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
