"""Retention metrics on hand-made matrices whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cl_rl.retention import (
    backward_transfer,
    bootstrap_replicates,
    difference_interval,
    final_average,
    forgetting,
    forward_transfer,
    iqm,
    kept_fraction,
    mean,
    reference_transfer,
    stratified_bootstrap,
    total_clipped,
    worst_drop,
)

# Games A, B, C; segments train A, B, A (revisit), C. Row i: HNS on each game after segment i.
TRAINED = [0, 1, 0, 2]
R = np.array(
    [
        [0.5, 0.1, -0.2],
        [0.2, 0.8, 0.0],
        [0.9, 0.4, 0.1],
        [0.6, 0.3, 1.5],
    ]
)


def test_total_clipped_hns_clips_each_game_to_0_1_per_row():
    assert total_clipped(R) == pytest.approx([0.6, 1.0, 1.4, 1.9])
    assert total_clipped(R[-1]) == pytest.approx(1.9)
    assert total_clipped(np.array([np.nan, 2.0, -3.0])) == pytest.approx(1.0)  # missing counts as random


def test_final_average_is_the_mean_of_the_last_row():
    assert final_average(R) == pytest.approx(0.8)


def test_forgetting_is_the_best_own_score_minus_the_end_score():
    # A: best of its two visits (0.5, 0.9) − 0.6; B: 0.8 − 0.3; C was trained last: nothing forgotten.
    assert forgetting(R, TRAINED) == pytest.approx([0.3, 0.5, 0.0])


def test_forgetting_of_a_game_never_trained_is_nan():
    result = forgetting(R[:2], TRAINED[:2])
    assert result[:2] == pytest.approx([0.5 - 0.2, 0.0]) and np.isnan(result[2])


def test_worst_drop_is_the_largest_drop_below_the_best_earlier_own_score():
    # A: best 0.5 after segment 0, 0.2 after segment 1 (drop 0.3), 0.9 after its revisit, 0.6 at the end (0.3);
    # B: 0.8 after segment 1, then 0.4 and 0.3 (0.5); C: trained last, no later score.
    result = worst_drop(R, TRAINED)
    assert result[:2] == pytest.approx([0.3, 0.5]) and np.isnan(result[2])
    # A lost in mid-sequence and relearnt on its revisit: forgetting (against the end) misses it, worst drop does not
    relearnt = np.array([[0.8, 0.0], [0.1, 0.7], [0.9, 0.6], [0.85, 0.9]])
    assert forgetting(relearnt, [0, 1, 0, 1])[0] == pytest.approx(0.05)
    assert worst_drop(relearnt, [0, 1, 0, 1]) == pytest.approx([0.7, 0.1])


def test_worst_drop_equals_the_pairwise_definition_on_random_runs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n_games, n_rows = int(rng.integers(1, 5)), int(rng.integers(1, 9))
        matrix = rng.normal(size=(n_rows, n_games))
        matrix[rng.random(matrix.shape) < 0.1] = np.nan
        trained = rng.integers(0, n_games, n_rows).tolist()
        expected = np.full(n_games, np.nan)
        for j in range(n_games):  # every pair: an earlier own segment s, any later segment end t
            drops = [
                matrix[s, j] - matrix[t, j]
                for t in range(n_rows)
                for s in range(t)
                if trained[s] == j and not np.isnan(matrix[s, j]) and not np.isnan(matrix[t, j])
            ]
            if drops:
                expected[j] = max(drops)
        np.testing.assert_allclose(worst_drop(matrix, trained), expected)


def test_kept_fraction_is_the_smallest_share_of_the_gain_over_random_left_later():
    random = np.array([0.1, 0.0, 0.0])
    # A: gain 0.4 after segment 0; 0.1 of it left after segment 1 (share 0.25); best 0.9 after its revisit, then
    # 0.5 of its 0.8 gain (0.625). B: gain 0.8, then 0.4 and 0.3 (0.375). C: trained last: nothing to keep.
    result = kept_fraction(R, TRAINED, random)
    assert result[:2] == pytest.approx([0.25, 0.375]) and np.isnan(result[2])
    # Never above random after its own segment: nothing learnt, so nothing kept or lost.
    assert np.isnan(kept_fraction(np.array([[0.0, 0.0], [0.5, 1.0]]), [0, 1], np.array([0.2, 0.0]))[0])


def test_kept_fraction_with_one_own_segment_is_one_minus_the_worst_drop_of_the_gain():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n_games = int(rng.integers(2, 5))
        trained = rng.permutation(n_games).tolist()  # each game trained once
        matrix = rng.normal(size=(n_games, n_games)) + 3.0 * np.eye(n_games)[trained]
        random = rng.normal(size=n_games) - 1.0
        own = matrix[[trained.index(j) for j in range(n_games)], range(n_games)]
        gain = own - random
        share = (matrix - random) / gain  # the gain over random, scaled so that 1 is the game's own score
        expected = np.where(gain > 0, 1.0 - worst_drop(share, trained), np.nan)
        np.testing.assert_allclose(kept_fraction(matrix, trained, random), expected)


def test_backward_transfer_uses_each_games_last_own_segment_and_skips_the_last_game():
    mean, per_game = backward_transfer(R, TRAINED)
    assert per_game[:2] == pytest.approx([0.6 - 0.9, 0.3 - 0.8]) and np.isnan(per_game[2])
    assert mean == pytest.approx(-0.4)


def test_forward_transfer_is_the_zero_shot_score_before_the_first_segment_against_a_baseline():
    mean, per_game = forward_transfer(R, TRAINED, np.zeros(3))
    assert np.isnan(per_game[0])  # A is trained first: no score before it
    assert per_game[1:] == pytest.approx([0.1, 0.1]) and mean == pytest.approx(0.1)
    mean, per_game = forward_transfer(R, TRAINED, np.array([0.0, 0.05, 0.2]))
    assert per_game[1:] == pytest.approx([0.05, -0.1]) and mean == pytest.approx(-0.025)


def test_reference_transfer_compares_the_score_after_the_first_segment_with_a_single_task_run():
    mean, per_game = reference_transfer(R, TRAINED, np.array([0.4, 1.0, np.nan]))
    assert per_game[:2] == pytest.approx([0.1, -0.2]) and np.isnan(per_game[2])
    assert mean == pytest.approx(-0.05)


def test_a_single_segment_has_no_transfer_and_gives_nan_not_an_error():
    mean, _ = backward_transfer(R[:1], [0])
    assert np.isnan(mean)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: forgetting(R, [0, 1]), "one entry per row|each of the 4 rows"),
        (lambda: forgetting(R, [0, 1, 0, 3]), r"column indices in \[0, 3\)"),
        (lambda: forgetting(R[0], [0]), "2 axes"),
        (lambda: forward_transfer(R, TRAINED, np.zeros(2)), "one value per game"),
    ],
)
def test_malformed_input_is_a_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # 8 values: drop 2 each side → mean(3, 4, 5, 6)
    assert iqm(np.array([[0.0, 0.0, 1.0, 100.0], [1.0, 2.0, 3.0, -50.0]])) == pytest.approx(1.0)
    # scipy.stats.trim_mean(x, 0.25) with 10 values drops int(2.5) = 2 on each side.
    assert iqm(np.array([10, 1, 2, 3, 4, 5, 6, 7, 8, -10])) == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))


def test_stratified_bootstrap_resamples_runs_within_each_game():
    # Every game has the same score in every run: resampling runs within a game changes nothing, so the CI is a
    # point. (An unstratified bootstrap over all entries would spread.)
    same_per_game = np.tile([0.1, 0.5, 0.9, 2.0], (5, 1))
    ci = stratified_bootstrap(same_per_game, reps=500)
    assert ci.value == ci.low == ci.high == pytest.approx(iqm(same_per_game))


def test_stratified_bootstrap_interval_holds_the_estimate_and_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    few = rng.normal(1.0, 0.5, size=(3, 4))
    many = rng.normal(1.0, 0.5, size=(30, 4))
    ci_few, ci_many = stratified_bootstrap(few, reps=2000), stratified_bootstrap(many, reps=2000)
    for ci in (ci_few, ci_many):
        assert ci.low < ci.value < ci.high
    assert ci_many.high - ci_many.low < ci_few.high - ci_few.low
    # The vectorised IQM path agrees with the generic one.
    generic = stratified_bootstrap(few, statistic=lambda s: iqm(s), reps=2000)
    assert (generic.low, generic.high) == pytest.approx((ci_few.low, ci_few.high))


@pytest.mark.parametrize("statistic", [iqm, mean])
def test_difference_interval_equals_a_plain_loop_with_the_same_generator(statistic):
    # Two methods, 3 and 4 seeds (a partial table), 3 games: the vectorised bootstrap against a loop that draws each
    # replicate's runs one at a time from the same generator (method first, then baseline) and takes percentiles.
    rng = np.random.default_rng(3)
    scores, baseline = rng.normal(0.4, 0.3, size=(3, 3)), rng.normal(0.1, 0.3, size=(4, 3))
    reps, seed = 3000, 7
    ci = difference_interval(scores, baseline, statistic, reps=reps, seed=seed)

    draw = np.random.default_rng(seed)
    games = np.arange(3)
    ours = [statistic(scores[draw.integers(0, 3, size=(3, 3)), games]) for _ in range(reps)]
    theirs = [statistic(baseline[draw.integers(0, 4, size=(4, 3)), games]) for _ in range(reps)]
    low, high = np.percentile(np.subtract(ours, theirs), [2.5, 97.5])
    assert ci.value == pytest.approx(statistic(scores) - statistic(baseline))
    assert (ci.low, ci.high) == pytest.approx((low, high))


def test_difference_interval_known_answer_two_seeds():
    # One game; the method's seeds score 0 and 1, the baseline's 0 and 0. A resampled mean of {0, 1} is 0, 0.5 or 1
    # with probabilities 1/4, 1/2, 1/4 and the baseline's is 0: the 95 % interval of the difference is [0, 1] around
    # 0.5, which does not exclude 0.
    ci = difference_interval(np.array([[0.0], [1.0]]), np.zeros((2, 1)), mean, reps=20_000)
    assert (ci.value, ci.low, ci.high) == (0.5, 0.0, 1.0)
    assert not ci.excludes(0.0)


def test_bootstrap_replicates_follow_the_exact_bootstrap_distribution():
    # Three seeds each: the exact bootstrap distribution of mean(a*) − mean(b*) enumerates the 27 × 27 equally likely
    # resamples; the Monte Carlo replicates' CDF must match it.
    a, b = np.array([[0.0], [1.0], [2.0]]), np.array([[0.0], [0.0], [3.0]])
    resamples = np.array(np.meshgrid(*[range(3)] * 3)).reshape(3, -1).T  # 27 × 3 seed indices
    exact = (a[resamples, 0].mean(axis=1)[:, None] - b[resamples, 0].mean(axis=1)[None, :]).ravel()
    rng = np.random.default_rng(0)
    reps = 100_000
    replicates = bootstrap_replicates(a, mean, reps, rng) - bootstrap_replicates(b, mean, reps, rng)
    for x in (-2.0, -1.0, 0.0, 0.5, 1.0, 2.0):
        assert np.mean(replicates <= x + 1e-9) == pytest.approx(np.mean(exact <= x + 1e-9), abs=0.006)


def test_difference_interval_separates_a_clear_shift_and_checks_its_input():
    rng = np.random.default_rng(0)
    baseline = rng.normal(0.0, 0.05, size=(5, 3))
    ci = difference_interval(baseline + 1.0, baseline, reps=2000)
    assert ci.value == pytest.approx(1.0) and ci.excludes(0.0) and ci.low > 0.8
    same = difference_interval(baseline, baseline.copy(), reps=2000)
    assert same.value == 0.0 and not same.excludes(0.0)
    with pytest.raises(ValueError, match="same games"):
        difference_interval(np.zeros((3, 2)), np.zeros((3, 3)))
