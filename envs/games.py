"""Names of the 57 Atari games of the DQN Zoo / Agent57 benchmark and how to spell them.

Every other module takes game names through `canonical_game`, so a typo fails early with a list of the closest
valid names instead of deep inside ale-py.
"""

from __future__ import annotations

import difflib
import re

# CamelCase ALE names, as in the gymnasium env ids "ALE/<Name>-v5" (ROM ids are the snake_case forms).
ALL_GAMES: tuple[str, ...] = (
    "Alien",
    "Amidar",
    "Assault",
    "Asterix",
    "Asteroids",
    "Atlantis",
    "BankHeist",
    "BattleZone",
    "BeamRider",
    "Berzerk",
    "Bowling",
    "Boxing",
    "Breakout",
    "Centipede",
    "ChopperCommand",
    "CrazyClimber",
    "Defender",
    "DemonAttack",
    "DoubleDunk",
    "Enduro",
    "FishingDerby",
    "Freeway",
    "Frostbite",
    "Gopher",
    "Gravitar",
    "Hero",
    "IceHockey",
    "Jamesbond",
    "Kangaroo",
    "Krull",
    "KungFuMaster",
    "MontezumaRevenge",
    "MsPacman",
    "NameThisGame",
    "Phoenix",
    "Pitfall",
    "Pong",
    "PrivateEye",
    "Qbert",
    "Riverraid",
    "RoadRunner",
    "Robotank",
    "Seaquest",
    "Skiing",
    "Solaris",
    "SpaceInvaders",
    "StarGunner",
    "Surround",
    "Tennis",
    "TimePilot",
    "Tutankham",
    "UpNDown",
    "Venture",
    "VideoPinball",
    "WizardOfWor",
    "YarsRevenge",
    "Zaxxon",
)

# "ALE/Pong-v5", "PongNoFrameskip-v4", "Pong-v5" -> "Pong"; the version suffix carries no game information.
_ENV_ID_AFFIXES = re.compile(r"^ALE/|(NoFrameskip|Deterministic)?-v\d+$")


def _normalize(name: str) -> str:
    """Lower-case key without separators: "Space Invaders", "space_invaders", "ALE/SpaceInvaders-v5" agree."""
    return re.sub(r"[^a-z0-9]", "", _ENV_ID_AFFIXES.sub("", name.strip()).lower())


_BY_KEY: dict[str, str] = {_normalize(game): game for game in ALL_GAMES}


class UnknownGameError(ValueError):
    """A game name that is not one of the 57 games in `ALL_GAMES`."""


def canonical_game(name: str) -> str:
    """Return the CamelCase ALE name of `name` (any case, snake_case, spaces or "ALE/<Name>-v5").

    Raises:
        UnknownGameError: `name` is not one of the 57 games; the message lists the closest valid names.
    """
    if not isinstance(name, str):
        raise UnknownGameError(f"game name must be a str, got {name!r} ({type(name).__name__})")
    game = _BY_KEY.get(_normalize(name))
    if game is not None:
        return game
    close = [_BY_KEY[key] for key in difflib.get_close_matches(_normalize(name), _BY_KEY, n=3, cutoff=0.6)]
    if close:
        hint = f"closest valid names: {', '.join(close)}. Use one of these"
    else:
        hint = f"no close match. Use one of: {', '.join(ALL_GAMES)}"
    raise UnknownGameError(
        f"unknown Atari game {name!r}; {hint} (CamelCase as in envs.games.ALL_GAMES, e.g. 'SpaceInvaders'; "
        "snake_case 'space_invaders' and 'ALE/SpaceInvaders-v5' work too)."
    )


def ale_env_id(game: str) -> str:
    """Gymnasium env id of `game`, e.g. "ALE/Pong-v5"."""
    return f"ALE/{canonical_game(game)}-v5"
