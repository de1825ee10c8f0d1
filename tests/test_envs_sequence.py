"""Game sequences: schedule arithmetic, random sequences, and SequenceEnv switching on real games."""

import collections
import itertools

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.atari import AtariSettings, make_atari_env
from envs.games import ALL_GAMES, UnknownGameError
from envs.sequence import GameSequence, Segment, SequenceEnv, random_sequence

SETTINGS = AtariSettings(terminal_on_life_loss=True)  # life losses give episode ends inside segments
PONG_BREAKOUT_PONG = GameSequence((Segment("Pong", 30), Segment("breakout", 20), Segment("Pong", 25)))


class CountingFactory:
    """make_env that records how often each game's env is built."""

    def __init__(self) -> None:
        self.made: collections.Counter[str] = collections.Counter()

    def __call__(self, game: str):
        self.made[game] += 1
        return make_atari_env(game, SETTINGS)


def expected_games(sequence: GameSequence) -> list[str]:
    return [segment.game for segment in sequence.segments for _ in range(segment.steps)]


# --- GameSequence -----------------------------------------------------------------------------------------------


def test_sequence_schedule():
    seq = PONG_BREAKOUT_PONG
    assert len(seq) == 3 and seq.total_steps == 75
    assert seq.ends == (30, 50, 75)
    assert seq.games == ("Pong", "Breakout")
    assert [seq.segment_at(step) for step in (0, 29, 30, 49, 50, 74)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="75"):
        seq.segment_at(75)


def test_sequence_list_round_trip():
    items = [{"game": "Pong", "steps": 30}, {"game": "Breakout", "steps": 20}, {"game": "Pong", "steps": 25}]
    assert PONG_BREAKOUT_PONG.to_list() == items
    assert GameSequence.from_list(items) == PONG_BREAKOUT_PONG
    assert GameSequence.from_list([{"game": "space_invaders", "steps": 5}]).segments[0].game == "SpaceInvaders"
    with pytest.raises(ValueError, match="'game' and 'steps'"):
        GameSequence.from_list([{"game": "Pong"}])


@pytest.mark.parametrize("steps", [0, -5, 1.5, True])
def test_segment_steps_must_be_positive_int(steps):
    with pytest.raises(ValueError, match=r"Segment\.steps") as err:
        Segment("Pong", steps)
    assert repr(steps) in str(err.value)


def test_segment_rejects_unknown_game():
    with pytest.raises(UnknownGameError, match="Pong"):
        Segment("Pongg", 10)


def test_empty_sequence_is_rejected():
    with pytest.raises(ValueError, match="segments must not be empty"):
        GameSequence(())
    with pytest.raises(ValueError, match="empty"):
        GameSequence.from_list([])


# --- random_sequence --------------------------------------------------------------------------------------------


def test_random_sequence_is_seedable():
    first = random_sequence(ALL_GAMES, 5, 3, 1_000, seed=1)
    assert first == random_sequence(ALL_GAMES, 5, 3, 1_000, seed=1)
    assert first != random_sequence(ALL_GAMES, 5, 3, 1_000, seed=2)


@pytest.mark.parametrize(("n_games", "visits"), [(2, 4), (3, 3), (5, 2), (6, 1)])
def test_random_sequence_visits_and_no_consecutive_repeats(n_games, visits):
    for seed in range(50):
        seq = random_sequence(ALL_GAMES, n_games, visits, 100, seed)
        games = [segment.game for segment in seq.segments]
        assert len(set(games)) == n_games
        assert set(collections.Counter(games).values()) == {visits}
        assert all(a != b for a, b in itertools.pairwise(games)), games
        assert all(segment.steps == 100 for segment in seq.segments)


def test_random_sequence_draws_from_pool():
    pool = ["pong", "Breakout", "space_invaders"]
    seq = random_sequence(pool, 3, 2, 10, seed=0)
    assert set(seq.games) == {"Pong", "Breakout", "SpaceInvaders"}


@pytest.mark.parametrize(
    ("n_games", "visits", "match"), [(0, 1, "n_games"), (4, 1, "n_games"), (2, 0, "visits_per_game"), (1, 2, "n_games")]
)
def test_random_sequence_rejects_impossible_requests(n_games, visits, match):
    with pytest.raises(ValueError, match=match):
        random_sequence(["Pong", "Breakout", "Boxing"], n_games, visits, 10, seed=0)


# --- SequenceEnv ------------------------------------------------------------------------------------------------


