"""EWC on real games with a tiny budget: after A → B, Q on A's states drifts less than without protection."""

import pytest

from agents.evaluation.comparison import compare
from agents.run.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_ewc_and_mas_reduce_q_drift_on_the_first_game():
    config = load_config(
        REPO / "configs" / "tiny.yaml",
        [f"method.{m}.{k}" for m in ("ewc", "mas") for k in ("lam=100", "normalize=true", "batches=10")],
    )
    results = {r.method: r for r in compare(config, "Pong", "Breakout", 300, 300, ["none", "ewc", "mas"], 0)}
    assert results["none"].q_drift_a > 0
    assert results["ewc"].q_drift_a < 0.5 * results["none"].q_drift_a
    assert results["mas"].q_drift_a < results["none"].q_drift_a
