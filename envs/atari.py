"""One Atari game as a gymnasium env with the standard DQN preprocessing and the full 18-action set.

Every game shares one observation space, Box(0, 255, (4, 84, 84), uint8), and one action space, Discrete(18), so a
single network serves every game of a sequence (as in Kirkpatrick et al. 2017, EWC). The chain is built only from
gymnasium and stable-baselines3 wrappers:

    ALE env (frameskip=1, full action set, sticky actions, 108k-frame cap)
    -> FullActionSpace (only for games whose legal set has fewer than 18 actions: Skiing in ale-py 0.12)
    -> gymnasium AtariPreprocessing (1-30 no-op starts, frame skip 4 with max-pool, 84x84 grayscale)
    -> SB3 Monitor (raw, unclipped game score in info["episode"]["r"] at the real game over)
    -> SB3 EpisodicLifeEnv (if terminal_on_life_loss; after Monitor so the score is still the full game's)
    -> SB3 ClipRewardEnv (if clip_rewards; sign of the reward, for learning only)
    -> gymnasium FrameStackObservation (4 frames, channel first)
"""

from __future__ import annotations

from dataclasses import dataclass

import ale_py
import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
from stable_baselines3.common.atari_wrappers import ClipRewardEnv, EpisodicLifeEnv
from stable_baselines3.common.monitor import Monitor

from envs.games import ale_env_id

gym.register_envs(ale_py)

N_ACTIONS = len(ale_py.Action.__members__)  # 18 joystick/button combinations of the Atari 2600


@dataclass
class AtariSettings:
    """Preprocessing of one Atari game; the defaults are those of DQN Zoo (Nature DQN without sticky actions)."""

    noop_max: int = 30
    """Episodes start after a uniform 1..noop_max no-op frames (0: none), so a deterministic game has varied starts."""
    frame_skip: int = 4
    """Emulator frames per agent step; the action repeats and the observation is the max of the last two frames."""
    screen_size: int = 84
    """Side of the square grayscale observation, in pixels."""
    frame_stack: int = 4
    """Number of consecutive observations stacked on the first axis."""
    terminal_on_life_loss: bool = False
    """Losing a life ends the learning episode (the game goes on; the logged score is still the full game's)."""
    clip_rewards: bool = True
    """Rewards are replaced by their sign (-1, 0, 1) for learning; the logged score stays raw."""
    sticky_action_prob: float = 0.0
    """Probability that the emulator repeats the previous action each frame (0.25 in Machado et al. 2018)."""
    max_episode_frames: int = 108_000
    """Emulator frames before an episode is truncated (108k frames = 30 minutes of play = 27k agent steps)."""

    def __post_init__(self) -> None:
        _check_int("noop_max", self.noop_max, minimum=0)
        _check_int("frame_skip", self.frame_skip, minimum=1)
        _check_int("screen_size", self.screen_size, minimum=1)
        _check_int("frame_stack", self.frame_stack, minimum=1)
        _check_int("max_episode_frames", self.max_episode_frames, minimum=1)
        for name in ("terminal_on_life_loss", "clip_rewards"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AtariSettings.{name} must be a bool, got {getattr(self, name)!r}")
        prob = self.sticky_action_prob
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
            raise ValueError(f"AtariSettings.sticky_action_prob must be a float in [0, 1], got {prob!r}")
        self.sticky_action_prob = float(prob)


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError naming the AtariSettings field unless `value` is an int >= minimum (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"AtariSettings.{name} must be an int >= {minimum}, got {value!r}")


class FullActionSpace(gym.ActionWrapper):
    """Expose all 18 actions on a game whose ALE legal action set is smaller, dropping the FIRE button.

    ale-py 0.12 gives Skiing only 9 legal actions even with full_action_space=True (ALE issue #691) because the
    game ignores the button; an action with FIRE is sent as the same direction without it (FIRE -> NOOP).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        legal = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]  # an AtariEnv's; gymnasium types it Env
        self._meanings = list(ale_py.Action.__members__)
        self._to_legal = tuple(legal.index(name.replace("FIRE", "") or "NOOP") for name in self._meanings)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)

    def action(self, action: int) -> int:
        """Index of `action` (an index into the full set) in the game's legal action set."""
        return self._to_legal[action]

    def get_action_meanings(self) -> list[str]:
        """Names of the 18 exposed actions, in ALE order."""
        return list(self._meanings)


def make_atari_env(game: str, settings: AtariSettings, seed: int | None = None) -> gym.Env:
    """Build the preprocessed env of `game` (any spelling `canonical_game` accepts).

    With a `seed`, the env is reset once with it here (seeding the emulator and the no-op sampling) and its action
    space is seeded, so later unseeded resets replay the same games; without one, ale-py seeds from entropy.
    """
    env = gym.make(
        ale_env_id(game),
        frameskip=1,
        full_action_space=True,
        repeat_action_probability=settings.sticky_action_prob,
        max_num_frames_per_episode=settings.max_episode_frames,
    )
    if env.action_space.n != N_ACTIONS:  # type: ignore[attr-defined]  # ALE's action space is Discrete
        env = FullActionSpace(env)
    env = AtariPreprocessing(
        env,
        noop_max=settings.noop_max,
        frame_skip=settings.frame_skip,
        screen_size=settings.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )
    env = Monitor(env)
    if settings.terminal_on_life_loss:
        env = EpisodicLifeEnv(env)
    if settings.clip_rewards:
        env = ClipRewardEnv(env)
    env = FrameStackObservation(env, settings.frame_stack)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
