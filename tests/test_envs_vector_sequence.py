"""A game sequence in ale-py's C++ vector env (envs/vector_sequence.py): switches exactly at the boundaries, same
frames as one game's C++ env inside a segment, seek, seeding, bad input. Real ALE games, a few dozen steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.atari import N_ACTIONS, AtariSettings
from envs.sequence import GameSequence, Segment
from envs.vector import make_atari_vec_env
from envs.vector_sequence import AtariSequenceVecEnv

# No random starts and no sticky actions: the emulator is then deterministic given the actions.
EXACT = AtariSettings(noop_max=0, sticky_action_prob=0.0)
N_ENVS = 2
# Agent steps of both envs together: 20, 10 and 10 vector steps.
SEQUENCE = GameSequence((Segment("Pong", 40), Segment("Breakout", 20), Segment("Pong", 20)))
SEED = 5


def _actions(n_steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(N_ACTIONS, size=(n_steps, N_ENVS))


def _play(env: AtariSequenceVecEnv, actions: np.ndarray) -> tuple[np.ndarray, list[tuple]]:
    """Reset, then one (obs, reward, dones, infos, reset_infos) per action row."""
    first = env.reset()
    steps = []
    for row in actions:
        obs, reward, dones, infos = env.step(row)
        steps.append((obs, reward, dones, infos, [dict(i) for i in env.reset_infos]))
    return first, steps


@pytest.fixture(scope="module")
def played() -> tuple[np.ndarray, list[tuple], np.ndarray]:
    env = AtariSequenceVecEnv(SEQUENCE, EXACT, N_ENVS)
    env.seed(SEED)
    actions = _actions(40)
    first, steps = _play(env, actions)
    with pytest.raises(RuntimeError, match="sequence is over after 80 agent steps"):
        env.step(actions[0])
    assert env.steps_done == 80
    env.close()
    return first, steps, actions


def test_every_env_switches_game_exactly_at_the_segment_ends(played):
    first, steps, _ = played
    assert first.shape == (N_ENVS, 4, 84, 84) and first.dtype == np.uint8
    games = [[info["game"] for info in infos] for _, _, _, infos, _ in steps]
    assert games == [["Pong"] * N_ENVS] * 20 + [["Breakout"] * N_ENVS] * 10 + [["Pong"] * N_ENVS] * 10
    assert [infos[0]["segment"] for _, _, _, infos, _ in steps] == [0] * 20 + [1] * 10 + [2] * 10
    ends = [k for k, (_, _, _, infos, _) in enumerate(steps) if any(i.get("segment_end") for i in infos)]
    assert ends == [19, 29, 39]
    for k in ends:
        obs, _, dones, infos, reset_infos = steps[k]
        assert dones.all() and all(i["segment_end"] and i["TimeLimit.truncated"] for i in infos)
        assert all(i["terminal_observation"].shape == (4, 84, 84) for i in infos)
        next_segment = min(infos[0]["segment"] + 1, 2)
        assert reset_infos == [{"game": SEQUENCE.segments[next_segment].game, "segment": next_segment}] * N_ENVS
        assert obs.shape == (N_ENVS, 4, 84, 84)
        assert all((frame == obs[i][0]).all() for i in range(N_ENVS) for frame in obs[i]), "a new game's first frame"
    assert not any(steps[k][2].any() for k in range(40) if k not in ends)  # no episode ends inside these segments


def test_a_segment_plays_as_its_own_games_cpp_env(played):
    """Segment 1 (Breakout) has the frames of a Breakout vector env seeded with seed + 1·n_envs, same actions."""
    _, steps, actions = played
    ref = make_atari_vec_env("Breakout", EXACT, N_ENVS, seed=SEED + 1 * N_ENVS)
    np.testing.assert_array_equal(steps[19][0], ref.reset())  # the switch step returns Breakout's first frames
    for k in range(20, 30):
        obs, reward, dones, _ = ref.step(actions[k])
        np.testing.assert_array_equal(reward, steps[k][1])
        if k < 29:
            np.testing.assert_array_equal(obs, steps[k][0])
            np.testing.assert_array_equal(dones, steps[k][2])
        else:  # the segment's last step: its frames are the terminal observations, Pong's come back
            for i in range(N_ENVS):
                np.testing.assert_array_equal(obs[i], steps[k][3][i]["terminal_observation"])
            assert not np.array_equal(obs, steps[k][0])
    ref.close()


def test_the_same_seed_replays_the_same_stream_and_a_revisit_gets_new_games():
    settings = AtariSettings(noop_max=30, sticky_action_prob=0.25)  # random starts and sticky actions
    runs = []
    for _ in range(2):
        env = AtariSequenceVecEnv(SEQUENCE, settings, N_ENVS)
        env.seed(SEED)
        runs.append(_play(env, _actions(40, seed=1)))
        env.close()
    (first, steps), (first2, steps2) = runs
    np.testing.assert_array_equal(first, first2)
    for a, b in zip(steps, steps2, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # Pong's two visits (segments 0 and 2) are seeded apart: the same actions do not give the same frames.
    revisit = [s[0] for s in steps[30:39]]
    assert any(not np.array_equal(f, s[0]) for f, s in zip(revisit, steps[:9], strict=True))


def test_seek_resumes_at_the_right_segment():
    env = AtariSequenceVecEnv(SEQUENCE, EXACT, N_ENVS)
    env.seed(SEED)
    env.seek(50)  # 10 agent steps (5 vector steps) into Breakout
    obs = env.reset()
    assert env.steps_done == 50 and env.current_game == "Breakout" and env.segment_index == 1
    assert env.reset_infos == [{"game": "Breakout", "segment": 1}] * N_ENVS
    np.testing.assert_array_equal(obs, make_atari_vec_env("Breakout", EXACT, N_ENVS, seed=SEED + N_ENVS).reset())
    games = []
    for row in _actions(5):
        _, _, dones, infos = env.step(row)
        games.append((infos[0]["game"], bool(dones.all()), bool(infos[0].get("segment_end"))))
    assert games == [("Breakout", False, False)] * 4 + [("Breakout", True, True)]
    assert env.current_game == "Pong" and env.segment_index == 2 and env.steps_done == 60
    env.seek(0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(_actions(1)[0])
    env.reset()
    assert env.current_game == "Pong" and env.segment_index == 0
    for bad in (41, -2, 82):
        with pytest.raises(ValueError, match="multiple of n_envs=2"):
            env.seek(bad)
    env.seek(80)  # the end: a new episode of the last game, and no further step
    env.reset()
    assert env.current_game == "Pong" and env.segment_index == 2
    with pytest.raises(RuntimeError, match="sequence is over"):
        env.step(_actions(1)[0])
    env.close()
    env.close()  # twice: a no-op


def test_an_episode_that_ends_at_the_switch_keeps_its_own_end():
    """A game over on the segment's last step: a real episode end (score, not truncated), then the next game."""
    settings = dataclasses.replace(EXACT, max_episode_frames=40)  # 10 agent steps a game, truncated by the cap
    cut = dataclasses.replace(settings, max_episode_frames=10**6)
    sequence = GameSequence((Segment("Pong", 20), Segment("Breakout", 4)))
    env = AtariSequenceVecEnv(sequence, settings, N_ENVS)
    env.reset()
    for row in _actions(10):
        _, _, dones, infos = env.step(row)
    assert dones.all() and all(i["segment_end"] and "episode" in i and i["episode"]["l"] == 10 for i in infos)
    assert all(i["TimeLimit.truncated"] for i in infos)  # the frame cap truncates it too
    assert [i["game"] for i in env.reset_infos] == ["Breakout"] * N_ENVS
    env.close()
    env = AtariSequenceVecEnv(sequence, cut, N_ENVS)
    env.reset()
    for row in _actions(10):
        _, _, dones, infos = env.step(row)
    assert all("episode" not in i for i in infos), "a game cut by the switch has no score (as SequenceEnv's)"
    env.close()


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"plays minatar games .*ParallelSequence"):
        AtariSequenceVecEnv(GameSequence((Segment("MinAtar/Breakout", 4),)), EXACT, N_ENVS)
    with pytest.raises(ValueError, match="not a multiple of n_envs=2"):
        AtariSequenceVecEnv(GameSequence((Segment("Pong", 5),)), EXACT, N_ENVS)
    with pytest.raises(ValueError, match="max_episode_frames must be <="):
        AtariSequenceVecEnv(SEQUENCE, dataclasses.replace(EXACT, max_episode_frames=2**31), N_ENVS)
    env = AtariSequenceVecEnv(SEQUENCE, EXACT, N_ENVS)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(_actions(1)[0])
    env.reset()
    assert env.get_attr("game") == ["Pong"] * N_ENVS
    with pytest.raises(ValueError, match="expected 2 actions"):
        env.step(np.array([0, 18]))
    env.close()
