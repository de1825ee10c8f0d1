"""Generative replay and LwF on real games with a tiny budget: after A → B, Q on A's states drifts less than without.

MinAtar Breakout → SpaceInvaders, 300 agent steps each (see tests/test_consolidation_games.py).
"""

import pytest

from agents.evaluation.comparison import compare
from agents.run.config import load_config
from tests.conftest import MINATAR_TINY_AGENT, REPO

pytestmark = pytest.mark.slow


def test_generative_replay_and_lwf_reduce_q_drift_on_the_first_game():
    overrides = [*MINATAR_TINY_AGENT, "method.generative_replay.generator.steps_per_switch=100"]
    config = load_config(REPO / "configs" / "minatar.yaml", overrides)
    methods = ["none", "generative_replay", "lwf"]
    results = {r.method: r for r in compare(config, "MinAtar/Breakout", "MinAtar/SpaceInvaders", 300, 300, methods, 0)}
    assert results["none"].q_drift_a > 0
    assert results["generative_replay"].q_drift_a < 0.5 * results["none"].q_drift_a
    assert results["lwf"].q_drift_a < 0.5 * results["none"].q_drift_a
