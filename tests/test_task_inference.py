"""Flat forget-me-not task inference: the window score against eq. (1) by hand, and real ALE game streams."""

from __future__ import annotations

import copy
import functools
import pickle
from pathlib import Path

import numpy as np
import pytest

from agents.bench.inference_stream import record_game
from cl_rl.task_inference import (
    COUNT_LEVELS,
    FlatFMN,
    FMNSettings,
    downscale_quantize,
    frame_features,
    holdout_novelty,
    row_counts,
)
from cl_rl.task_source import TaskSource


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


def test_window_score_is_the_per_feature_mixture_of_eq_2():
    s = FMNSettings(window=4, update_every=1, margin=1e12)  # full windows
    fmn = FlatFMN(s)
    frames = _game_frames(0, 8)
    for f in frames[:4]:  # the first episode's window creates task 0
        fmn.observe(f, episode_start=f is frames[0])
    counts, total = fmn.counts[0].astype(np.float64), fmn.totals[0]
    for f in frames[4:7]:
        fmn.observe(f, episode_start=f is frames[4])
    # By hand: per feature, the task's iid predictive (eq. 1) over the window mixed with the window's own sequential
    # KT predictive, weights 1 - eps and eps; the hold-out's known-game component is the mean of the tasks' (one here)
    # and a uniform model's (no known game).
    xs = [downscale_quantize(f, s.size, s.levels) for f in frames[4:7]]
    p = np.arange(xs[0].size)
    task = sum(np.log((counts[p, x] + s.alpha) / (total + s.levels * s.alpha)) for x in xs)
    within, novel = np.zeros_like(counts), np.zeros(p.size)
    for j, x in enumerate(xs):
        novel += np.log((within[p, x] + 0.5) / (j + s.levels * 0.5))
        within[p, x] += 1
    eps_h = holdout_novelty(p.size, s.novel_features, s.task_novelty)
    pooled = np.logaddexp(task, len(xs) * np.log(1 / s.levels)) - np.log(2)
    for eps, known, got in ((s.task_novelty, task, fmn.window_loglik()[0]), (eps_h, pooled, fmn.window_loglik()[-1])):
        expected = np.logaddexp(np.log1p(-eps) + known, np.log(eps) + novel).sum()
        assert got == pytest.approx(expected, rel=1e-5)


def test_holdout_novelty_balances_novel_features_against_the_rest():
    eps_k = 1e-8
    eps_h = holdout_novelty(1000, 8.0, eps_k)
    assert eps_k < eps_h < 1
    assert 8.0 * np.log(eps_h / eps_k) == pytest.approx(1000 * np.log((1 - eps_k) / (1 - eps_h)), rel=1e-6)
    assert holdout_novelty(1000, 16.0, eps_k) > eps_h  # a higher bar for a new task: a vaguer hold-out


def test_new_task_only_at_an_episode_start_and_an_old_one_recognised():
    fmn = FlatFMN(FMNSettings(update_every=1))
    assert isinstance(fmn, TaskSource)
    a, b = _game_frames(1, 200), _game_frames(2, 200)
    stream = a[:100] + b[:100] + a[100:]
    ids = [fmn.observe(f, episode_start=i % 50 == 0) for i, f in enumerate(stream)]
    assert fmn.n_tasks == 2
    assert set(ids[:100]) == {0} and set(ids[200 + 8 :]) == {0}
    assert set(ids[100 + 8 : 200]) == {1}  # decided within the episode's first window of 8 frames
    # Without an episode start the task never changes, whatever the frames.
    fmn = FlatFMN(FMNSettings(update_every=1))
    assert {fmn.observe(f, episode_start=i == 0) for i, f in enumerate(stream)} == {0}


def test_state_dict_round_trip_continues_identically():
    frames = _game_frames(3, 60) + _game_frames(4, 60)
    fmn = FlatFMN(FMNSettings(update_every=2))
    for i, f in enumerate(frames[:64]):
        fmn.observe(f, episode_start=i % 30 == 0)
    copy = FlatFMN(FMNSettings(update_every=2))
    copy.load_state_dict(fmn.state_dict())
    rest = list(enumerate(frames[64:], start=64))
    expected = [fmn.observe(f, episode_start=i % 30 == 0) for i, f in rest]
    assert [copy.observe(f, episode_start=i % 30 == 0) for i, f in rest] == expected
    with pytest.raises(ValueError, match="settings the run was started with"):
        FlatFMN(FMNSettings(levels=16)).load_state_dict(fmn.state_dict())


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"task\.fmn\.levels"):
        FMNSettings(levels=1)
    with pytest.raises(ValueError, match=r"task\.fmn\.switch_prior"):
        FMNSettings(switch_prior=1.0)


