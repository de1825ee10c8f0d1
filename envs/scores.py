"""Random and human reference scores of the 57 games, for human-normalised scores (HNS).

The table in `data/atari_scores.csv` is copied from DQN Zoo (`dqn_zoo/atari_data.py`, `_ATARI_DATA`, in
github.com/google-deepmind/dqn_zoo): undiscounted returns averaged over at least 3 episodes, each started with 1-30
no-ops and capped at 108,000 frames. HNS = (score - random) / (human - random): 0 is random play, 1 is human play.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources

from envs.games import ALL_GAMES, canonical_game


@functools.cache
def score_table() -> dict[str, tuple[float, float]]:
    """CamelCase game -> (random score, human score), read once from the packaged CSV."""
    text = importlib.resources.files("envs").joinpath("data").joinpath("atari_scores.csv").read_text(encoding="utf-8")
    table = {row["game"]: (float(row["random"]), float(row["human"])) for row in csv.DictReader(text.splitlines())}
    assert set(table) == set(ALL_GAMES), f"atari_scores.csv games differ from ALL_GAMES: {set(table) ^ set(ALL_GAMES)}"
    return table


def random_score(game: str) -> float:
    """Mean score of the uniformly random policy on `game`."""
    return score_table()[canonical_game(game)][0]


def human_score(game: str) -> float:
    """Mean score of the professional human tester on `game`."""
    return score_table()[canonical_game(game)][1]


def human_normalized_score(game: str, score: float) -> float:
    """(score - random) / (human - random): 0 for random play, 1 for human play."""
    rand, human = score_table()[canonical_game(game)]
    return (score - rand) / (human - rand)
