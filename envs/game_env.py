"""The one entry point that builds the env of a game of either family, and the settings of both.

`make_game_env(game, settings)` builds an ALE game with `envs.atari.make_atari_env` and a MinAtar game with
`envs.minatar.make_minatar_env`. `EnvSettings` is the ``env`` section of a run's config: the ALE preprocessing fields
(those of `AtariSettings`, unchanged, at the top level) and ``minatar``, the settings of MinAtar games. Each family
reads only its own: the ALE fields do not apply to MinAtar (no frame skip, no stack, no no-ops, no clipping) and
``minatar`` does not apply to the ALE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym

from envs.atari import AtariSettings, make_atari_env
from envs.games import Family, game_family
from envs.minatar import OBSERVATION_SHAPE, MinAtarSettings, make_minatar_env


@dataclass
class EnvSettings(AtariSettings):
    """Settings of every game of a run: `AtariSettings`' fields for ALE games, ``minatar`` for MinAtar games."""

    minatar: MinAtarSettings = field(default_factory=MinAtarSettings)
    """Settings of MinAtar games (MinAtar's defaults: sticky actions 0.1, difficulty ramping)."""


def make_game_env(game: str, settings: AtariSettings | None = None, seed: int | None = None) -> gym.Env:
    """The env of `game` (ALE or MinAtar, any spelling `envs.games.canonical_game` accepts), with `settings`' fields
    for its family; default settings if None. A plain `AtariSettings` gives MinAtar games MinAtar's defaults.

    A `seed` resets the env once with it and seeds its action space (see `make_atari_env`, `make_minatar_env`).
    """
    settings = EnvSettings() if settings is None else settings
    if game_family(game) == "minatar":
        return make_minatar_env(game, _minatar_settings(settings), seed=seed)
    return make_atari_env(game, settings, seed=seed)


def observation_shape(family: Family, settings: AtariSettings) -> tuple[int, int, int]:
    """Shape of the (uint8) observations of a game of `family`, without building an env."""
    if family == "minatar":
        return OBSERVATION_SHAPE
    return (settings.frame_stack, settings.screen_size, settings.screen_size)


def frames_per_step(family: Family, settings: AtariSettings) -> int:
    """Frames of the game per agent step: the ALE frame skip; 1 for MinAtar (one frame per action)."""
    return 1 if family == "minatar" else settings.frame_skip


def _minatar_settings(settings: AtariSettings) -> MinAtarSettings:
    return settings.minatar if isinstance(settings, EnvSettings) else MinAtarSettings()
