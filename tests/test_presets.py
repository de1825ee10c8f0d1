"""The peer protocol presets: each loads and builds the sequence its paper publishes."""

from __future__ import annotations

import pytest

from agents.run.config import load_config
from envs.games import game_family
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("preset", "games", "segments", "steps_per_segment"),
    [
        ("cchain_minatar", ["MinAtar/SpaceInvaders", "MinAtar/Asterix", "MinAtar/Seaquest"], 3, 2_000_000),
        ("cora_atari", ["SpaceInvaders", "Krull", "BeamRider", "Hero", "StarGunner", "MsPacman"], 30, 3_125_000),
        ("ewc_paper", None, 30, 5_000_000),  # 10 games drawn (seeded) from the paper's pool of 19, 3 visits each
    ],
)
def test_each_preset_loads_and_builds_its_sequence(preset, games, segments, steps_per_segment):
    config = load_config(REPO / "configs" / f"{preset}.yaml")
    sequence = config.sequence.build()
    assert len(sequence.segments) == segments
    assert {s.steps for s in sequence.segments} == {steps_per_segment}
    assert sequence.total_steps == segments * steps_per_segment
    if games is not None:
        assert list(sequence.games) == games
        assert [s.game for s in sequence.segments] == games * (segments // len(games))  # cycles in a fixed order
    else:
        assert len(sequence.games) == 10 and all(
            sum(s.game == g for s in sequence.segments) == 3 for g in sequence.games
        )
    families = {game_family(g) for g in sequence.games}
    assert families == ({"minatar"} if preset == "cchain_minatar" else {"ale"})


def test_cchain_preset_has_the_published_double_dqn_settings():
    c = load_config(REPO / "configs" / "cchain_minatar.yaml")
    a = c.agent
    assert (a.network, a.double_dqn, a.learning_rate, a.gamma, a.batch_size) == ("minatar", True, 3e-4, 0.99, 32)
    assert (a.learning_starts, a.train_freq, a.gradient_steps, a.target_update_interval) == (10_000, 1, 1, 1_000)
    assert (a.exploration_initial_eps, a.exploration_final_eps, a.exploration_steps) == (1.0, 0.1, 100_000)
    assert (a.buffer_size, a.n_step, a.exploration) == (100_000, 1, "epsilon")
    assert (c.eval.every, c.eval.episodes, c.eval.epsilon) == (50_000, 10, 0.0)
