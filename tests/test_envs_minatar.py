"""MinAtar games through the project's own env code: names, the env, sequences, scores, config checks, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecTransposeImage, is_vecenv_wrapped

from agents.evaluation.play import evaluate_game, play_game
from agents.run.config import ConfigError, load_config, replay_bytes_per_task
from agents.run.training import make_agent, make_stream
from cl_rl.task_source import OracleTaskSource
from envs import (
    MINATAR_GAMES,
    EnvSettings,
    GameSequence,
    MinAtarSettings,
    NoHumanScoreError,
    Segment,
    SequenceEnv,
    UnknownGameError,
    ale_env_id,
    canonical_game,
    game_family,
    has_human_score,
    human_normalized_score,
    human_score,
    make_game_env,
    random_score,
    random_sequence,
)
from envs.minatar import N_CHANNELS, OBSERVATION_SHAPE, MinAtarEnv
from envs.scores import minatar_score_table
from scripts.measure_minatar_random import main as measure_main
from tests.conftest import REPO

MINATAR_CONFIG = REPO / "configs" / "minatar.yaml"
SMALL = ["agent.buffer_size=1000", "agent.learning_starts=50"]


def random_episode(env, seed: int) -> tuple[list[np.ndarray], list[float], dict]:
    """Observations and rewards of one episode with uniformly random actions, and its last info."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards = [obs], []
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            return observations, rewards, info


# --- names ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MinAtar/Breakout", "MinAtar/Breakout"),
        ("minatar/breakout", "MinAtar/Breakout"),
        ("MINATAR/SPACEINVADERS", "MinAtar/SpaceInvaders"),
        ("minatar/space_invaders", "MinAtar/SpaceInvaders"),
        ("MinAtar/SpaceInvaders-v1", "MinAtar/SpaceInvaders"),
        (" minatar/seaquest ", "MinAtar/Seaquest"),
    ],
)
def test_minatar_names_are_canonicalised(name, expected):
    assert canonical_game(name) == expected
    assert game_family(name) == "minatar"


def test_plain_names_stay_atari_games():
    assert canonical_game("breakout") == "Breakout" and game_family("Breakout") == "ale"
    assert ale_env_id("Breakout") == "ALE/Breakout-v5"
    with pytest.raises(ValueError, match="MinAtar game, not an ALE game"):
        ale_env_id("MinAtar/Breakout")


def test_unknown_minatar_name_lists_close_names():
    with pytest.raises(UnknownGameError) as err:
        canonical_game("minatar/brekout")
    message = str(err.value)
    assert "'minatar/brekout'" in message and "MinAtar/Breakout" in message.split("Use one of")[0]
    with pytest.raises(UnknownGameError, match="no close match") as err:
        canonical_game("Minecraft")
    assert all(game in str(err.value) for game in MINATAR_GAMES)


# --- the env --------------------------------------------------------------------------------------------------------
def test_every_game_has_the_same_spaces_and_uint8_grids_of_0_and_255():
    envs = [make_game_env(game, EnvSettings(), seed=0) for game in MINATAR_GAMES]
    first = envs[0]
    assert first.observation_space.shape == OBSERVATION_SHAPE == (10, 10, 10)
    assert first.observation_space.dtype == np.uint8 and first.action_space.n == 6
    for env in envs:
        assert env.observation_space == first.observation_space and env.action_space == first.action_space
        observations, _, _ = random_episode(env, seed=1)
        for obs in observations[:50]:
            assert obs.shape == OBSERVATION_SHAPE and obs.dtype == np.uint8
            assert set(np.unique(obs)) <= {0, 255}
        env.close()


@pytest.mark.parametrize("game", MINATAR_GAMES)
def test_observation_is_minatars_state_channel_first_with_the_padding_zero(game):
    env = make_game_env(game, EnvSettings(), seed=3)
    minatar = env.unwrapped._env
    channels = minatar.state_shape()[2]
    assert 4 <= channels <= N_CHANNELS
    obs, _ = env.reset(seed=3)
    for _ in range(30):
        state = minatar.state()  # (10, 10, channels) bool
        np.testing.assert_array_equal(obs[:channels], np.moveaxis(state, -1, 0).astype(np.uint8) * 255)
        assert not obs[channels:].any()  # channels this game does not have stay zero
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    assert channels == N_CHANNELS or not obs[channels:].any()


