#!/usr/bin/env python
"""Soak test: a long CPU run with everything on, reporting resident memory over time.

    python scripts/soak.py [--minutes 60] [--every 2000] [CONFIG.yaml] [key=value ...]

Trains the config (default: configs/atari.yaml with 5k-transition buffers so they fill early, task inference,
EWC and evaluation at segment ends, games cycling until the time is up) and samples the process's resident memory
every ``--every`` agent steps. Once every buffer of the cycle is full, memory must level off: growth after that
point would be a leak in logging, evaluation, task inference or consolidation. The last line is
``rss_when_full_mib=<x> rss_end_mib=<x> growth_after_full_mib=<x> steps=<n>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

from agents.run.config import ConfigError, load_config
from agents.run.training import train

SOAK_DEFAULTS = [
    "run.name=soak",
    "run.progress_bar=false",
    "run.checkpoint_every=0",
    "agent.buffer_size=5000",
    "agent.learning_starts=1000",
    "method.name=ewc",
    "method.ewc.batches=10",
    "eval.episodes=1",
]
CYCLE = ["Pong", "Breakout", "Freeway"]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class MemoryProbe(BaseCallback):
    """Samples RSS every ``every`` steps and stops the run after ``seconds``."""

    def __init__(self, every: int, seconds: float) -> None:
        super().__init__()
        self.every, self.seconds = every, seconds
        self.samples: list[tuple[float, int, float, bool]] = []  # (elapsed s, step, RSS MiB, all buffers full)
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            replay = self.model.replay_buffer
            full = replay.n_tasks >= len(CYCLE) and all(b is not None and b.full for b in replay.buffers)
            sample = (time.perf_counter() - self._start, self.num_timesteps, rss_mib(), full)
            self.samples.append(sample)
            print(f"{sample[0]:>8.0f} {sample[1]:>9} {sample[2]:>9.0f} {'yes' if full else 'no':>10}", flush=True)
        return time.perf_counter() - self._start < self.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="configs/atari.yaml", help="config to soak (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="overrides such as agent.buffer_size=5000")
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="wall-clock minutes of training (default: %(default)s)"
    )
    parser.add_argument(
        "--every", type=int, default=2000, help="agent steps between memory samples (default: %(default)s)"
    )
    parser.add_argument(
        "--segment-steps", type=int, default=6000, help="agent steps per game visit (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if "=" in args.config:  # no config file given: the first positional argument is an override
        args.overrides, args.config = [args.config, *args.overrides], "configs/atari.yaml"
    segments = (
        "[" + ", ".join(f"{{game: {CYCLE[i % len(CYCLE)]}, steps: {args.segment_steps}}}" for i in range(300)) + "]"
    )
    try:
        config = load_config(args.config, [*SOAK_DEFAULTS, f"sequence.segments={segments}", *args.overrides])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    probe = MemoryProbe(args.every, args.minutes * 60)
    print(f"{'seconds':>8} {'step':>9} {'RSS MiB':>9} {'buffers full':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        train(config, Path(tmp) / "soak", callbacks=[probe])
    full = [s for s in probe.samples if s[3]]
    if not full:
        print("buffers never all filled: run longer (--minutes) or lower agent.buffer_size", file=sys.stderr)
        return 1
    growth = probe.samples[-1][2] - full[0][2]
    print(
        f"rss_when_full_mib={full[0][2]:.0f} rss_end_mib={probe.samples[-1][2]:.0f} growth_after_full_mib={growth:.0f} "
        f"steps={probe.samples[-1][1]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
