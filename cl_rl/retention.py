"""Retention metrics of a continual run, computed from its retention matrix.

The retention matrix ``R`` has one row per training segment and one column per game: ``R[i, j]`` is the score on game
``j`` measured right after segment ``i``; ``trained[i]`` is the column of the game trained during segment ``i`` (a
game may be trained in several segments). Scores are usually human-normalised (HNS: random play 0, human 1), so the
games can be averaged. A missing evaluation is NaN and is skipped where a metric can do without it.

- reference-normalised score: (score − random) / (single-task reference − random), 0 for random play and 1 for an
  agent trained on that game alone for as long;
- total clipped HNS: Σ_j clip(HNS_j, 0, 1), the EWC paper's summary (Kirkpatrick et al. 2017, Fig. 4B): 0 for random
  play on every game, the number of games for human level on all of them;
- forgetting of game j: its best score right after one of its own segments minus its score at the end
  (Wolczyk et al. 2021, Continual World, F_i = p_i(i·Δ) − p_i(T); with revisits, the best of the visits, as in
  Powers et al. 2021, CORA);
- worst drop of game j: the largest drop, at any segment end after its first segment, below its best score so far
  after one of its own segments (forgetting measured at every segment end instead of only at the end);
- kept fraction of game j: the smallest share of its gain over random play (best score after its own segments minus
  the random score) left at any later segment end: 1 kept all, 0 back to random play;
- backward transfer: mean over games of R[T, j] − R[l_j, j], with l_j the last segment that trained j (Lopez-Paz &
  Ranzato 2017, GEM, BWT = 1/(T−1) Σ_i R_{T,i} − R_{i,i}; games trained in the last segment are left out);
- forward transfer: mean over games of R[f_j − 1, j] − b_j, the zero-shot score just before j's first segment f_j
  against the score b_j of a random policy (GEM's FWT = 1/(T−1) Σ_i R_{i−1,i} − b_i; games trained first are left
  out); against a single-task reference run, R[f_j, j] − ref_j: the score after j's first segment against that of
  an agent trained on j alone for as long (Continual World's forward transfer, with end scores instead of areas);
- aggregates across seeds: the interquartile mean (IQM) with stratified-bootstrap percentile confidence intervals,
  following rliable's definitions (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"):
  ``scipy.stats.trim_mean(x, 0.25)`` over all runs × games, runs resampled with replacement within each game.
  (rliable itself is not a dependency: its ``arch`` dependency fails to import with pandas 3.)
- the difference of two methods' aggregates (a method against fine-tuning) with a percentile interval from the
  same stratified bootstrap run on each method's runs independently (``difference_interval``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def _check(matrix: np.ndarray, trained: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    matrix, trained = np.asarray(matrix, dtype=float), [int(j) for j in trained]
    if matrix.ndim != 2:
        raise ValueError(f"a retention matrix has 2 axes (segments × games), got shape {matrix.shape}")
    if len(trained) != matrix.shape[0]:
        raise ValueError(f"trained names the game of each of the {matrix.shape[0]} rows, got {len(trained)} entries")
    if any(not 0 <= j < matrix.shape[1] for j in trained):
        raise ValueError(f"trained holds column indices in [0, {matrix.shape[1]}), got {trained}")
    return matrix, trained


def normalize(scores: np.ndarray, random: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(score − random) / (reference − random) per game (last axis): 0 random play, 1 the single-task reference.

    DQN's human-normalised score (Mnih et al. 2015) with a single-task agent in place of the human, as continual-RL
    comparisons against single-task references do (Wolczyk et al. 2021). A game whose reference is not above random
    has no scale: its column is NaN.
    """
    scores = np.asarray(scores, dtype=float)
    random, reference = np.asarray(random, dtype=float), np.asarray(reference, dtype=float)
    if random.shape != scores.shape[-1:] or reference.shape != scores.shape[-1:]:
        raise ValueError(
            f"random {random.shape} and reference {reference.shape} need one value per game ({scores.shape[-1]})"
        )
    scale = reference - random
    return np.where(scale > 0, (scores - random) / np.where(scale > 0, scale, 1.0), np.nan)


def total_clipped(hns: np.ndarray) -> np.ndarray | float:
    """Σ_j clip(HNS_j, 0, 1) over the last axis (EWC paper, Fig. 4B); NaN entries count as 0."""
    clipped = np.nan_to_num(np.clip(np.asarray(hns, dtype=float), 0.0, 1.0), nan=0.0)
    total = clipped.sum(axis=-1)
    return float(total) if np.ndim(total) == 0 else total