def _play(fmn: FlatFMN, visits: list[tuple[str, int]], seed: int = 0) -> list[int]:
    """Feed real frames of each visit (each starting with a reset) to ``fmn``; the task at each visit's end."""
    ends = []
    for i, (game, steps) in enumerate(visits):
        frames, starts, _ = _recorded(game, steps, seed + i)
        for frame, start in zip(frames, starts, strict=True):
            task = fmn.observe(frame, None, episode_start=bool(start))
        ends.append(task)
    return ends


@functools.cache
def _recorded(game: str, steps: int, seed: int):
    return record_game(game, steps, "sticky", seed)


def test_a_long_stay_in_a_phase_changing_game_creates_no_task():
    fmn = FlatFMN()
    _play(fmn, [("Riverraid", 2500)])  # scrolling river, ~10 episodes of the sticky-biased policy
    assert fmn.n_tasks == 1


def test_a_stream_that_starts_with_a_long_stay_keeps_one_task():
    # The first task is young and alone: the hold-out once pooled it alone and so matched it wherever it fitted, and
    # every new Boxing episode start (~1,780 agent steps apart) opened a task of its own (3 tasks here, 50 in 100k).
    fmn = FlatFMN()
    _play(fmn, [("Boxing", 4000)])
    assert fmn.n_tasks == 1


def test_games_that_merged_before_stay_apart():
    # Gopher's young model once took CrazyClimber's start (an early decision after 2 frames), Breakout merged
    # into CrazyClimber under the continuous variant.
    assert _play(FlatFMN(), [("Gopher", 300), ("CrazyClimber", 300), ("Breakout", 300), ("Gopher", 300)]) == [
        0,
        1,
        2,
        0,
    ]


def test_a_revisit_after_eight_other_games_finds_its_task():
    # Young models (one 8-frame window each) once took other games' starts: Freeway into Boxing, Krull into Enduro.
    games = ["Pong", "Boxing", "Freeway", "Enduro", "Krull", "Asterix", "DemonAttack", "Kangaroo", "Jamesbond"]
    fmn = FlatFMN()
    ends = _play(fmn, [(g, 200) for g in games] + [("Pong", 200)])
    assert ends == [*range(9), 0] and fmn.n_tasks == 9


def test_task_state_round_trips_through_a_checkpoint_mid_stream():
    frames = np.concatenate([_recorded("Pong", 300, 0)[0], _recorded("Boxing", 300, 1)[0]])
    starts = np.concatenate([_recorded("Pong", 300, 0)[1], _recorded("Boxing", 300, 1)[1]])
    fmn = FlatFMN()
    cut = 305  # inside Boxing's first decision window
    for f, s in zip(frames[:cut], starts[:cut], strict=True):
        fmn.observe(f, None, episode_start=bool(s))
    assert fmn._n_frames  # really mid-window
    by_state = FlatFMN()
    by_state.load_state_dict(fmn.state_dict())
    by_pickle = pickle.loads(pickle.dumps(fmn))  # how SB3 saves the agent's task source
    rest = list(zip(frames[cut:], starts[cut:], strict=True))
    expected = [fmn.observe(f, None, episode_start=bool(s)) for f, s in rest]
    assert [by_state.observe(f, None, episode_start=bool(s)) for f, s in rest] == expected
    assert [by_pickle.observe(f, None, episode_start=bool(s)) for f, s in rest] == expected
    assert expected[-1] == 1


