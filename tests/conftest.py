"""Shared fixtures: tiny real-ALE configs and models."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.run.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_config() -> Config:
    """configs/tiny.yaml: Pong → Breakout → Pong, a few hundred agent steps, 100-step episodes."""
    return load_config(REPO / "configs" / "tiny.yaml")
