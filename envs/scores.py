"""Reference scores: random and human scores of the 57 ALE games (human-normalised scores, HNS), random scores of
the MinAtar games.

The ALE table in `data/atari_scores.csv` is copied from DQN Zoo (`dqn_zoo/atari_data.py`, `_ATARI_DATA`, in
github.com/google-deepmind/dqn_zoo): undiscounted returns averaged over at least 3 episodes, each started with 1-30
no-ops and capped at 108,000 frames. HNS = (score - random) / (human - random): 0 is random play, 1 is human play.

The MinAtar table in `data/minatar_scores.csv` is measured here by `scripts/measure_minatar_random.py` (uniformly random
actions over all 6, MinAtar's default settings as trained: sticky actions 0.1, difficulty ramping; mean and standard
deviation over its episodes). MinAtar has no human scores, so no HNS: `human_score` and `human_normalized_score` raise
`NoHumanScoreError` for a MinAtar game; callers that log scores of any game ask `has_human_score` first.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources

from envs.games import ALL_GAMES, MINATAR_GAMES, canonical_game, game_family


class NoHumanScoreError(ValueError):
    """A human score (or HNS) asked for a game that has none: a MinAtar game."""


@functools.cache
def score_table() -> dict[str, tuple[float, float]]:
    """CamelCase ALE game -> (random score, human score), read once from the packaged CSV."""
    table = {row["game"]: (float(row["random"]), float(row["human"])) for row in _read_csv("atari_scores.csv")}
    assert set(table) == set(ALL_GAMES), f"atari_scores.csv games differ from ALL_GAMES: {set(table) ^ set(ALL_GAMES)}"
    return table


@functools.cache
def minatar_score_table() -> dict[str, tuple[float, float]]:
    """MinAtar game ("MinAtar/Breakout") -> (random score, its standard deviation over episodes), read once."""
    table = {row["game"]: (float(row["random"]), float(row["random_sd"])) for row in _read_csv("minatar_scores.csv")}
    assert set(table) == set(MINATAR_GAMES), f"minatar_scores.csv games differ: {set(table) ^ set(MINATAR_GAMES)}"
    return table


def _read_csv(name: str) -> list[dict[str, str]]:
    text = importlib.resources.files("envs").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def random_score(game: str) -> float:
    """Mean score of the uniformly random policy on `game` (ALE or MinAtar)."""
    name = canonical_game(game)
    if game_family(name) == "minatar":
        return minatar_score_table()[name][0]
    return score_table()[name][0]


def has_human_score(game: str) -> bool:
    """Whether `game` has a human score, hence an HNS: every ALE game, no MinAtar game."""
    return game_family(game) == "ale"


def human_score(game: str) -> float:
    """Mean score of the professional human tester on ALE game `game`; NoHumanScoreError for a MinAtar game."""
    return _ale_scores(game)[1]


def human_normalized_score(game: str, score: float) -> float:
    """(score - random) / (human - random): 0 for random play, 1 for human play; NoHumanScoreError for MinAtar."""
    rand, human = _ale_scores(game)
    return (score - rand) / (human - rand)


def _ale_scores(game: str) -> tuple[float, float]:
    name = canonical_game(game)
    if not has_human_score(name):
        raise NoHumanScoreError(
            f"{name!r} has no human score (MinAtar publishes none), so no human-normalised score: use its raw score, "
            "or random_score(game) as the baseline; check envs.scores.has_human_score(game) first"
        )
    return score_table()[name]
