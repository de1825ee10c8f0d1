"""One MinAtar game (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed") as a gymnasium env.

MinAtar's five games are 10×10 grids with one binary channel per kind of object (4 to 10 channels, by game) and the
same 6 actions (no-op, left, up, right, down, fire). Every game here shares one observation space and one action
space, so a single network serves every game of a sequence, as on the ALE (`envs.atari`):

    minatar.Environment (all 6 actions, MinAtar's sticky actions 0.1 and difficulty ramping by default)
    -> MinAtarEnv: the state as a channel-first uint8 (10, 10, 10) grid, 0 or 255, channels beyond the game's zero
    -> gymnasium TimeLimit (max_episode_steps; MinAtar has no cap of its own)
    -> SB3 Monitor (episode score in info["episode"]["r"], as the ALE chain)

No frame skip, no frame stack and no reward clipping: MinAtar steps one frame per action, its objects carry trail
channels that make a state Markov, and its rewards are the games' own (+1 a brick, a kill...; up to +10 when Seaquest
surfaces), as in the MinAtar paper's DQN.

Values 0/255, not 0/1: the project treats observations as uint8 pixel intensities. SB3 divides an image space (a
uint8 Box over [0, 255]) by 255 before the network (``normalize_images``), so the network sees exactly MinAtar's 0/1
grid, as for Atari frames; LwF's distillation reads replayed states as [0, 255] too. (A Box(0, 1) would not be an
image space: SB3 would pass it undivided, which would also give 0/1, but then two conventions would coexist.) The task
inference takes any non-zero cell as on. Channel-first with 10 = the most channels of any game (Seaquest's): SB3 takes
a (10, 10, 10) image space as channel-first (the first of its smallest axes), so it adds no transpose.

MinAtar's own gymnasium registration (``minatar.gym``, ``MinAtar/Breakout-v1``) is not used: gymnasium >= 1.0 no
longer loads the ``gymnasium.envs`` entry point it relies on (``gym.make("MinAtar/Breakout-v1")`` raises
NamespaceNotFound until ``minatar.gym.register_envs()`` is called by hand), its full action set is only in the ``-v0``
ids that gymnasium reports as out of date, its ``reset`` does not seed the env's ``np_random``, and its observation is a
channel-last bool grid whose depth varies by game, which would need two more wrappers here. Wrapping
``minatar.Environment`` directly is shorter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.monitor import Monitor

from envs.games import MINATAR_PREFIX, canonical_game, game_family

N_ACTIONS = 6  # every MinAtar game: no-op, left, up, right, down, fire
GRID = 10  # side of the square grid
N_CHANNELS = 10  # the most channels of any game (Seaquest); fewer are padded with zeros
OBSERVATION_SHAPE = (N_CHANNELS, GRID, GRID)
ON = 255  # value of an occupied cell


@dataclass
class MinAtarSettings:
    """Settings of one MinAtar game; the defaults are MinAtar's own (``minatar.Environment``)."""

    sticky_action_prob: float = 0.1
    """Probability that the previous action is repeated instead of the chosen one, each step (MinAtar's default)."""
    difficulty_ramping: bool = True
    """Games speed up as the agent progresses (MinAtar's default; Breakout and Freeway have no ramp)."""
    max_episode_steps: int = 27_000
    """Agent steps before an episode is truncated. MinAtar has no cap; this bounds evaluation episodes of a good agent
    (27k agent steps, as ALE's 108k-frame cap gives with frame skip 4; random play ends far sooner)."""

    def __post_init__(self) -> None:
        prob = self.sticky_action_prob
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
            raise ValueError(f"MinAtarSettings.sticky_action_prob must be a float in [0, 1], got {prob!r}")
        self.sticky_action_prob = float(prob)
        if not isinstance(self.difficulty_ramping, bool):
            raise ValueError(f"MinAtarSettings.difficulty_ramping must be a bool, got {self.difficulty_ramping!r}")
        steps = self.max_episode_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"MinAtarSettings.max_episode_steps must be an int >= 1, got {steps!r}")


def module_name(game: str) -> str:
    """MinAtar's module name of `game` ("MinAtar/SpaceInvaders" -> "space_invaders")."""
    name = canonical_game(game)
    if game_family(name) != "minatar":
        raise ValueError(f"{name!r} is not a MinAtar game; MinAtar games are named like 'MinAtar/Breakout'")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.removeprefix(MINATAR_PREFIX)).lower()


class MinAtarEnv(gym.Env):
    """A MinAtar game with all 6 actions and (10, 10, 10) uint8 channel-first observations (0 or 255).

    ``reset(seed=...)`` seeds MinAtar's generator (the game's randomness and the sticky actions); without a seed
    ever, MinAtar seeds from entropy.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}  # type: ignore[misc]  # gymnasium types it per instance

    def __init__(self, game: str, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True) -> None:
        from minatar import Environment  # here, not at the top: minatar imports seaborn and scipy (~1-3 s a process)

        self.game = canonical_game(game)
        self._env = Environment(module_name(self.game), sticky_action_prob, difficulty_ramping)
        self.n_channels = self._env.state_shape()[2]  # the game's own channels; the rest stay zero
        self.observation_space = gym.spaces.Box(0, ON, OBSERVATION_SHAPE, np.uint8)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(seed)
        self._env.reset()
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, terminated = self._env.act(int(action))
        return self._observation(), float(reward), bool(terminated), False, {}

    def _observation(self) -> np.ndarray:
        obs = np.zeros(OBSERVATION_SHAPE, dtype=np.uint8)
        obs[: self.n_channels] = np.moveaxis(self._env.state(), -1, 0)
        obs *= ON
        return obs


def make_minatar_env(game: str, settings: MinAtarSettings, seed: int | None = None) -> gym.Env:
    """Build the env of MinAtar game `game` ("MinAtar/Breakout", any case).

    With a `seed`, the env is reset once with it here and its action space is seeded, so later unseeded resets replay
    the same games (as `envs.atari.make_atari_env`).
    """
    env: gym.Env = MinAtarEnv(game, settings.sticky_action_prob, settings.difficulty_ramping)
    env = TimeLimit(env, settings.max_episode_steps)
    env = Monitor(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