def test_all_six_actions_sticky_actions_and_settings_reach_minatar():
    env = make_game_env("MinAtar/Breakout", EnvSettings())
    assert env.action_space.n == 6
    assert env.unwrapped._env.sticky_action_prob == 0.1  # MinAtar's own default
    settings = EnvSettings(minatar=MinAtarSettings(sticky_action_prob=0.0, difficulty_ramping=False))
    env = make_game_env("MinAtar/Seaquest", settings)
    assert env.unwrapped._env.sticky_action_prob == 0.0 and env.unwrapped._env.env.ramping is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sticky_action_prob": 1.5}, "sticky_action_prob"),
        ({"difficulty_ramping": 1}, "difficulty_ramping"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
    ],
)
def test_bad_minatar_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MinAtarSettings(**kwargs)


def test_same_seed_same_games():
    runs = []
    for _ in range(2):
        observations, rewards, _ = random_episode(make_game_env("MinAtar/SpaceInvaders", EnvSettings()), seed=5)
        runs.append((np.stack(observations), rewards))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_monitor_reports_the_raw_episode_score():
    env = make_game_env("MinAtar/SpaceInvaders", EnvSettings(), seed=0)
    for seed in range(5):
        _, rewards, info = random_episode(env, seed=seed)
        assert info["episode"]["r"] == pytest.approx(sum(rewards))
        assert info["episode"]["l"] == len(rewards)


def test_episodes_are_truncated_at_max_episode_steps():
    settings = EnvSettings(minatar=MinAtarSettings(max_episode_steps=40))
    _, rewards, info = random_episode(make_game_env("MinAtar/Freeway", settings), seed=0)  # Freeway lasts 2500 steps
    assert len(rewards) == 40 and info["episode"]["l"] == 40


def test_env_refuses_an_atari_game():
    with pytest.raises(ValueError, match="not a MinAtar game"):
        MinAtarEnv("Breakout")


# --- sequences ------------------------------------------------------------------------------------------------------
def test_sequence_env_switches_minatar_games_and_reports_the_true_game():
    sequence = GameSequence(
        (Segment("minatar/breakout", 60), Segment("minatar/freeway", 40), Segment("MinAtar/Breakout", 30))
    )
    assert sequence.family == "minatar" and sequence.games == ("MinAtar/Breakout", "MinAtar/Freeway")
    stream = SequenceEnv(sequence, lambda game: make_game_env(game, EnvSettings()))
    assert stream.observation_space.shape == OBSERVATION_SHAPE
    obs, info = stream.reset(seed=0)
    games, segment_ends = [], []
    for step in range(sequence.total_steps):
        obs, _, terminated, truncated, info = stream.step(stream.action_space.sample())
        games.append(info["game"])
        if info.get("segment_end"):
            segment_ends.append(step + 1)
        if terminated or truncated:
            obs, info = stream.reset()
        assert obs.shape == OBSERVATION_SHAPE
    assert segment_ends == [60, 100, 130]
    assert games == ["MinAtar/Breakout"] * 60 + ["MinAtar/Freeway"] * 40 + ["MinAtar/Breakout"] * 30
    stream.close()


def test_a_sequence_cannot_mix_atari_and_minatar_games():
    with pytest.raises(ValueError, match=r"cannot mix Atari games .*Pong.* with MinAtar games .*MinAtar/Breakout"):
        GameSequence((Segment("Pong", 10), Segment("MinAtar/Breakout", 10)))
    with pytest.raises(ValueError, match="cannot mix"):
        random_sequence(
            ["Pong", "MinAtar/Breakout", "MinAtar/Freeway"], n_games=2, visits_per_game=1, steps_per_segment=10, seed=0
        )
    with pytest.raises(ConfigError, match=r"sequence.segments: a sequence cannot mix"):
        load_config(MINATAR_CONFIG, ["sequence.segments.1.game=Pong"])
    with pytest.raises(ConfigError, match=r"sequence.random: a sequence cannot mix"):
        load_config(MINATAR_CONFIG, ["sequence.segments=[]", "sequence.random.pool=[Pong, minatar/asterix]"])


