"""A schedule of games and the single env that plays it as one continuous stream.

A `GameSequence` is an ordered list of segments (game, agent steps); a game may come back later (a revisit).
`SequenceEnv` steps the game of the current segment and moves to the next game exactly at the segment boundary, so
an SB3 agent trains on the whole sequence with one `learn` call. The true game is given only in `info` (for logging
and oracle baselines), never in the observation: task-agnostic methods must infer it. The games of a sequence are all
of one family (ALE or MinAtar, `envs.games.game_family`): one network plays them over one observation space.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np

from envs.games import Family, canonical_game, common_family


@dataclass(frozen=True)
class Segment:
    """`steps` agent steps of `game` (canonicalised: "Pong", "MinAtar/Breakout")."""

    game: str
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "game", canonical_game(self.game))
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps <= 0:
            raise ValueError(f"Segment.steps must be a positive int (agent steps), got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))


@dataclass(frozen=True)
class GameSequence:
    """Ordered, non-empty tuple of segments of games of one family; revisits of a game are allowed."""

    segments: tuple[Segment, ...]
    ends: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """Global agent step at which each segment ends (exclusive): cumulative sums of the segment lengths."""
    games: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Distinct games in order of first appearance; a game's index here is stable over the sequence."""
    family: Family = field(init=False, repr=False, compare=False)
    """The family of every game: 'ale' or 'minatar'."""

    def __post_init__(self) -> None:
        segments = tuple(self.segments)
        if not segments:
            raise ValueError(f"GameSequence.segments must not be empty, got {self.segments!r}")
        for segment in segments:
            if not isinstance(segment, Segment):
                raise ValueError(f"GameSequence.segments must hold Segment objects, got {segment!r}")
        ends = tuple(int(end) for end in np.cumsum([segment.steps for segment in segments]))
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "ends", ends)
        object.__setattr__(self, "games", tuple(dict.fromkeys(segment.game for segment in segments)))
        object.__setattr__(self, "family", common_family(self.games))

    @classmethod
    def from_list(cls, items: Iterable[dict[str, Any]]) -> GameSequence:
        """Build from config data: [{"game": "Pong", "steps": 1_000_000}, ...]."""
        segments = []
        for item in items:
            if not isinstance(item, dict) or set(item) != {"game", "steps"}:
                raise ValueError(f"each sequence entry must be a dict with keys 'game' and 'steps', got {item!r}")
            segments.append(Segment(item["game"], item["steps"]))
        return cls(tuple(segments))

    def to_list(self) -> list[dict[str, Any]]:
        """Plain data for configs and checkpoints; inverse of `from_list`."""
        return [{"game": segment.game, "steps": segment.steps} for segment in self.segments]

    @property
    def total_steps(self) -> int:
        """Agent steps of the whole sequence."""
        return self.ends[-1]

    def segment_at(self, step: int) -> int:
        """Index of the segment that global agent step `step` (0-based) belongs to."""
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step must be in [0, {self.total_steps}), got {step!r}")
        return bisect.bisect_right(self.ends, step)

    def __len__(self) -> int:
        return len(self.segments)


def random_sequence(
    pool: Sequence[str], n_games: int, visits_per_game: int, steps_per_segment: int, seed: int
) -> GameSequence:
    """Draw `n_games` distinct games from `pool`, visit each `visits_per_game` times, in a random order with no game
    twice in a row.

    The order is drawn one segment at a time among the games allowed next (not the previous one, and not one whose
    remaining visits could then no longer be separated), so every valid order can come out.
    """
    games = list(dict.fromkeys(canonical_game(game) for game in pool))
    common_family(games)  # a pool of both families fails here, whichever games a draw would take
    if not 1 <= n_games <= len(games):
        raise ValueError(f"n_games must be in [1, {len(games)}] (distinct games in pool), got {n_games!r}")
    if visits_per_game < 1:
        raise ValueError(f"visits_per_game must be >= 1, got {visits_per_game!r}")
    if n_games == 1 and visits_per_game > 1:
        raise ValueError(f"visits_per_game={visits_per_game} with n_games=1 would repeat a game consecutively")
    rng = random.Random(seed)
    remaining = dict.fromkeys(rng.sample(games, n_games), visits_per_game)
    order: list[str] = []
    previous = None
    while len(order) < n_games * visits_per_game:
        allowed = [game for game in remaining if game != previous and remaining[game] and _can_finish(remaining, game)]
        previous = rng.choice(allowed)
        remaining[previous] -= 1
        order.append(previous)
    return GameSequence(tuple(Segment(game, steps_per_segment) for game in order))


