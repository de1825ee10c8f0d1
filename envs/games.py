"""Names of the games, in two families, and how to spell them.

- ``ale``: the 57 Atari games of the DQN Zoo / Agent57 benchmark (`ALL_GAMES`), CamelCase as in "ALE/<Name>-v5";
- ``minatar``: the 5 MinAtar games (Young & Tian 2019; `MINATAR_GAMES`), named "MinAtar/<Name>".

Every other module takes game names through `canonical_game`, so a typo fails early with a list of the closest
valid names instead of deep inside ale-py or MinAtar. "Breakout" is the ALE game; "MinAtar/Breakout" the MinAtar one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

Family = Literal["ale", "minatar"]

# The 57 ALE games: CamelCase names, as in the gymnasium env ids "ALE/<Name>-v5" (ROM ids are the snake_case forms).
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

MINATAR_PREFIX = "MinAtar/"
# The MinAtar games, named as MinAtar's own gymnasium ids without the version ("MinAtar/Breakout-v1").
MINATAR_GAMES: tuple[str, ...] = tuple(
    MINATAR_PREFIX + name for name in ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
)

# "ALE/Pong-v5", "PongNoFrameskip-v4", "Pong-v5" -> "Pong"; the version suffix carries no game information.
_ENV_ID_AFFIXES = re.compile(r"^ALE/|(NoFrameskip|Deterministic)?-v\d+$")


def _normalize(name: str) -> str:
    """Lower-case key without separators: "Space Invaders", "space_invaders", "ALE/SpaceInvaders-v5" agree.

    A MinAtar name keeps its family in the key ("minatar/space_invaders" -> "minatarspaceinvaders"); no ALE key
    starts with "minatar".
    """
    return re.sub(r"[^a-z0-9]", "", _ENV_ID_AFFIXES.sub("", name.strip()).lower())


_BY_KEY: dict[str, str] = {_normalize(game): game for game in (*ALL_GAMES, *MINATAR_GAMES)}


class UnknownGameError(ValueError):
    """A game name that is none of the 57 ALE games in `ALL_GAMES` nor of the MinAtar games in `MINATAR_GAMES`."""


def canonical_game(name: str) -> str:
    """Return the canonical name of `name`: CamelCase for an ALE game (any case, snake_case, spaces or
    "ALE/<Name>-v5"), "MinAtar/<Name>" for a MinAtar game ("minatar/space_invaders", "MinAtar/Breakout-v1").

    Raises:
        UnknownGameError: `name` is not one of the games; the message lists the closest valid names.
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
        hint = f"no close match. Use one of: {', '.join((*ALL_GAMES, *MINATAR_GAMES))}"
    raise UnknownGameError(
        f"unknown game {name!r}; {hint} (Atari games CamelCase as in envs.games.ALL_GAMES, e.g. 'SpaceInvaders'; "
        "snake_case 'space_invaders' and 'ALE/SpaceInvaders-v5' work too; MinAtar games as in "
        "envs.games.MINATAR_GAMES, e.g. 'MinAtar/SpaceInvaders')."
    )


def game_family(game: str) -> Family:
    """``'minatar'`` for a MinAtar game, ``'ale'`` for an Atari game (any spelling `canonical_game` accepts)."""
    return "minatar" if canonical_game(game).startswith(MINATAR_PREFIX) else "ale"


def common_family(games: Iterable[str]) -> Family:
    """The family all of `games` belong to; ValueError naming the games of each family if they mix.

    A game sequence is played by one network over one observation space: 4×84×84 ALE frames and 10×10×10 MinAtar
    grids cannot share it.
    """
    by_family: dict[str, list[str]] = {}
    for game in games:
        by_family.setdefault(game_family(game), []).append(canonical_game(game))
    if len(by_family) != 1:
        if not by_family:
            raise ValueError("no games given")
        raise ValueError(
            f"a sequence cannot mix Atari games ({', '.join(dict.fromkeys(by_family['ale']))}) with MinAtar games "
            f"({', '.join(dict.fromkeys(by_family['minatar']))}): their observations differ in shape (4×84×84 "
            "frames, 10×10×10 grids) and one network plays the whole sequence. Use games of one family"
        )
    (family,) = by_family
    return family  # type: ignore[return-value]


def ale_env_id(game: str) -> str:
    """Gymnasium env id of ALE game `game`, e.g. "ALE/Pong-v5"."""
    name = canonical_game(game)
    if game_family(name) != "ale":
        raise ValueError(f"{name!r} is a MinAtar game, not an ALE game: it has no ALE env id")
    return f"ALE/{name}-v5"
