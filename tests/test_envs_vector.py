"""The C++ vector env adapter: same frames as the Python chain, raw scores, SB3 autoreset, SB3 training, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from envs.atari import N_ACTIONS, AtariSettings, make_atari_env
from envs.games import ALL_GAMES, UnknownGameError
from envs.vector import make_atari_vec_env, rom_id

# No random starts and no sticky actions: the emulator is then deterministic given the actions.
EXACT = AtariSettings(noop_max=0, sticky_action_prob=0.0)


def python_chain(game: str, settings: AtariSettings, n_envs: int, seed: int) -> DummyVecEnv:
    """The reference: SB3's DummyVecEnv over `make_atari_env`, sub-env i seeded with seed + i."""
    return DummyVecEnv([lambda i=i: make_atari_env(game, settings, seed=seed + i) for i in range(n_envs)])


def lockstep(envs: list[VecEnv], n_steps: int, seed: int) -> list[list[tuple]]:
    """Step every env with the same seeded random actions; per env, a list of (obs, reward, done, info) steps."""
    actions = np.random.default_rng(seed).integers(N_ACTIONS, size=(n_steps, envs[0].num_envs))
    runs = [[(env.reset(), None, None, None)] for env in envs]
    for step_actions in actions:
        for env, run in zip(envs, runs, strict=True):
            run.append(env.step(step_actions))
    return runs


@pytest.mark.parametrize("clip_rewards", [False, True])
def test_trajectory_equals_python_chain_exactly(clip_rewards):
    settings = dataclasses.replace(EXACT, clip_rewards=clip_rewards, max_episode_frames=800)
    vec, ref = make_atari_vec_env("Breakout", settings, 4, seed=7), python_chain("Breakout", settings, 4, seed=7)
    assert vec.observation_space == ref.observation_space and vec.action_space == ref.action_space
    ends = {"terminated": 0, "truncated": 0}
    runs = lockstep([vec, ref], 450, seed=0)
    for (obs, rew, done, infos), (ref_obs, ref_rew, ref_done, ref_infos) in zip(*runs, strict=True):
        np.testing.assert_array_equal(obs, ref_obs)
        if rew is None:
            continue
        np.testing.assert_array_equal(rew, ref_rew)
        np.testing.assert_array_equal(done, ref_done)
        for i in np.flatnonzero(done):
            info, ref_info = infos[i], ref_infos[i]
            np.testing.assert_array_equal(info["terminal_observation"], ref_info["terminal_observation"])
            assert info["TimeLimit.truncated"] == ref_info["TimeLimit.truncated"]
            assert (info["episode"]["r"], info["episode"]["l"]) == (ref_info["episode"]["r"], ref_info["episode"]["l"])
            assert all((frame == obs[i][0]).all() for frame in obs[i]), "a new episode starts with one frame repeated"
            assert not (info["terminal_observation"] == obs[i]).all()
            ends["truncated" if info["TimeLimit.truncated"] else "terminated"] += 1
        assert all(info["game"] == "Breakout" for info in infos)
    assert ends["terminated"] > 0 and ends["truncated"] > 0, f"the run must cover both kinds of episode end: {ends}"


def test_full_action_set_on_a_game_with_fewer_legal_actions():
    vec, ref = make_atari_vec_env("Skiing", EXACT, 1, seed=0), python_chain("Skiing", EXACT, 1, seed=0)
    for (obs, *_), (ref_obs, *_) in zip(*lockstep([vec, ref], 60, seed=1), strict=True):
        np.testing.assert_array_equal(obs, ref_obs)


def test_episode_score_is_the_raw_sum_while_learning_rewards_are_clipped():
    """SpaceInvaders pays 5-30 points a kill; the clipped env must still log the raw score."""
    settings = dataclasses.replace(EXACT, max_episode_frames=1_600)
    clipped = make_atari_vec_env("SpaceInvaders", dataclasses.replace(settings, clip_rewards=True), 2, seed=3)
    raw = make_atari_vec_env("SpaceInvaders", dataclasses.replace(settings, clip_rewards=False), 2, seed=3)
    sums, episodes = np.zeros(2), []
    for (_, rew, _, infos), (_, raw_rew, _, _) in zip(*lockstep([clipped, raw], 450, seed=2), strict=True):
        if rew is None:
            continue
        np.testing.assert_array_equal(rew, np.sign(raw_rew))
        sums += raw_rew
        for i, info in enumerate(infos):
            if "episode" in info:
                episodes.append((info["episode"]["r"], sums[i]))
                sums[i] = 0.0
    assert episodes, "no episode ended"
    assert all(logged == total for logged, total in episodes)
    assert any(logged > 1.0 for logged, _ in episodes), "the run must score some points"


