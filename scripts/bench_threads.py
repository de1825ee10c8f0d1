#!/usr/bin/env python
"""torch threads against the agent's compute, idle and with other processes busy on every core.

For each network and each number of torch intra-op threads, times the two parts of an agent step whose speed depends
on them: acting (a batch-1 forward pass) and one Double-DQN update (batch of 32: online and target forwards on the
next states, online forward on the states, Huber loss, backward, gradient-norm clipping, Adam step). One agent step
costs ``act + update / train_freq`` of compute (4 in every config). Each setting is measured idle, then with
``--busy`` processes spinning (``while True: pass``), which stand for other jobs on a shared machine.

Networks: the agent's own Q-networks (agents/sb3/policy.py, per-task gains, 18 actions): ``nature`` (Nature CNN
over 4×84×84 ALE frames, 1.7M shared parameters) and ``minatar`` (the MinAtar paper's conv 16 + fully connected 128
over 10×10×10 grids, Young & Tian 2019). Prints mean milliseconds per call and ratios to the first threads setting;
nothing is asserted.

    OMP_NUM_THREADS=1 python scripts/bench_threads.py --threads 1,2 --busy 2 --seconds 3
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from agents.sb3.networks import ARCHITECTURES
from agents.sb3.policy import ContinualDQNPolicy

N_ACTIONS = 18
BATCH = 32
TRAIN_FREQ = 4


# Observation shape of each network's games: 4 stacked 84×84 ALE frames; MinAtar's 10 object channels of 10×10.
SHAPES = {"nature": (4, 84, 84), "ewc": (4, 84, 84), "minatar": (10, 10, 10)}


def q_network(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The agent's online Q-network ``name`` (per-task gains, task 0 active) and its observation shape."""
    shape = SHAPES[name]
    space = spaces.Box(0, 255, shape, dtype=np.uint8)
    policy = ContinualDQNPolicy(space, spaces.Discrete(N_ACTIONS), lambda _: 1e-4, network=name)
    policy.add_task()
    policy.set_task(0)
    return policy.q_net, shape


def timed(fn: Callable[[], None], seconds: float) -> float:
    """Mean seconds per call of ``fn`` over about ``seconds`` (after two warm-up calls)."""
    fn()
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        fn()
        calls += 1
    return elapsed / calls


def measure(name: str, threads: int, seconds: float) -> tuple[float, float]:
    """Mean seconds of one act and of one update of network ``name`` with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    online, shape = q_network(name)
    target = copy.deepcopy(online)
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-4)
    obs, next_obs = torch.rand(BATCH, *shape) * 255, torch.rand(BATCH, *shape) * 255
    actions = torch.randint(N_ACTIONS, (BATCH, 1))
    rewards, dones = torch.randn(BATCH), torch.zeros(BATCH)
    one = obs[:1]

    def act() -> None:
        with torch.no_grad():
            online(one).argmax(dim=1)

    def update() -> None:
        with torch.no_grad():
            best = online(next_obs).argmax(dim=1, keepdim=True)
            y = rewards + 0.99 * (1 - dones) * target(next_obs).gather(1, best).squeeze(1)
        q = online(obs).gather(1, actions).squeeze(1)
        loss = F.smooth_l1_loss(q, y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(online.parameters(), 10.0)
        optimizer.step()

    return timed(act, seconds), timed(update, seconds)


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` Python processes spinning on the CPU for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0.0)  # let them reach the scheduler
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def report(rows: list[tuple[str, str, int, float, float]], base_threads: int) -> list[str]:
    """A table of ms per act, per update and per agent step, with each row's step time relative to ``base_threads``."""
    step = {(n, load, t): a + u / TRAIN_FREQ for n, load, t, a, u in rows}
    lines = [
        f"{'network':<8} {'load':<6} {'threads':>7} {'act ms':>8} {'update ms':>10} {'step ms':>8} "
        f"{f'vs {base_threads} thr':>9}"
    ]
    for network, load, threads, act, upd in rows:
        base = step.get((network, load, base_threads))
        ratio = f"{step[network, load, threads] / base:.2f}×" if base else "–"
        lines.append(
            f"{network:<8} {load:<6} {threads:>7} {act * 1e3:>8.2f} {upd * 1e3:>10.2f} "
            f"{step[network, load, threads] * 1e3:>8.2f} {ratio:>9}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--networks",
        default=",".join(n for n in ("nature", "minatar") if n in ARCHITECTURES),
        help=f"comma-separated, from {', '.join(n for n in SHAPES if n in ARCHITECTURES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        default=f"1,{os.cpu_count() or 1}",
        help="comma-separated torch thread counts; the first is the ratios' base (default: %(default)s)",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=os.cpu_count() or 1,
        help="spinning processes for the busy rows (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="timed seconds per act or update measurement (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        networks = args.networks.split(",")
        threads = [int(t) for t in args.threads.split(",")]
        unknown = [n for n in networks if n not in SHAPES or n not in ARCHITECTURES]
        if unknown or min(threads) < 1 or args.busy < 0 or args.seconds <= 0:
            raise ValueError("networks from --help's list, threads >= 1, --busy >= 0, --seconds > 0")
    except ValueError as err:
        print(f"error: bad option ({err})", file=sys.stderr)
        return 2

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    # "as found": whatever else the machine runs now (its load average is printed); "+N busy": N spinning processes more
    for load, n_busy in [("found", 0)] + ([(f"+{args.busy}busy", args.busy)] if args.busy else []):
        with busy_processes(n_busy):
            for network in networks:
                for t in threads:
                    act, upd = measure(network, t, args.seconds)
                    rows.append((network, load, t, act, upd))
                    print(f"  {network} {load} threads={t}: act {act * 1e3:.2f} ms, update {upd * 1e3:.2f} ms")
    print()
    print("\n".join(report(rows, threads[0])))
    print(f"\nstep ms = act + update / {TRAIN_FREQ}; load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
