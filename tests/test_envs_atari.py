"""The Atari env factory: wrapper chain, spaces, reward clipping, life loss and settings validation."""

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
from stable_baselines3.common.atari_wrappers import ClipRewardEnv
from stable_baselines3.common.monitor import Monitor

from envs.atari import AtariSettings, make_atari_env
from envs.games import ALL_GAMES

gym.register_envs(ale_py)


def reference_env(game: str) -> gym.Env:
    """The default chain built by hand from gymnasium and SB3 wrappers."""
    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,
        full_action_space=True,
        repeat_action_probability=0.0,
        max_num_frames_per_episode=108_000,
    )
    env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=False)
    return FrameStackObservation(ClipRewardEnv(Monitor(env)), 4)


def run(env: gym.Env, actions: np.ndarray, seed: int) -> list[tuple]:
    """Step `env` through `actions` from reset(seed), auto-resetting; return (obs, reward, terminated, truncated)."""
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0, False, False)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(int(action))
        out.append((obs, float(reward), terminated, truncated))
        if terminated or truncated:
            obs, _ = env.reset()
    return out


def random_episode(env: gym.Env, seed: int, max_steps: int = 5_000) -> tuple[list[float], list[dict]]:
    """Rewards and infos of one full game under a seeded random policy."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    rewards, infos = [], []
    for _ in range(max_steps):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        rewards.append(float(reward))
        infos.append(info)
        if "episode" in info:
            return rewards, infos
        if terminated or truncated:
            env.reset()
    raise AssertionError(f"no game over within {max_steps} steps")


def test_factory_matches_reference_chain():
    env, ref = make_atari_env("Breakout", AtariSettings()), reference_env("Breakout")
    assert env.observation_space == ref.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert env.action_space == ref.action_space == gym.spaces.Discrete(18)
    actions = np.random.default_rng(0).integers(0, 18, size=200)
    got, expected = run(env, actions, seed=3), run(ref, actions, seed=3)
    for (obs, *rest), (ref_obs, *ref_rest) in zip(got, expected, strict=True):
        assert obs.dtype == np.uint8 and obs.shape == (4, 84, 84)
        np.testing.assert_array_equal(obs, ref_obs)
        assert rest == ref_rest
    assert any(terminated for _, _, terminated, _ in got)  # the run covers a game over and the reset after it


def test_seed_argument_makes_unseeded_resets_reproducible():
    first = [make_atari_env("Pong", AtariSettings(), seed=11).reset()[0] for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    other = make_atari_env("Pong", AtariSettings(), seed=11)
    assert other.action_space.sample() == make_atari_env("Pong", AtariSettings(), seed=11).action_space.sample()


@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_full_action_space(game):
    env = make_atari_env(game, AtariSettings())
    assert env.action_space == gym.spaces.Discrete(18)
    assert env.get_wrapper_attr("get_action_meanings")()[:2] == ["NOOP", "FIRE"]


def test_every_game_shares_spaces():
    for game in ALL_GAMES:
        env = make_atari_env(game, AtariSettings())
        assert env.action_space == gym.spaces.Discrete(18), game
        assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), game
        env.close()


def test_skiing_fire_actions_act_as_their_direction():
    """ale-py gives Skiing 9 legal actions; the FIRE variants map to the same direction without FIRE."""
    env = make_atari_env("Skiing", AtariSettings(max_episode_frames=1_000))
    meanings = env.get_wrapper_attr("get_action_meanings")()
    assert len(meanings) == 18
    with_fire = [meanings.index(name) for name in ("FIRE", "UPFIRE", "LEFTFIRE", "DOWNRIGHTFIRE")] * 10
    without = [meanings.index(name) for name in ("NOOP", "UP", "LEFT", "DOWNRIGHT")] * 10
    for (obs, *rest), (other_obs, *other_rest) in zip(run(env, with_fire, 5), run(env, without, 5), strict=True):
        np.testing.assert_array_equal(obs, other_obs)
        assert rest == other_rest


def test_reward_clipping_keeps_raw_score_in_monitor():
    settings = AtariSettings(max_episode_frames=2_000)  # <= 500 agent steps; a kill scores 5 to 30
    clipped, clipped_infos = random_episode(make_atari_env("SpaceInvaders", settings), seed=0)
    raw, raw_infos = random_episode(
        make_atari_env("SpaceInvaders", AtariSettings(max_episode_frames=2_000, clip_rewards=False)), seed=0
    )
    assert set(clipped) <= {-1.0, 0.0, 1.0}
    assert max(raw) > 1
    score = raw_infos[-1]["episode"]["r"]
    assert score == pytest.approx(sum(raw)) and score > 1
    assert clipped_infos[-1]["episode"]["r"] == score  # the same game, logged unclipped
    assert len(clipped) == len(raw) == raw_infos[-1]["episode"]["l"]


def test_episode_frame_cap_truncates():
    env = make_atari_env("Pong", AtariSettings(max_episode_frames=400))
    env.reset(seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated or steps > 100):
        _, _, terminated, truncated, info = env.step(0)
        steps += 1
    assert truncated and not terminated
    assert info["episode_frame_number"] == 400  # the cap also counts the 1-30 no-op frames of the reset
    assert info["episode"]["l"] == steps and 93 <= steps <= 100


def test_terminal_on_life_loss_ends_learning_episodes_but_not_the_logged_game():
    env = make_atari_env("Breakout", AtariSettings(terminal_on_life_loss=True, clip_rewards=False))
    env.reset(seed=1)
    env.action_space.seed(1)
    lives, terminations, total = 5, 0, 0.0
    while True:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += float(reward)
        assert info["lives"] <= lives
        lives = info["lives"]
        if terminated:
            terminations += 1
            assert ("episode" in info) == (lives == 0)  # only the real game over is logged
        if "episode" in info:
            break
        if terminated or truncated:
            env.reset()
    assert terminations == 5  # one per life
    assert info["episode"]["r"] == total  # the full game's score across the five learning episodes


def test_without_life_loss_terminal_only_game_over_terminates():
    rewards, infos = random_episode(make_atari_env("Breakout", AtariSettings()), seed=1)
    assert infos[-1]["lives"] == 0
    assert len(rewards) == infos[-1]["episode"]["l"]


def test_sticky_actions_are_configurable():
    env = make_atari_env("Pong", AtariSettings(sticky_action_prob=0.25))
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert make_atari_env("Pong", AtariSettings()).unwrapped.ale.getFloat("repeat_action_probability") == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noop_max", -1),
        ("frame_skip", 0),
        ("screen_size", 0),
        ("frame_stack", 0),
        ("max_episode_frames", 0),
        ("frame_skip", 4.0),
        ("noop_max", True),
        ("sticky_action_prob", 1.5),
        ("sticky_action_prob", -0.1),
        ("sticky_action_prob", "0.25"),
        ("clip_rewards", 1),
        ("terminal_on_life_loss", "yes"),
    ],
)
def test_bad_settings_raise_value_error_naming_field_and_value(field, value):
    with pytest.raises(ValueError, match=field) as err:
        AtariSettings(**{field: value})
    assert repr(value) in str(err.value)


def test_default_settings():
    settings = AtariSettings(sticky_action_prob=1)
    assert settings.sticky_action_prob == 1.0 and isinstance(settings.sticky_action_prob, float)
    assert AtariSettings() == AtariSettings(30, 4, 84, 4, False, True, 0.0, 108_000)