def test_life_loss_ends_learning_episodes_but_not_the_logged_game():
    settings = dataclasses.replace(EXACT, terminal_on_life_loss=True, clip_rewards=False)
    vec = make_atari_vec_env("Breakout", settings, 2, seed=0)
    dones_per_game, done_count, raw_sum, steps = [], np.zeros(2, int), np.zeros(2), np.zeros(2, int)
    for obs, rew, done, infos in lockstep([vec], 500, seed=4)[0][1:]:
        raw_sum, steps, done_count = raw_sum + rew, steps + 1, done_count + done
        for i in np.flatnonzero(done):
            if "episode" not in infos[i]:
                assert (obs[i] == infos[i]["terminal_observation"][-1]).all(), "after a life loss: the last frame"
            else:
                assert infos[i]["episode"]["r"] == raw_sum[i] and infos[i]["episode"]["l"] == steps[i]
                dones_per_game.append(done_count[i])
                raw_sum[i], steps[i], done_count[i] = 0.0, 0, 0
    assert dones_per_game and all(n == 5 for n in dones_per_game), f"Breakout has 5 lives: {dones_per_game}"


def test_seeded_sub_envs_differ_and_replay():
    """With sticky actions, sub-envs seeded seed + i play different games; the same seed replays them."""
    settings = AtariSettings(sticky_action_prob=0.25)
    first, second = (make_atari_vec_env("Pong", settings, 4, seed=11) for _ in range(2))
    run_a, run_b = lockstep([first, second], 120, seed=5)
    for (obs, *_), (obs_b, *_) in zip(run_a, run_b, strict=True):
        np.testing.assert_array_equal(obs, obs_b)
    final = run_a[-1][0]
    assert len({final[i].tobytes() for i in range(4)}) == 4


def test_sb3_dqn_learns_on_the_adapter_and_logs_raw_scores():
    settings = dataclasses.replace(EXACT, max_episode_frames=120)
    env = make_atari_vec_env("Pong", settings, 4, seed=0)
    assert env.env_is_wrapped(Monitor) == [True] * 4 and env.get_attr("game") == ["Pong"] * 4
    model = DQN("CnnPolicy", env, buffer_size=500, learning_starts=100, train_freq=1, batch_size=8, seed=0)
    model.learn(200)
    assert model.num_timesteps == 200 and model._n_updates > 0
    assert len(model.ep_info_buffer) >= 4 and all(ep["l"] == 30 for ep in model.ep_info_buffer)


def test_every_game_has_a_rom():
    from ale_py import roms

    assert {rom_id(game) for game in ALL_GAMES} <= set(roms.get_all_rom_ids())
    assert rom_id("ms_pacman") == "ms_pacman" and rom_id("MontezumaRevenge") == "montezuma_revenge"


@dataclasses.dataclass
class SettingsWithNewField(AtariSettings):
    """A field added to AtariSettings that envs.vector does not know."""

    full_color: bool = False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_envs": 0}, "n_envs must be an int >= 1"),
        ({"settings": SettingsWithNewField()}, "AtariSettings.full_color"),
        ({"settings": AtariSettings(max_episode_frames=2**31)}, "AtariSettings.max_episode_frames"),
        ({"settings": {"noop_max": 0}}, "must be an envs.atari.AtariSettings"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    args = {"game": "Pong", "settings": EXACT, "n_envs": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        make_atari_vec_env(**args)


def test_bad_game_and_actions_raise():
    with pytest.raises(UnknownGameError, match="Pongg"):
        make_atari_vec_env("Pongg", EXACT, 1)
    env = make_atari_vec_env("Pong", EXACT, 2)
    env.reset()
    for actions in ([0, N_ACTIONS], [0, -1], [0]):
        with pytest.raises(ValueError, match="expected 2 actions"):
            env.step(np.array(actions))