def test_grid_task_state_survives_pickle_and_deepcopy_mid_stream():
    # MinAtar grids: a checkpoint (pickle) and the periodic evaluation's copy (deepcopy) must decide as the original.
    # A reshaped view of the window buffer once became a separate array in both, so their windows scored stale
    # frames and every evaluated game took the current task.
    games = [("MinAtar/Breakout", 1500, 0), ("MinAtar/SpaceInvaders", 900, 1), ("MinAtar/Breakout", 600, 2)]
    frames = np.concatenate([_recorded(g, n, seed)[0] for g, n, seed in games])
    starts = np.concatenate([_recorded(g, n, seed)[1] for g, n, seed in games])
    fmn = FlatFMN()
    cut = 1500 + 903  # inside a SpaceInvaders decision window
    for f, s in zip(frames[:cut], starts[:cut], strict=True):
        fmn.observe(f, None, episode_start=bool(s))
    assert fmn.current == 1 and fmn._n_frames  # SpaceInvaders' task, really mid-window
    by_state = FlatFMN()
    by_state.load_state_dict(fmn.state_dict())
    copies = [by_state, pickle.loads(pickle.dumps(fmn)), copy.deepcopy(fmn)]
    rest = list(zip(frames[cut:], starts[cut:], strict=True))
    expected = [fmn.observe(f, None, episode_start=bool(s)) for f, s in rest]
    for other in copies:
        assert [other.observe(f, None, episode_start=bool(s)) for f, s in rest] == expected
    assert expected[-1] == 0  # Breakout found again


def test_minatar_games_with_equal_channel_counts_are_told_apart_and_found_again():
    # Breakout and Asterix both use 4 of the 10 padded channels, so which channels are ever on cannot be the cue:
    # the tasks must come from what the frames show.
    visits = [
        ("MinAtar/Breakout", 1500),
        ("MinAtar/Asterix", 1500),
        ("MinAtar/Breakout", 800),
        ("MinAtar/Asterix", 800),
    ]
    padded = [_recorded(g, 200, 0)[0][:, 4:].any() for g in ("MinAtar/Breakout", "MinAtar/Asterix")]
    assert not any(padded)  # the premise: both games leave channels 4–9 empty
    fmn = FlatFMN()
    assert _play(fmn, visits) == [0, 1, 0, 1]
    assert fmn.n_tasks == 2


def test_grid_window_score_is_the_sequential_predictive_of_eq_1_prime():
    # Real MinAtar frames; every agent step is a model frame (grid_update_every = 1).
    s = FMNSettings(window=8)
    frames, starts, _ = _recorded("MinAtar/SpaceInvaders", 300, 0)
    first, second = np.flatnonzero(starts)[:2]
    fmn = FlatFMN(s)
    for f, st in zip(frames[first : first + 8], starts[first : first + 8], strict=True):
        fmn.observe(f, episode_start=bool(st))  # the first window creates task 0
    counts, n = fmn.counts[0].astype(np.float64), fmn.totals[0]
    for j, f in enumerate(frames[second : second + 5]):
        fmn.observe(f, episode_start=j == 0)
    # By hand, per feature p of channel c and cell q: the task's model learns from each frame as it comes, with prior
    # pseudo-counts α + β·m (on) and α + β·(1 − m) (off), m the task's mean on-rate of cell q over the channels; the
    # row counts that follow the cells belong to no cell (m = 0).
    xs = [
        np.concatenate([(f.reshape(-1) > 0), _row_counts_by_hand(f)]).astype(int) for f in frames[second : second + 5]
    ]
    on = counts[:1000, 1].reshape(10, 100)
    m = np.append(np.broadcast_to(on.mean(axis=0) / n, on.shape).reshape(-1), np.zeros(10 * COUNT_LEVELS))
    prior = np.stack([s.alpha + s.cell_share * (1 - m), s.alpha + s.cell_share * m], axis=1)
    p = np.arange(xs[0].size)
    task, novel, within = np.zeros(p.size), np.zeros(p.size), np.zeros_like(counts)
    for j, x in enumerate(xs):
        task += np.log((counts[p, x] + prior[p, x] + within[p, x]) / (n + 2 * s.alpha + s.cell_share + j))
        novel += np.log((within[p, x] + 0.5) / (j + 1.0))
        within[p, x] += 1
    eps_h = holdout_novelty(p.size, s.novel_features, s.task_novelty)
    got = fmn.window_loglik()
    for eps, value in ((s.task_novelty, got[0]), (eps_h, got[-1])):
        expected = np.logaddexp(np.log1p(-eps) + task, np.log(eps) + novel).sum()
        assert value == pytest.approx(expected, rel=1e-5)
    copy = FlatFMN(s)  # mid-window state round-trip
    copy.load_state_dict(pickle.loads(pickle.dumps(fmn.state_dict())))
    np.testing.assert_allclose(copy.window_loglik(), got, rtol=1e-6)
    state = fmn.state_dict()
    old_state = {**state, "counts": state["counts"][:, :1000]}  # saved before the row counts
    with pytest.raises(ValueError, match="start the run again"):
        FlatFMN(s).load_state_dict(old_state)


