"""Flat forget-me-not task inference: the window score against eq. (1) by hand, and real ALE game streams."""

from __future__ import annotations

import numpy as np
import pytest

from agents.bench.inference_stream import run_inference_stream
from cl_rl.task_inference import FlatFMN, FMNSettings, downscale_quantize
from cl_rl.task_source import TaskSource
from envs.sequence import GameSequence, Segment


def _game_frames(seed: int, n: int, noise: float = 0.02) -> list[np.ndarray]:
    """A synthetic 'game': a fixed random screen with a few pixels changing each frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(84, 84), dtype=np.uint8)
    frames = []
    for _ in range(n):
        frame = base.copy()
        mask = rng.random((84, 84)) < noise
        frame[mask] = rng.integers(0, 256, size=int(mask.sum()))
        frames.append(frame)
    return frames


def test_downscale_quantize_is_a_block_mean():
    frame = np.arange(84 * 84, dtype=np.int64).reshape(84, 84) % 256
    small = downscale_quantize(frame.astype(np.uint8), 42, 8).reshape(42, 42)
    expected = frame.reshape(42, 2, 42, 2).mean(axis=(1, 3)).astype(np.int64) * 8 // 256
    np.testing.assert_array_equal(small, expected)
    assert small.max() < 8


def test_window_score_is_the_sequential_dirichlet_predictive_of_eq_1():
    s = FMNSettings(window=4, update_every=1)
    fmn = FlatFMN(s)
    frames = _game_frames(0, 8)
    for f in frames[:4]:  # the first window creates task 0
        fmn.observe(f)
    counts, total = fmn.counts[0].copy(), fmn.totals[0]
    for f in frames[4:7]:
        fmn.observe(f)
    # By hand: each frame's probability under task 0 given its counts plus the window's earlier frames.
    xs = [downscale_quantize(f, s.size, s.levels) for f in frames[4:7]]
    expected, holdout, c = 0.0, 0.0, counts.astype(np.float64).copy()
    within = np.zeros_like(c)
    for j, x in enumerate(xs):
        p = np.arange(x.size)
        expected += np.log((c[p, x] + within[p, x] + s.alpha) / (total + j + s.levels * s.alpha)).sum()
        holdout += np.log((within[p, x] + s.alpha) / (j + s.levels * s.alpha)).sum()
        within[p, x] += 1
    assert fmn._window_loglik[0] == pytest.approx(expected, rel=1e-5)
    assert fmn._window_loglik[-1] == pytest.approx(holdout, rel=1e-5)


def test_new_task_is_created_and_an_old_one_recognised():
    fmn = FlatFMN(FMNSettings(update_every=1))
    assert isinstance(fmn, TaskSource)
    a, b = _game_frames(1, 200), _game_frames(2, 200)
    ids = [fmn.observe(f) for f in a[:100] + b[:100] + a[100:]]
    assert fmn.n_tasks == 2
    assert set(ids[:100]) == {0} and ids[-90:] == [0] * 90
    assert ids[100 + 12 : 200] == [1] * 88  # the switch to b takes at most 3 windows of 4 frames


def test_state_dict_round_trip_continues_identically():
    frames = _game_frames(3, 60) + _game_frames(4, 60)
    fmn = FlatFMN(FMNSettings(update_every=2))
    for f in frames[:70]:
        fmn.observe(f)
    copy = FlatFMN(FMNSettings(update_every=2))
    copy.load_state_dict(fmn.state_dict())
    assert [fmn.observe(f) for f in frames[70:]] == [copy.observe(f) for f in frames[70:]]
    with pytest.raises(ValueError, match="settings the run was started with"):
        FlatFMN(FMNSettings(levels=16)).load_state_dict(fmn.state_dict())


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"task\.fmn\.levels"):
        FMNSettings(levels=1)
    with pytest.raises(ValueError, match=r"task\.fmn\.switch_prior"):
        FMNSettings(switch_prior=1.0)


@pytest.mark.slow
def test_real_games_with_revisits_are_segmented_and_recognised():
    games = ["Pong", "Breakout", "Freeway", "Pong", "Breakout"]
    result = run_inference_stream(GameSequence(tuple(Segment(g, 6000) for g in games)), seed=0)
    assert result.ari >= 0.99, result.line()
    assert result.switches == 4 and result.detected == 4 and result.spurious == 0, result.line()
    assert result.delay_max <= 100, result.line()
    assert result.task_of_segment == [0, 1, 2, 0, 1]  # revisits map back to their old tasks
    assert result.n_tasks == 3


@pytest.mark.slow
@pytest.mark.parametrize("game", ["Seaquest", "SpaceInvaders"])
def test_a_long_stream_of_one_game_creates_no_second_task(game):
    result = run_inference_stream(GameSequence((Segment(game, 8000),)), seed=1)
    assert result.n_tasks == 1 and result.spurious == 0, result.line()
