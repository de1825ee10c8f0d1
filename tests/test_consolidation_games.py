"""EWC and MAS on real games with a tiny budget: after A → B, Q on A's states drifts less than without protection.

MinAtar Breakout → SpaceInvaders, 300 agent steps each: the same machinery as on ALE at a small network's cost (the
ALE version of this test took minutes of the suite; `scripts/compare_consolidation.py` runs it on any games).
"""

import pytest

from agents.evaluation.comparison import compare
from agents.run.config import load_config
from tests.conftest import MINATAR_TINY_AGENT, REPO

pytestmark = pytest.mark.slow


def test_ewc_and_mas_reduce_q_drift_on_the_first_game():
    overrides = [f"method.{m}.{k}" for m in ("ewc", "mas") for k in ("lam=100", "normalize=true", "batches=10")]
    config = load_config(REPO / "configs" / "minatar.yaml", [*MINATAR_TINY_AGENT, *overrides])
    methods = ["none", "ewc", "mas"]
    results = {r.method: r for r in compare(config, "MinAtar/Breakout", "MinAtar/SpaceInvaders", 300, 300, methods, 0)}
    assert results["none"].q_drift_a > 0
    assert results["ewc"].q_drift_a < 0.5 * results["none"].q_drift_a
    assert results["mas"].q_drift_a < 0.5 * results["none"].q_drift_a