def test_sequence_env_switches_at_configured_steps_and_reuses_envs():
    factory = CountingFactory()
    env = SequenceEnv(PONG_BREAKOUT_PONG, factory)
    assert env.observation_space.shape == (4, 84, 84) and env.action_space.n == 18
    expected = expected_games(PONG_BREAKOUT_PONG)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=7)
    assert (info["game"], info["segment"]) == ("Pong", 0)
    pong_env = env._envs["Pong"]
    first_obs_of_segment = {0: obs}
    for step, game in enumerate(expected):
        obs, _, terminated, truncated, info = env.step(int(rng.integers(18)))
        assert info["game"] == game == env.current_game
        assert env.steps_done == step + 1
        boundary = step + 1 in PONG_BREAKOUT_PONG.ends
        assert info.get("segment_end", False) == boundary
        if boundary:
            assert truncated
        if terminated or truncated:  # auto-reset, as a VecEnv does
            obs, info = env.reset()
            if boundary and step + 1 < PONG_BREAKOUT_PONG.total_steps:
                first_obs_of_segment[info["segment"]] = obs
                assert info["game"] == PONG_BREAKOUT_PONG.segments[info["segment"]].game
    assert factory.made == {"Pong": 1, "Breakout": 1}  # Pong's env is kept and reused on the revisit
    assert env._envs["Pong"] is pong_env
    # The observation after the switch is the Breakout env's first reset, seeded with seed + its index in games.
    breakout = make_atari_env("Breakout", SETTINGS)
    np.testing.assert_array_equal(first_obs_of_segment[1], breakout.reset(seed=7 + 1)[0])
    assert not np.array_equal(first_obs_of_segment[1], first_obs_of_segment[2])
    env.close()


def test_sequence_env_is_reproducible_under_a_seed():
    def rollout() -> list[np.ndarray]:
        env = SequenceEnv(GameSequence((Segment("Pong", 5), Segment("Breakout", 5))), CountingFactory())
        frames = [env.reset(seed=3)[0]]
        for _ in range(10):
            obs, _, terminated, truncated, _ = env.step(1)
            frames.append(obs)
            if terminated or truncated:
                frames.append(env.reset()[0])
        return frames

    for a, b in zip(rollout(), rollout(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sequence_env_in_dummy_vec_env():
    seq = GameSequence((Segment("Pong", 10), Segment("Breakout", 10)))
    venv = DummyVecEnv([lambda: SequenceEnv(seq, CountingFactory())])
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (1, 4, 84, 84)
    games = []
    for _ in range(seq.total_steps):
        obs, _, dones, infos = venv.step(np.array([0]))
        games.append(infos[0]["game"])
        if infos[0].get("segment_end"):
            assert dones[0] and infos[0]["TimeLimit.truncated"] and "terminal_observation" in infos[0]
    assert games == expected_games(seq)
    with pytest.raises(RuntimeError, match="over"):
        venv.step(np.array([0]))


def test_sequence_env_passes_gymnasium_and_sb3_env_checkers():
    seq = GameSequence((Segment("Pong", 1_000), Segment("Breakout", 1_000)))
    check_env(SequenceEnv(seq, CountingFactory()), skip_render_check=True)
    sb3_check_env(SequenceEnv(seq, CountingFactory()), warn=True)


def test_seek_resumes_at_a_global_step():
    env = SequenceEnv(PONG_BREAKOUT_PONG, CountingFactory())
    env.seek(35)
    _, info = env.reset(seed=0)
    assert (info["game"], info["segment"], env.steps_done) == ("Breakout", 1, 35)
    env.seek(50)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    _, info = env.reset()
    assert (info["game"], info["segment"]) == ("Pong", 2)
    for _ in range(25):
        _, _, terminated, truncated, info = env.step(0)
        if (terminated or truncated) and not info.get("segment_end"):
            env.reset()
    assert info["segment_end"] and env.steps_done == 75
    with pytest.raises(ValueError, match="76"):
        env.seek(76)


def test_stepping_past_the_end_raises():
    env = SequenceEnv(GameSequence((Segment("Pong", 3),)), CountingFactory())
    env.reset(seed=0)
    for _ in range(3):
        _, _, _, truncated, info = env.step(0)
    assert truncated and info["segment_end"]
    _, info = env.reset()  # a VecEnv resets after the last step: allowed, the last game is shown
    assert (info["game"], info["segment"]) == ("Pong", 0)
    with pytest.raises(RuntimeError, match="over after 3 agent steps"):
        env.step(0)


def test_step_before_reset_raises():
    env = SequenceEnv(GameSequence((Segment("Pong", 3),)), CountingFactory())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_revisit_starts_a_new_game_under_episodic_life():
    """A segment that ends mid-game does not leave the game to be resumed on the revisit."""
    seq = GameSequence((Segment("Breakout", 40), Segment("Pong", 5), Segment("Breakout", 5)))
    env = SequenceEnv(seq, CountingFactory())
    env.reset(seed=0)
    for _ in range(40):
        _, _, terminated, truncated, info = env.step(1)
        if (terminated or truncated) and not info.get("segment_end"):
            env.reset()
    env.reset()
    for _ in range(5):
        env.step(0)
    _, info = env.reset()
    assert info["game"] == "Breakout" and info["lives"] == 5 and info["episode_frame_number"] <= 30


def test_sub_envs_with_different_spaces_are_rejected():
    def make(game: str):
        return make_atari_env(game, SETTINGS if game == "Pong" else AtariSettings(frame_stack=2))

    env = SequenceEnv(GameSequence((Segment("Pong", 1), Segment("Breakout", 1))), make)
    env.reset()
    env.step(0)
    with pytest.raises(ValueError, match="Breakout"):
        env.reset()
