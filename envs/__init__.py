"""Atari tasks with DQN preprocessing and the full 18-action set, and game sequences for continual RL."""

from envs.atari import AtariSettings, make_atari_env
from envs.games import ALL_GAMES, UnknownGameError, ale_env_id, canonical_game
from envs.scores import human_normalized_score, human_score, random_score
from envs.sequence import GameSequence, Segment, SequenceEnv, random_sequence

__all__ = [
    "ALL_GAMES",
    "AtariSettings",
    "GameSequence",
    "Segment",
    "SequenceEnv",
    "UnknownGameError",
    "ale_env_id",
    "canonical_game",
    "human_normalized_score",
    "human_score",
    "make_atari_env",
    "random_score",
    "random_sequence",
]
