"""Games of two families as tasks for continual RL: Atari (ALE) with DQN preprocessing and the full 18-action set,
MinAtar with all 6 actions; game sequences of one family; `make_game_env` builds a game of either family."""

from envs.atari import AtariSettings, make_atari_env
from envs.game_env import EnvSettings, frames_per_step, make_game_env, observation_shape
from envs.games import (
    ALL_GAMES,
    MINATAR_GAMES,
    UnknownGameError,
    ale_env_id,
    canonical_game,
    common_family,
    game_family,
)
from envs.minatar import MinAtarSettings, make_minatar_env
from envs.scores import NoHumanScoreError, has_human_score, human_normalized_score, human_score, random_score
from envs.sequence import GameSequence, Segment, SequenceEnv, random_sequence

__all__ = [
    "ALL_GAMES",
    "MINATAR_GAMES",
    "AtariSettings",
    "EnvSettings",
    "GameSequence",
    "MinAtarSettings",
    "NoHumanScoreError",
    "Segment",
    "SequenceEnv",
    "UnknownGameError",
    "ale_env_id",
    "canonical_game",
    "common_family",
    "frames_per_step",
    "game_family",
    "has_human_score",
    "human_normalized_score",
    "human_score",
    "make_atari_env",
    "make_game_env",
    "make_minatar_env",
    "observation_shape",
    "random_score",
    "random_sequence",
]