# --- scores ---------------------------------------------------------------------------------------------------------
def test_random_scores_come_from_the_measured_table_and_there_is_no_hns():
    table = minatar_score_table()
    assert set(table) == set(MINATAR_GAMES)
    for game in MINATAR_GAMES:
        mean, sd = table[game]
        assert random_score(game.lower()) == mean and 0 <= mean < 10 and sd >= 0
        assert not has_human_score(game)
        with pytest.raises(NoHumanScoreError, match="no human score"):
            human_normalized_score(game, 1.0)
        with pytest.raises(NoHumanScoreError):
            human_score(game)
    assert has_human_score("Pong") and random_score("Pong") == -20.7  # the ALE table is unchanged


# --- config ---------------------------------------------------------------------------------------------------------
def test_minatar_config_loads_with_its_settings():
    config = load_config(MINATAR_CONFIG)
    assert config.sequence.build().family == "minatar"
    assert config.env.minatar == MinAtarSettings()
    assert (config.agent.network, config.agent.replay, config.agent.train_freq) == ("minatar", "sb3", 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent.network=nature"], "agent.network='nature' is sized for ale games.*set agent.network to 'minatar'"),
        (["agent.network=ewc"], "agent.network='ewc'"),
        (["agent.replay=frames"], "agent.replay: sb3 for MinAtar"),
    ],
)
def test_settings_that_cannot_play_minatar_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(MINATAR_CONFIG, overrides)


def test_minatar_network_is_refused_for_atari_games():
    with pytest.raises(ConfigError, match=r"agent.network='minatar' is sized for minatar games.*'ewc' or 'nature'"):
        load_config(REPO / "configs" / "tiny.yaml", ["agent.network=minatar"])


def test_inferred_tasks_and_other_methods_are_accepted_with_minatar():
    config = load_config(MINATAR_CONFIG, ["task.source=fmn", "method.name=ewc+lwf"])
    assert config.task.source == "fmn"


def test_replay_memory_estimate_is_what_sb3_allocates_for_minatar():
    config = load_config(MINATAR_CONFIG, ["agent.buffer_size=3000"])
    env = make_game_env("MinAtar/Breakout", config.env)
    buffer = ReplayBuffer(3000, env.observation_space, env.action_space, device="cpu")
    arrays = (buffer.observations, buffer.next_observations, buffer.actions, buffer.rewards, buffer.dones)
    assert replay_bytes_per_task(config) == sum(a.nbytes for a in arrays) + buffer.timeouts.nbytes
    assert replay_bytes_per_task(config) == 3000 * (2 * 1000 + 20)


# --- playing --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minatar_model():
    config = load_config(MINATAR_CONFIG, SMALL)
    stream, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    model.policy.add_task()
    model.policy.set_task(0)
    yield model, config
    stream.close()


def test_sb3_takes_the_grids_as_channel_first_images_divided_by_255(minatar_model):
    model, _ = minatar_model
    assert not is_vecenv_wrapped(model.get_env(), VecTransposeImage)  # (10, 10, 10) could pass for channel-last too
    assert model.policy.normalize_images and model.policy.observation_space.shape == OBSERVATION_SHAPE


def test_evaluate_game_plays_a_minatar_game(minatar_model):
    model, config = minatar_model
    scores = evaluate_game(model, "MinAtar/Breakout", 0, config.env, episodes=3, epsilon=0.05, seed=0)
    assert len(scores) == 3 and all(score >= 0 for score in scores)
    assert scores == evaluate_game(model, "minatar/breakout", 0, config.env, episodes=3, epsilon=0.05, seed=0)


def test_a_minatar_evaluation_has_a_raw_score_and_no_hns(minatar_model):
    model, config = minatar_model
    result = play_game(model, "MinAtar/SpaceInvaders", OracleTaskSource(), config.env, 2, 1.0, seed=0)
    assert len(result.scores) == 2 and math.isnan(result.hns)


def test_measure_script_prints_mean_and_sd_of_every_game(capsys):
    assert measure_main(["--episodes", "2"]) == 0  # without --write: the packaged table stays as it is
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(MINATAR_GAMES)
    assert all("±" in line for line in lines[1:])
