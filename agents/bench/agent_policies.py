"""Learning agents as the players of task-inference streams: checkpoints of real training runs, trained once and cached.

A learning agent sees other screens than a random player: a trained MinAtar Freeway chicken crosses the road from the
first steps of an episode, a trained Breakout paddle follows the ball. So the task-inference benchmark also plays its
streams with agents (``agents.bench.inference_stream``), named ``agent:<run>@<step>``: the checkpoint at agent step
``<step>`` of the training run ``<run>``, played ε-greedily with the task of the game it plays.

The runs (``AGENT_RUNS``) are the CPU table's preset (``configs/minatar_table.yaml``) with the true task ids (an
oracle: the benchmark wants each game's own policy, not the inference's mistakes), on a seed no table run uses:
- ``table``: the table's sequence (Breakout → SpaceInvaders → Freeway, twice, 10,000 agent steps a visit), so its
  checkpoints are the policies of the table's runs at every point of training;
- ``long``: one game alone for 50,000 agent steps, five times a table visit, one run per game (the policy a user's
  longer run reaches).

Each run is trained on first use into ``$CL_RL_FRAME_CACHE/agents/<run>[-<game>]`` (minutes of CPU each) and reused
after; its checkpoints are kept every 5,000 agent steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cl_rl.task_modulation import add_task, set_task, task_affine_layers

PRESET = Path(__file__).resolve().parents[2] / "configs" / "minatar_table.yaml"
SEED = 100  # the table uses seeds 0, 1, 2, …; the tuning sweeps 1000 and above
CHECKPOINT_EVERY = 5_000
TABLE_GAMES = ("MinAtar/Breakout", "MinAtar/SpaceInvaders", "MinAtar/Freeway")


@dataclass(frozen=True)
class AgentRun:
    """A training run whose checkpoints play streams: the preset's ``segments``, or one game alone for ``steps``."""

    name: str
    segments: tuple[tuple[str, int], ...] = ()  # () : the stream's own game alone for ``steps`` agent steps
    steps: int = 0

    def sequence(self, game: str) -> tuple[tuple[str, int], ...]:
        return self.segments or ((game, self.steps),)

    def directory(self, root: Path, game: str) -> Path:
        return root / "agents" / (self.name if self.segments else f"{self.name}-{game.replace('/', '_')}")


AGENT_RUNS = {
    "table": AgentRun("table", segments=tuple((g, 10_000) for g in TABLE_GAMES * 2)),
    "long": AgentRun("long", steps=50_000),
}
_NAME = re.compile(r"^agent:(\w+)@(\d+)$")


def is_agent_policy(policy: str) -> bool:
    return policy.startswith("agent:")


def parse_agent_policy(policy: str) -> tuple[AgentRun, int]:
    """``'agent:table@30000'`` → (the run, 30000); ValueError naming the known runs otherwise."""
    match = _NAME.match(policy)
    if not match or match.group(1) not in AGENT_RUNS:
        raise ValueError(f"agent policy {policy!r} is not agent:<run>@<step> with a run among {', '.join(AGENT_RUNS)}")
    step = int(match.group(2))
    if step % CHECKPOINT_EVERY:
        raise ValueError(f"agent policy {policy!r}: checkpoints are every {CHECKPOINT_EVERY} agent steps")
    return AGENT_RUNS[match.group(1)], step


def agent_checkpoint(policy: str, game: str, root: Path) -> Path:
    """The checkpoint that plays ``game`` as ``policy``, training its run first if it is not cached under ``root``."""
    from agents.run.checkpoints import checkpoint_path
    from agents.run.training import CHECKPOINT_DIR

    run, step = parse_agent_policy(policy)
    run_dir = run.directory(root, game)
    path = checkpoint_path(run_dir / CHECKPOINT_DIR, step)
    if not path.is_file():
        _train(run, game, run_dir)
    if not path.is_file():
        raise ValueError(f"agent policy {policy!r}: run {run_dir} has no checkpoint at agent step {step}")
    return path


def _train(run: AgentRun, game: str, run_dir: Path) -> None:
    """Train ``run`` (for ``game`` if it is a one-game run) into ``run_dir``, replacing a partial one."""
    from agents.run.config import load_config
    from agents.run.training import train

    overrides = [
        "task.source=oracle",
        "eval.enabled=false",
        f"run.seed={SEED}",
        f"run.checkpoint_every={CHECKPOINT_EVERY}",
        "run.keep_checkpoints=0",
        "run.progress_bar=false",
        f"run.name=streams_{run.name}",
    ]
    config = load_config(PRESET, overrides)
    config.sequence.segments = [{"game": g, "steps": s} for g, s in run.sequence(game)]
    print(f"training the stream player {run_dir.name} ({sum(s for _, s in run.sequence(game))} agent steps)")
    train(config, run_dir, overwrite=True)


class AgentPolicy:
    """A checkpoint's greedy policy for one game, ε-greedy (``act(observation)``), batch of one on the CPU.

    The game's task is the one the run's oracle gave it; a game the checkpoint has not trained yet is played with a
    new task's gains and biases, as the agent would meet it.
    """

    def __init__(self, checkpoint: Path, game: str, epsilon: float, rng: np.random.Generator) -> None:
        from agents.sb3.continual_dqn import ContinualDQN

        model = ContinualDQN.load(checkpoint, device="cpu")
        self.net = model.q_net
        ids = model.task_source.state_dict().get("ids", {})
        if game not in ids:
            add_task(self.net)
        set_task(self.net, ids.get(game, task_affine_layers(self.net)[0].n_tasks - 1))
        self.n = int(model.action_space.n)  # type: ignore[attr-defined]  # Discrete
        self.epsilon, self.rng = epsilon, rng

    def new_episode(self) -> None:
        pass

    def act(self, observation: np.ndarray) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.n))
        with torch.no_grad():
            q = self.net(torch.as_tensor(np.asarray(observation)[None]))
        return int(q.argmax(dim=1).item())
