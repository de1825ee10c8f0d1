from pathlib import Path

import pytest

from agents.run.config import ConfigError, apply_override, config_from_dict, load_config
from tests.conftest import REPO


@pytest.mark.parametrize(
    "name", ["first_run", "atari", "tiny", "ewc_paper", "cora_atari", "minatar", "minatar_table", "generative_replay"]
)
def test_presets_load_and_validate(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.sequence.build().total_steps > 0


def test_ewc_paper_preset_draws_10_games_with_revisits_and_is_seedable():
    a = load_config(REPO / "configs" / "ewc_paper.yaml").sequence.build()
    b = load_config(REPO / "configs" / "ewc_paper.yaml", ["sequence.random.seed=1"]).sequence.build()
    assert len(a.games) == 10 and len(a.segments) == 30
    assert all(x.game != y.game for x, y in zip(a.segments, a.segments[1:], strict=False))
    assert [s.game for s in a.segments] != [s.game for s in b.segments]


def test_overrides_are_parsed_as_yaml_and_reach_nested_keys():
    config = load_config(
        REPO / "configs" / "tiny.yaml",
        ["agent.learning_rate=1e-3", "env.terminal_on_life_loss=true", "sequence.segments.1.game=freeway"],
    )
    assert config.agent.learning_rate == 1e-3
    assert config.env.terminal_on_life_loss is True
    assert config.sequence.build().segments[1].game == "Freeway"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agent.bach_size=64", "unknown config key 'agent.bach_size'; did you mean batch_size"),
        ("agnet.batch_size=64", "unknown config key 'agnet'; did you mean agent"),
        ("agent.batch_size=big", "agent.batch_size must be an integer, got 'big'"),
        ("agent.double_dqn=3", "agent.double_dqn must be true or false"),
        ("agent.network=resnet", "agent.network must be one of 'nature', 'ewc'"),
        ("agent.batch_size=20000", "larger than agent.buffer_size"),
        ("agent.gamma=1.5", "agent.gamma must lie in [0, 1]"),
        ("env.sticky_action_prob=2", "sticky_action_prob must be a float in [0, 1]"),
        ("sequence.segments.0.game=Pongg", "Pong"),
        ("sequence.segments.0.steps=-5", "steps must be a positive integer"),
        ("sequence.segments.7.steps=5", "not an index of a list of 3"),
        ("agent.batch_size", "not of the form key.sub=value"),
    ],
)
def test_bad_config_values_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "tiny.yaml", [override])
    assert message in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="exactly one of"):
        config_from_dict({"sequence": {}})


def test_apply_override_builds_missing_sections():
    data: dict = {}
    apply_override(data, "run.seed=3")
    assert data == {"run": {"seed": 3}}
