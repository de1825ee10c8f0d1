"""Generative replay and LwF on real games with a tiny budget: after A → B, Q on A's states drifts less than without."""

import pytest

from agents.evaluation.comparison import compare
from agents.run.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_generative_replay_and_lwf_reduce_q_drift_on_the_first_game():
    config = load_config(REPO / "configs" / "tiny.yaml", ["method.generative_replay.generator.steps_per_switch=100"])
    methods = ["none", "generative_replay", "lwf"]
    results = {r.method: r for r in compare(config, "Pong", "Breakout", 300, 300, methods, 0)}
    assert results["none"].q_drift_a > 0
    assert results["generative_replay"].q_drift_a < 0.7 * results["none"].q_drift_a
    assert results["lwf"].q_drift_a < 0.7 * results["none"].q_drift_a