def _row_counts_by_hand(frame: np.ndarray) -> np.ndarray:
    """Per row of a C×H×W grid, one feature per count bucket (0, 1, 2, 3–4, 5–8, 9–16, 17–32, 33+), on for the
    bucket of the row's number of on cells over every channel and column."""
    edges = [0, 1, 2, 4, 8, 16, 32]  # a count n falls in the first bucket b with n <= edges[b], else the last
    out = np.zeros((frame.shape[1], COUNT_LEVELS), bool)
    for r in range(frame.shape[1]):
        n = int((frame[:, r, :] > 0).sum())
        out[r, next((b for b, top in enumerate(edges) if n <= top), COUNT_LEVELS - 1)] = True
    return out.reshape(-1)


def test_row_counts_are_the_bucket_of_each_rows_cells_on():
    frames, _, _ = _recorded("MinAtar/Freeway", 50, 0)
    for frame in frames:
        np.testing.assert_array_equal(row_counts(frame) > 0, _row_counts_by_hand(frame))
        features, levels = frame_features(frame, FMNSettings())
        assert levels == 2 and features.size == 1000 + 10 * COUNT_LEVELS
        np.testing.assert_array_equal(features[1000:], _row_counts_by_hand(frame))
    fmn = FlatFMN()  # the window's compiled copy of them
    for j, frame in enumerate(frames[:8]):
        fmn.observe(frame, episode_start=j == 0)
        if fmn._n_frames:
            np.testing.assert_array_equal(fmn._frames[fmn._n_frames - 1, 1000:] > 0, _row_counts_by_hand(frame))


def test_minatar_freeway_revisits_stay_one_task():
    # Freeway draws its 8 car speeds and directions at random each episode, so a revisit's start screens put trails
    # in channels and cells its task never saw (30-60 features). It once opened a new task on every episode.
    visits = [("MinAtar/Freeway", 5000), ("MinAtar/Breakout", 1500), ("MinAtar/Freeway", 5000)]
    fmn = FlatFMN()
    assert _play(fmn, visits) == [0, 1, 0]
    assert fmn.n_tasks == 2


def test_minatar_asterix_after_a_young_freeway_task_opens_its_own():
    # Asterix's start screens are nearly empty (its player, an enemy or two); by its cells alone, a Freeway task that
    # has seen only two episodes explained them better than the hold-out (by ~60 nats). Its rows tell them apart:
    # a Freeway row holds a car and its trail in every frame, an Asterix row one thing or nothing.
    assert _play(FlatFMN(), [("MinAtar/Freeway", 5000), ("MinAtar/Asterix", 1500)]) == [0, 1]


def _grid_window_loglik_by_hand(fmn: FlatFMN) -> np.ndarray:
    """Eqs. (1') and (2) over every feature of the open window, in float64 numpy: each task's model learns from each
    frame as it comes (prior pseudo-counts α + β·m on, α + β·(1 − m) off, m the task's mean on-rate of the feature's
    cell over the channels), mixed per feature with the window's own KT predictive; the hold-out pools the tasks."""
    s, xs = fmn.settings, fmn.state_dict()["window_frames"]
    counts, n = fmn.counts.astype(np.float64), fmn.totals
    (n_tasks, n_features), (channels, cells) = counts.shape[:2], fmn._groups
    grid = channels * cells  # then the row counts, which belong to no cell (m = 0)
    m = counts[:, :grid, 1].reshape(n_tasks, channels, cells).mean(axis=1) / np.maximum(n, 1)[:, None]
    m = np.repeat(m[:, None, :], channels, axis=1).reshape(n_tasks, grid)
    m = np.concatenate([m, np.zeros((n_tasks, n_features - grid))], axis=1)
    prior = np.stack([s.alpha + s.cell_share * (1 - m), s.alpha + s.cell_share * m], axis=2)
    p, within = np.arange(n_features), np.zeros((n_features, 2))
    task, novel = np.zeros((n_tasks, n_features)), np.zeros(n_features)
    for j, x in enumerate(xs):
        denominator = n[:, None] + 2 * s.alpha + s.cell_share + j
        task += np.log((counts[:, p, x] + prior[:, p, x] + within[p, x]) / denominator)
        novel += np.log((within[p, x] + 0.5) / (j + 1.0))
        within[p, x] += 1
    eps_k, eps_h = s.task_novelty, holdout_novelty(n_features, s.novel_features, s.task_novelty)
    pooled = np.logaddexp.reduce(task, axis=0) - np.log(n_tasks)
    tasks = np.logaddexp(np.log1p(-eps_k) + task, np.log(eps_k) + novel).sum(axis=1)
    holdout = np.logaddexp(np.log1p(-eps_h) + pooled, np.log(eps_h) + novel).sum()
    return np.append(tasks, holdout)