def final_average(matrix: np.ndarray) -> float:
    """Mean score over games after the last segment."""
    return _nanmean(np.asarray(matrix, dtype=float)[-1])


def forgetting(matrix: np.ndarray, trained: Sequence[int]) -> np.ndarray:
    """Per game: best score right after one of its own segments minus its score at the end (NaN: never trained)."""
    matrix, trained = _check(matrix, trained)
    out = np.full(matrix.shape[1], np.nan)
    for j in range(matrix.shape[1]):
        own = [i for i, g in enumerate(trained) if g == j and not np.isnan(matrix[i, j])]
        if own:
            out[j] = max(matrix[i, j] for i in own) - matrix[-1, j]
    return out


def worst_drop(matrix: np.ndarray, trained: Sequence[int]) -> np.ndarray:
    """Per game: the largest drop, at any later segment end, below its best score so far after one of its own
    segments, max_{t > f_j} (max_{s < t, s trains j} R[s, j] − R[t, j]) (NaN: never trained, or trained only last).

    ``forgetting`` compares with the end only; with revisits a game can be lost in mid-sequence and relearnt on its
    next visit (fine-tuning's SpaceInvaders in ``docs/RESULTS.md``), which only this shows: the max drop from the best
    earlier score.
    """
    matrix, trained = _check(matrix, trained)
    out = np.full(matrix.shape[1], np.nan)
    for j in range(matrix.shape[1]):
        drops = [best - score for best, score in _after_own_best(matrix, trained, j)]
        if drops:
            out[j] = max(drops)
    return out


def kept_fraction(matrix: np.ndarray, trained: Sequence[int], random: np.ndarray) -> np.ndarray:
    """Per game: the smallest share of its gain over random play that it keeps at any later segment end,
    min_{t > f_j} (R[t, j] − b_j) / (max_{s < t, s trains j} R[s, j] − b_j), with b_j the random score.

    1 keeps everything learnt, 0 is back at random play, below 0 worse than random. NaN where there is nothing to
    keep: a game never trained, trained only in the last segment, or never scoring above random after its own
    segments. With one own segment it is 1 − ``worst_drop`` of the matrix normalised by (R − b) / (R[f_j, j] − b).
    """
    matrix, trained = _check(matrix, trained)
    random = _per_game(random, matrix.shape[1], "random")
    out = np.full(matrix.shape[1], np.nan)
    for j in range(matrix.shape[1]):
        b = random[j]
        shares = [(score - b) / (best - b) for best, score in _after_own_best(matrix, trained, j) if best > b]
        if shares:
            out[j] = min(shares)
    return out


def _after_own_best(matrix: np.ndarray, trained: Sequence[int], j: int) -> Iterator[tuple[float, float]]:
    """(best score of game ``j`` after its own segments so far, its score now) at every later scored segment end."""
    best = -np.inf
    for t, g in enumerate(trained):
        if np.isnan(matrix[t, j]):
            continue
        if best > -np.inf:
            yield best, float(matrix[t, j])
        if g == j:
            best = max(best, matrix[t, j])


def backward_transfer(matrix: np.ndarray, trained: Sequence[int]) -> tuple[float, np.ndarray]:
    """GEM's BWT and its per-game terms R[T, j] − R[l_j, j] (NaN for games never trained or trained last)."""
    matrix, trained = _check(matrix, trained)
    per_game = np.full(matrix.shape[1], np.nan)
    last = len(trained) - 1
    for j in set(trained):
        l_j = max(i for i, g in enumerate(trained) if g == j)
        if l_j < last:
            per_game[j] = matrix[-1, j] - matrix[l_j, j]
    return _nanmean(per_game), per_game


def forward_transfer(matrix: np.ndarray, trained: Sequence[int], baseline: np.ndarray) -> tuple[float, np.ndarray]:
    """GEM's FWT and its per-game terms R[f_j − 1, j] − b_j (NaN for games trained first or never)."""
    matrix, trained = _check(matrix, trained)
    baseline = _per_game(baseline, matrix.shape[1], "baseline")
    per_game = np.full(matrix.shape[1], np.nan)
    for j in set(trained):
        f_j = trained.index(j)
        if f_j > 0:
            per_game[j] = matrix[f_j - 1, j] - baseline[j]
    return _nanmean(per_game), per_game


