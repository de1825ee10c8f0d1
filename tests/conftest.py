"""Shared fixtures: tiny real-ALE configs and models; one CPU thread for torch here and in every subprocess.

On a shared machine torch's default (one intra-op thread per core) collapses when other jobs hold the cores: the
threads wait for each other's turn (docs/SPEED.md, "Torch threads"). The suite pins one thread for this process and,
through ``OMP_NUM_THREADS``, for the scripts it runs as subprocesses (``scripts/train.py`` also applies
``run.threads``, 1 by default).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported; inherited by subprocesses

from pathlib import Path

import pytest
import torch

from agents.run.config import Config, load_config

torch.set_num_threads(1)  # in case torch was imported before this file (a plugin, an earlier conftest)

REPO = Path(__file__).resolve().parents[1]

# Overrides of configs/minatar.yaml for tests on real MinAtar games at a few hundred agent steps: ~60 updates a game,
# episodes capped so that short segments see whole episodes, no checkpoints or progress bar.
MINATAR_TINY_AGENT = [
    "agent.buffer_size=1000",
    "agent.learning_starts=64",
    "agent.exploration_steps=200",
    "agent.train_freq=4",
    "agent.target_update_interval=100",
    "env.minatar.max_episode_steps=100",
    "run.checkpoint_every=0",
    "run.progress_bar=false",
]


@pytest.fixture
def tiny_config() -> Config:
    """configs/tiny.yaml: Pong → Breakout → Pong, a few hundred agent steps, 100-step episodes."""
    return load_config(REPO / "configs" / "tiny.yaml")
