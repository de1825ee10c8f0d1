#!/usr/bin/env python
"""Time one agent update without distillation, with generative replay and with LwF (same model, same buffers).

    python scripts/bench_distillation.py [configs/atari.yaml] [key=value ...] --updates 50

Trains Pong → Breakout briefly (so that both tasks have data and the teachers exist), then times ``train(1)`` on
Breakout with each set of regularisers.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from stable_baselines3.common.logger import configure

from agents.run.arguments import integer
from agents.run.config import ConfigError, load_config
from agents.run.training import apply_threads, make_agent, make_stream
from cl_rl.methods.distillation import Distillation
from envs.sequence import GameSequence, Segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "config",
        nargs="?",
        default="configs/atari.yaml",
        help="base config (agent, env, method) (default: %(default)s)",
    )
    parser.add_argument("overrides", nargs="*", help="overrides such as method.lwf.batch_size=64")
    parser.add_argument(
        "--steps", type=integer(1), default=300, help="agent steps on each game before timing (default: %(default)s)"
    )
    parser.add_argument(
        "--updates", type=integer(1), default=50, help="updates timed per setting (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, [*args.overrides, "method.name=generative_replay", "task.source=oracle"])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config.run.progress_bar = False
    apply_threads(config.run.threads)
    config.agent.learning_starts = min(config.agent.learning_starts, args.steps // 2)
    sequence = GameSequence([Segment("Pong", args.steps), Segment("Breakout", args.steps)])
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(None, [""]))
    model.learn(sequence.total_steps)
    (generated,) = model.methods
    lwf = Distillation("lwf", config.method.lwf, model)
    lwf.on_task_switch(0, 1)
    settings = {"none": [], "generative_replay": [generated], "lwf": [lwf]}
    print(f"torch threads {torch.get_num_threads()}, batch {config.agent.batch_size}, {config.agent.network} network")
    print(
        f"method.generative_replay.batch_size {config.method.generative_replay.batch_size}, generator steps per "
        f"update {config.method.generative_replay.generator.steps_per_update}"
    )
    base = None
    for name, methods in settings.items():
        model.methods = methods
        model.train(gradient_steps=2, batch_size=config.agent.batch_size)  # warm-up
        start = time.perf_counter()
        for _ in range(args.updates):
            model.train(gradient_steps=1, batch_size=config.agent.batch_size)
        ms = 1000 * (time.perf_counter() - start) / args.updates
        base = ms if base is None else base
        print(f"{name:<18} {ms:8.1f} ms/update   (+{ms - base:.1f} ms)")
    stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