def reference_transfer(matrix: np.ndarray, trained: Sequence[int], reference: np.ndarray) -> tuple[float, np.ndarray]:
    """Per game R[f_j, j] − ref_j: after its first segment, against a single-task run of that length (NaN: no ref)."""
    matrix, trained = _check(matrix, trained)
    reference = _per_game(reference, matrix.shape[1], "reference")
    per_game = np.full(matrix.shape[1], np.nan)
    for j in set(trained):
        per_game[j] = matrix[trained.index(j), j] - reference[j]
    return _nanmean(per_game), per_game


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries: the mean of the middle 50 % (scipy's ``trim_mean(x, 0.25)``, as rliable)."""
    flat = np.sort(np.asarray(scores, dtype=float).ravel())
    if flat.size == 0:
        raise ValueError("the IQM needs at least one score")
    cut = int(0.25 * flat.size)
    return float(flat[cut : flat.size - cut].mean())


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval."""

    value: float
    low: float
    high: float

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval (for a difference: the sign is clear at this confidence)."""
        return bool(self.low > value or self.high < value)


def mean(scores: np.ndarray) -> float:
    """Mean of all entries (the statistic of one game's seeds, where an IQM of 3–5 values would drop most)."""
    return float(np.mean(np.asarray(scores, dtype=float)))


def stratified_bootstrap(
    scores: np.ndarray,
    statistic: Callable[[np.ndarray], float] = iqm,
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``statistic`` of a runs × games matrix with a percentile CI from runs resampled within each game (rliable)."""
    scores = _runs_by_games(scores)
    _check_bootstrap(reps, confidence)
    stats = bootstrap_replicates(scores, statistic, reps, np.random.default_rng(seed))
    return Interval(statistic(scores), *_percentile_interval(stats, confidence))


def difference_interval(
    scores: np.ndarray,
    baseline: np.ndarray,
    statistic: Callable[[np.ndarray], float] = iqm,
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """statistic(scores) − statistic(baseline), each a runs × games matrix of the same games, with a percentile CI.

    Each replicate resamples the runs of ``scores`` within each game, then those of ``baseline`` within each game,
    independently (a two-sample stratified bootstrap; Efron & Tibshirani 1993, §8.3, with rliable's strata), and
    takes the difference of the two statistics. Not paired by seed: seed k of two methods shares its initial weights
    and environment seeds, but the runs part at the first update where the methods differ, and the table's metrics
    are read after task switches, where they have parted; where the runs still correlate (a first segment that is
    the same run for both) the independent interval is the wider, conservative one. It also needs no common seeds, so
    a partial table (methods with different numbers of finished seeds) gets its intervals too.
    """
    scores, baseline = _runs_by_games(scores), _runs_by_games(baseline)
    if scores.shape[1] != baseline.shape[1]:
        raise ValueError(f"both matrices need the same games (columns), got {scores.shape} and {baseline.shape}")
    _check_bootstrap(reps, confidence)
    rng = np.random.default_rng(seed)
    stats = bootstrap_replicates(scores, statistic, reps, rng) - bootstrap_replicates(baseline, statistic, reps, rng)
    return Interval(statistic(scores) - statistic(baseline), *_percentile_interval(stats, confidence))


def bootstrap_replicates(
    scores: np.ndarray, statistic: Callable[[np.ndarray], float], reps: int, rng: np.random.Generator
) -> np.ndarray:
    """``reps`` values of ``statistic`` on runs × games matrices whose runs are drawn with replacement within each
    game (one ``rng.integers`` call of shape reps × runs × games; ``iqm`` and ``mean`` vectorised)."""
    n_runs, n_games = scores.shape
    runs = rng.integers(0, n_runs, size=(reps, n_runs, n_games))
    samples = scores[runs, np.arange(n_games)]
    if statistic is iqm:  # sort each resample once
        flat = np.sort(samples.reshape(reps, -1), axis=1)
        cut = int(0.25 * flat.shape[1])
        return flat[:, cut : flat.shape[1] - cut].mean(axis=1)
    if statistic is mean:
        return samples.reshape(reps, -1).mean(axis=1)
    return np.array([statistic(sample) for sample in samples])


def _runs_by_games(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty runs × games matrix, got shape {scores.shape}")
    return scores


def _check_bootstrap(reps: int, confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def _per_game(values: np.ndarray, n_games: int, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (n_games,):
        raise ValueError(f"{name} needs one value per game ({n_games}), got shape {values.shape}")
    return values


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
