#!/usr/bin/env python
"""Task inference (flat forget-me-not) over a real ALE stream of games with revisits, scored against the true games.

    python scripts/bench_task_inference.py [--games Pong,Breakout,SpaceInvaders,Freeway,Seaquest] [--visits 3] \
        [--steps 20000] [--seed 0] [fmn.key=value ...]

A random policy plays each game for ``--steps`` agent steps per visit, cycling through the games ``--visits`` times.
The last line is ``ARI=<x> switches=<n> detected=<n> delay_p50=<steps> delay_max=<steps> spurious=<n> us_per_step=<x>``
(``us_per_step``: task inference alone, per agent step).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import yaml

from agents.bench.inference_stream import run_inference_stream
from cl_rl.task_inference import FMNSettings
from envs.games import UnknownGameError, canonical_game
from envs.sequence import GameSequence, Segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="task-inference settings such as fmn.window=8 (see FMNSettings)")
    parser.add_argument("--games", default="Pong,Breakout,SpaceInvaders,Freeway,Seaquest")
    parser.add_argument("--visits", type=int, default=3, help="visits per game (2 revisits by default)")
    parser.add_argument("--steps", type=int, default=20_000, help="agent steps per visit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        games = [canonical_game(g.strip()) for g in args.games.split(",") if g.strip()]
        if len(games) < 2 or args.visits < 1 or args.steps < 1:
            raise ValueError("give at least 2 --games, --visits >= 1 and --steps >= 1")
        fmn = FMNSettings(**_parse_settings(args.settings))
    except (ValueError, TypeError, UnknownGameError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sequence = GameSequence(tuple(Segment(g, args.steps) for _ in range(args.visits) for g in games))
    print(f"{len(sequence)} segments of {args.steps} agent steps: {' → '.join(s.game for s in sequence.segments)}")
    print(f"settings: {dataclasses.asdict(fmn)}")
    result = run_inference_stream(sequence, fmn, seed=args.seed, progress=True)
    print(f"\n{'segment':>7} {'game':<14} {'inferred task':>13}")
    for i, (segment, task) in enumerate(zip(sequence.segments, result.task_of_segment, strict=True)):
        print(f"{i:>7} {segment.game:<14} {task:>13}")
    print(f"tasks created: {result.n_tasks} for {len(games)} games; delays (agent steps): {result.delays}")
    print(f"task inference {result.us_per_step:.1f} µs per agent step vs ALE step {result.env_us_per_step:.0f} µs")
    print(result.line())
    return 0


def _parse_settings(items: list[str]) -> dict:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.removeprefix("fmn.")
        if not sep or key not in {f.name for f in dataclasses.fields(FMNSettings)}:
            names = ", ".join(f.name for f in dataclasses.fields(FMNSettings))
            raise ValueError(f"setting {item!r} is not fmn.<key>=<value> with a key among {names}")
        settings[key] = yaml.safe_load(value)
    return settings


if __name__ == "__main__":
    sys.exit(main())
