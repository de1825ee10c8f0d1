"""Game names, the score table and human-normalised scores."""

import ale_py
import gymnasium as gym
import pytest

from envs.games import ALL_GAMES, UnknownGameError, ale_env_id, canonical_game
from envs.scores import human_normalized_score, human_score, random_score, score_table

gym.register_envs(ale_py)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Pong", "Pong"),
        ("pong", "Pong"),
        ("PONG", "Pong"),
        ("space_invaders", "SpaceInvaders"),
        ("Space Invaders", "SpaceInvaders"),
        ("spaceinvaders", "SpaceInvaders"),
        ("ALE/SpaceInvaders-v5", "SpaceInvaders"),
        ("SpaceInvadersNoFrameskip-v4", "SpaceInvaders"),
        ("montezuma_revenge", "MontezumaRevenge"),
        ("up_n_down", "UpNDown"),
        ("ms_pacman", "MsPacman"),
        ("  breakout ", "Breakout"),
    ],
)
def test_canonical_game_accepts_common_spellings(name, expected):
    assert canonical_game(name) == expected


def test_canonical_game_is_identity_on_all_games():
    assert len(ALL_GAMES) == len(set(ALL_GAMES)) == 57
    assert all(canonical_game(game) == game for game in ALL_GAMES)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Pongg", "Pong"),
        ("SpaceInvader", "SpaceInvaders"),
        ("space invadres", "SpaceInvaders"),
        ("Brekout", "Breakout"),
    ],
)
def test_unknown_game_lists_close_names(name, suggestion):
    with pytest.raises(UnknownGameError) as err:
        canonical_game(name)
    message = str(err.value)
    assert repr(name) in message
    assert suggestion in message.split("Use one of")[0]
    assert "Use one of" in message
    assert isinstance(err.value, ValueError)


def test_unknown_game_without_close_match_lists_all_names():
    with pytest.raises(UnknownGameError, match="no close match") as err:
        canonical_game("Minecraft")
    assert all(game in str(err.value) for game in ALL_GAMES)


def test_non_ale_game_is_rejected():
    with pytest.raises(UnknownGameError):
        canonical_game("Adventure")  # an ALE game, but not one of the 57 benchmark games


def test_every_game_maps_to_its_ale_rom():
    rom_ids = set(ale_py.roms.get_all_rom_ids())
    for game in ALL_GAMES:
        spec = gym.spec(ale_env_id(game))
        assert spec.kwargs["game"] in rom_ids, game
        assert canonical_game(spec.kwargs["game"]) == game  # snake_case ROM id round-trips


def test_ale_env_id():
    assert ale_env_id("pong") == "ALE/Pong-v5"
    assert ale_env_id("kung_fu_master") == "ALE/KungFuMaster-v5"


def test_score_table_has_all_games():
    table = score_table()
    assert set(table) == set(ALL_GAMES)
    assert all(human > rand for rand, human in table.values())


def test_score_table_values_from_dqn_zoo():
    assert (random_score("Pong"), human_score("Pong")) == (-20.7, 14.6)
    assert (random_score("breakout"), human_score("breakout")) == (1.7, 30.5)
    assert (random_score("Skiing"), human_score("Skiing")) == (-17098.1, -4336.9)
    assert (random_score("video_pinball"), human_score("video_pinball")) == (16256.9, 17667.9)


@pytest.mark.parametrize("game", ALL_GAMES)
def test_human_normalized_score_is_zero_for_random_and_one_for_human(game):
    assert human_normalized_score(game, random_score(game)) == pytest.approx(0.0)
    assert human_normalized_score(game, human_score(game)) == pytest.approx(1.0)


def test_human_normalized_score_is_linear():
    assert human_normalized_score("Breakout", 1.7 + 2 * (30.5 - 1.7)) == pytest.approx(2.0)
    assert human_normalized_score("ALE/Pong-v5", -20.7 - 35.3) == pytest.approx(-1.0)


def test_scores_reject_unknown_game():
    with pytest.raises(UnknownGameError, match="Pong"):
        human_normalized_score("Pongg", 0.0)
