"""Every random generator that changes training, captured into a checkpoint and restored on resume.

SB3 seeds Python's ``random``, numpy's global generator, torch and the action space from ``seed`` once, at set-up;
to continue a run as if it had not stopped, their *current* states travel in the checkpoint instead. The emulator's
own state is not among them: a resumed run starts a new episode (the ALE cannot restore a game mid-episode through
gymnasium's wrappers), so a resume is exact up to the episode in progress.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from gymnasium import spaces


def capture_rng_state(action_space: spaces.Space | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if action_space is not None:
        state["action_space"] = action_space.np_random.bit_generator.state
    return state


def restore_rng_state(state: dict[str, Any], action_space: spaces.Space | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if action_space is not None and "action_space" in state:
        action_space.np_random.bit_generator.state = state["action_space"]