def _can_finish(remaining: dict[str, int], chosen: str) -> bool:
    """Whether the visits left after taking `chosen` next can be ordered without consecutive repeats."""
    left = sum(remaining.values()) - 1
    for game, count in remaining.items():
        if game == chosen and count - 1 > left // 2:  # it cannot come right after itself
            return False
        if game != chosen and count > (left + 1) // 2:
            return False
    return True


class SequenceEnv(gym.Env):
    """Plays a `GameSequence` as one env: the game changes exactly at the configured agent steps.

    The step that completes a segment returns truncated=True and info["segment_end"]=True; the following `reset()`
    starts the next segment's game. Episode ends inside a segment reset the same game. There is one sub-env per game,
    made lazily by `make_env(game)` and kept, so a revisit reuses its emulator and RNG streams; every segment still
    starts with a new game (an interrupted game is never resumed, also under SB3's EpisodicLifeEnv).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}  # type: ignore[misc]  # gymnasium types it per instance

    def __init__(self, sequence: GameSequence, make_env: Callable[[str], gym.Env]) -> None:
        self.sequence = sequence
        self._make_env = make_env
        self._envs: dict[str, gym.Env] = {}
        self._unseeded: set[str] = set()  # games whose next reset must use the seed of the last seeded reset()
        self._seed: int | None = None
        self._steps_done = 0
        self._segment = 0
        self._game = sequence.segments[0].game
        self._needs_reset = True
        self._segment_start = True  # the next reset begins a segment: it must start a new game
        first = self._env = self._env_for(self._game)
        self.observation_space = first.observation_space
        self.action_space = first.action_space

    @property
    def steps_done(self) -> int:
        """Agent steps taken over the whole sequence (the global schedule position)."""
        return self._steps_done

    @property
    def segment_index(self) -> int:
        """Index of the segment of the current observation."""
        return self._segment

    @property
    def current_game(self) -> str:
        """Game of the current observation (for logging and oracles; not part of the observation)."""
        return self._game

    def seek(self, step: int) -> None:
        """Put the schedule at global agent step `step` (to resume); the next `reset()` starts that step's game."""
        if not 0 <= step <= self.sequence.total_steps:
            raise ValueError(f"step must be in [0, {self.sequence.total_steps}], got {step!r}")
        self._steps_done = step
        self._needs_reset = True
        self._segment_start = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode of the game scheduled at `steps_done` (the last game once the sequence is over).

        A `seed` makes each game's next first reset use seed + its index in `sequence.games`.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._seed = seed
            self._unseeded = set(self.sequence.games)
        finished = self._steps_done >= self.sequence.total_steps
        self._segment = len(self.sequence) - 1 if finished else self.sequence.segment_at(self._steps_done)
        game = self._game = self.sequence.segments[self._segment].game
        game_seed = None
        if game in self._unseeded:
            self._unseeded.discard(game)
            assert self._seed is not None  # games are unseeded only after a seeded reset()
            game_seed = self._seed + self.sequence.games.index(game)
        env = self._env = self._env_for(game)
        if self._segment_start or game_seed is not None:
            # SB3's EpisodicLifeEnv turns a reset after a lost life into a no-op step; make it restart the game.
            env.set_wrapper_attr("was_real_done", True, force=False)
        obs, info = env.reset(seed=game_seed, options=options)
        self._needs_reset = finished
        self._segment_start = False
        info["game"] = game
        info["segment"] = self._segment
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the current game; at the segment's last step, truncate and mark info["segment_end"]."""
        if self._needs_reset:
            if self._steps_done >= self.sequence.total_steps:
                raise RuntimeError(f"the game sequence is over after {self.sequence.total_steps} agent steps")
            raise RuntimeError("call reset() first: the episode or segment ended, seek() was called, or no reset yet")
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._steps_done += 1
        info["game"] = self._game
        info["segment"] = self._segment
        if self._steps_done == self.sequence.ends[self._segment]:
            truncated = True
            info["segment_end"] = True
            self._segment_start = True
        self._needs_reset = terminated or truncated
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Close every sub-env made so far."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def _env_for(self, game: str) -> gym.Env:
        """The sub-env of `game`, made on first use and checked to share the spaces of the first one."""
        env = self._envs.get(game)
        if env is None:
            env = self._make_env(game)
            if self._envs and (
                env.observation_space != self.observation_space or env.action_space != self.action_space
            ):
                raise ValueError(
                    f"make_env({game!r}) gave spaces {env.observation_space}, {env.action_space}; every game must "
                    f"share {self.observation_space}, {self.action_space}"
                )
            self._envs[game] = env
        return env