# Real MinAtar visits (each from a reset) and, recorded from the numpy implementation before the grid kernels, the
# task at every agent step as (first step, task) of each run: the kernels must not change a decision.
GRID_VISITS = [
    ("MinAtar/Breakout", 600),
    ("MinAtar/Asterix", 600),
    ("MinAtar/SpaceInvaders", 600),
    ("MinAtar/Breakout", 300),
    ("MinAtar/Asterix", 300),
]
GRID_TASK_RUNS = [(0, 0), (607, 1), (1207, 2), (1806, 0), (2107, 1)]


def test_grid_decisions_match_the_equations_and_the_numpy_implementation_step_for_step():
    fmn = FlatFMN()
    decisions = []
    decide = fmn._decide

    def checked_decide():  # every decision, scored by the kernel and by hand
        got, expected = fmn.window_loglik(), _grid_window_loglik_by_hand(fmn) if fmn.n_tasks else None
        if expected is not None:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0.01)  # nats; the models keep float32 counts
            assert np.argmax(got + fmn.log_prior()) == np.argmax(expected + fmn.log_prior())
        decisions.append(got)
        decide()

    fmn._decide = checked_decide
    tasks = []
    for i, (game, steps) in enumerate(GRID_VISITS):
        frames, starts, _ = _recorded(game, steps, i)
        tasks += [fmn.observe(f, None, episode_start=bool(s)) for f, s in zip(frames, starts, strict=True)]
    runs = [(i, t) for i, t in enumerate(tasks) if i == 0 or t != tasks[i - 1]]
    assert runs == GRID_TASK_RUNS
    assert len(decisions) > 100 and fmn.n_tasks == 3


def _recorded_windows(name: str) -> tuple[list[np.ndarray], list[str]]:
    """Frames of each episode's decision window and each episode's game, from ``tests/data/<name>.npz``."""
    with np.load(Path(__file__).parent / "data" / f"{name}.npz") as data:
        shape, episode, games = tuple(data["shape"]), data["episode"], [str(g) for g in data["games"]]
        frames = np.unpackbits(data["bits"], axis=1)[:, : int(np.prod(shape))].reshape(-1, *shape) * np.uint8(255)
    return [frames[episode == e] for e in range(len(games))], games


def test_a_learning_agents_stream_keeps_one_task_per_game():
    # Recorded from a real run of the table preset (configs/minatar_table.yaml, its checkpoint at agent step 30,000,
    # ε = 0.05) playing SpaceInvaders → Freeway → Breakout → Freeway → SpaceInvaders → Breakout → Freeway, 3,000
    # agent steps a visit; only each episode's first 8 frames, all that the inference reads on grids. A learnt
    # Freeway chicken crosses rows in its first steps that a random one rarely reaches, and Freeway's car speeds
    # change every episode: the per-cell model alone opened a fourth task at Freeway's third visit. Recorded with
    #   python -c "import numpy as np; from agents.bench.inference_stream import *; np.savez_compressed(
    #   'tests/data/minatar_table_agent30k_windows.npz', **episode_windows(revisit_stream(TABLE_GAMES, 3, [3000], 5)
    #   [:7], 'agent:table@30000'))"
    windows, games = _recorded_windows("minatar_table_agent30k_windows")
    fmn, decided = FlatFMN(), []
    for frames in windows:
        for j, frame in enumerate(frames):
            task = fmn.observe(frame, episode_start=j == 0)
        decided.append(task)
    assert fmn.n_tasks == 3
    # Every episode but a visit's first (whose window may close only at the next episode start) plays its game's task.
    later = [(g, t) for i, (g, t) in enumerate(zip(games, decided, strict=True)) if i and games[i - 1] == g]
    task_of = {g: {t for h, t in later if h == g} for g in set(games)}
    assert all(len(tasks) == 1 for tasks in task_of.values()), task_of
    assert len({next(iter(tasks)) for tasks in task_of.values()}) == 3
