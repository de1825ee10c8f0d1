#!/usr/bin/env python
"""Does Q-learning on a finished task's fixed memory alone lower that task's score? (the rehearsal question)

python scripts/probe_rehearsal.py [--game MinAtar/Breakout] [--steps 10000] [--updates 2500] [--seeds 0 1 2]

In the MinAtar table (docs/RESULTS.md) rehearsal's Breakout fell in every seed while SpaceInvaders was trained,
where fine-tuning's did not. Rehearsal is the only method there that keeps taking TD steps on an earlier task's
memory, which no longer grows: offline Q-learning, known to drift where the data do not constrain the Q-values. This
probe isolates that term: it trains ``--game`` alone with the table's preset for ``--steps`` agent steps (at least
the preset's ``learning_starts``, or the agent takes no update), then takes ``--updates`` of the agent's own updates
(``ContinualDQN.train``) on that task's memory only (batch 32, target synced every 250 updates, as the preset's
1,000 agent steps at one update per 4), and scores the game (16 episodes, ε = 0.05) before and after. A second score
before the updates, with other episode seeds, shows the evaluation's own noise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from agents.evaluation.play import evaluate_game
from agents.run.config import ConfigError, load_config
from agents.run.training import apply_threads, train

PRESET = Path(__file__).resolve().parents[1] / "configs" / "minatar_table.yaml"


def probe(game: str, steps: int, updates: int, seed: int) -> tuple[float, float, float]:
    """Scores of ``game`` after training it alone: before, before (other episodes), after the offline updates."""
    overrides = [f"run.seed={seed}", "task.source=oracle", "eval.enabled=false", "run.progress_bar=false"]
    overrides += ["run.checkpoint_every=0", f"sequence.segments=[{{game: {game}, steps: {steps}}}]"]
    config = load_config(PRESET, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        model = train(config, Path(tmp) / "run").model
    before = float(np.mean(evaluate_game(model, game, 0, config.env, episodes=16, seed=100 + seed)))
    noise = float(np.mean(evaluate_game(model, game, 0, config.env, episodes=16, seed=200 + seed)))
    for done in range(0, updates, 250):  # the agent's own update (ContinualDQN.train) on the current task's memory
        model.train(gradient_steps=min(250, updates - done), batch_size=32)
        model.q_net_target.load_state_dict(model.q_net.state_dict())
    after = float(np.mean(evaluate_game(model, game, 0, config.env, episodes=16, seed=100 + seed)))
    return before, noise, after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="MinAtar/Breakout")
    parser.add_argument("--steps", type=int, default=10_000, help="agent steps of training before the probe")
    parser.add_argument("--updates", type=int, default=2_500, help="TD updates on the fixed memory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    apply_threads(1)
    print(f"{args.game}: {args.steps} agent steps alone, then {args.updates} TD updates on its own fixed memory")
    print("seed  before  before(other episodes)  after")
    try:
        for seed in args.seeds:
            before, noise, after = probe(args.game, args.steps, args.updates, seed)
            print(f"{seed:4d}  {before:6.2f}  {noise:22.2f}  {after:5.2f}", flush=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