def per_env_sequence(sequence: GameSequence, n_envs: int) -> GameSequence:
    """The schedule each of `n_envs` parallel envs plays so that all switch games at the same vector step.

    Segments stay counted in agent steps of the whole vector (transitions, as the one-env stream counts them): a
    segment of S steps is S / n_envs steps of each env, so the experience per game does not depend on `n_envs`. Every
    segment's length must therefore be a multiple of `n_envs`.
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
    uneven = [(i, s.steps) for i, s in enumerate(sequence.segments) if s.steps % n_envs]
    if uneven:
        i, steps = uneven[0]
        raise ValueError(
            f"segment {i} has {steps} agent steps, not a multiple of n_envs={n_envs}: the envs switch games together, "
            f"so each segment must be n_envs × (steps per env); use {steps - steps % n_envs or n_envs} or "
            f"{steps - steps % n_envs + n_envs}"
        )
    return GameSequence(tuple(Segment(s.game, s.steps // n_envs) for s in sequence.segments))


class GameStream(Protocol):
    """What the training driver needs of a sequence played by `n_envs` envs that switch games together.

    `ParallelSequence` (Python envs in SB3's `DummyVecEnv`) and `envs.vector_sequence.AtariSequenceVecEnv` (ale-py's
    C++ vector env) both are one; steps are agent steps of all envs together.
    """

    sequence: GameSequence
    n_envs: int

    @property
    def steps_done(self) -> int: ...

    def seek(self, step: int) -> None: ...

    def close(self) -> None: ...


class ParallelSequence:
    """`n_envs` `SequenceEnv`s of one sequence that play the same game and switch together (`per_env_sequence`).

    Steps and `seek` are in agent steps of the whole vector: env i has taken `steps_done / n_envs` steps of its own
    schedule. Each env keeps its own emulators and RNG streams (SB3's `DummyVecEnv.seed(s)` seeds env i with s + i).
    """

    def __init__(self, sequence: GameSequence, make_env: Callable[[str], gym.Env], n_envs: int) -> None:
        self.sequence = sequence
        self.n_envs = n_envs
        own = per_env_sequence(sequence, n_envs)
        self.envs = [SequenceEnv(own, make_env) for _ in range(n_envs)]

    @property
    def steps_done(self) -> int:
        """Agent steps taken by all envs together (the global schedule position)."""
        return self.envs[0].steps_done * self.n_envs

    def seek(self, step: int) -> None:
        """Put every env at global agent step `step` (a multiple of n_envs, as every checkpoint's step is)."""
        if step % self.n_envs:
            raise ValueError(f"step must be a multiple of n_envs={self.n_envs}, got {step!r}")
        for env in self.envs:
            env.seek(step // self.n_envs)

    def close(self) -> None:
        for env in self.envs:
            env.close()
