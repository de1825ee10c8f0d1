"""Several copies of one Atari game stepped by ale-py's C++ `AtariVectorEnv`, behind SB3's `VecEnv` interface.

The C++ env emulates and preprocesses (frame skip, max-pool, grayscale, INTER_AREA resize, no-op starts, sticky
actions, frame cap) in worker threads, several times faster than `DummyVecEnv` over `make_atari_env`'s Python chain.
SB3 rejects a gymnasium `VectorEnv`, so `AtariVecEnv` adapts it and adds what the Python chain gets from its other
wrappers, so that `make_atari_vec_env` can stand in for `DummyVecEnv([make_atari_env] * n_envs)`:

    AtariVectorEnv (reward clipping, episodic life, fire reset and frame stacking off; same-step autoreset)
    -> Discrete(18) actions mapped onto the game's legal set (as `envs.atari.FullActionSpace` does for Skiing)
    -> raw score and length of each game: info["episode"] = {"r", "l", "t"} at the real game over (as SB3 Monitor)
    -> learning episode ends at a life loss (if terminal_on_life_loss; as SB3 EpisodicLifeEnv tests it)
    -> sign of the reward (if clip_rewards)
    -> frame stack, padded with the first frame of an episode (as gymnasium FrameStackObservation)

Every info has info["game"] and info["TimeLimit.truncated"]; at a done, info["terminal_observation"] is the last
stacked observation and the returned observation is the first of the next episode, as in SB3's own VecEnvs.

With noop_max=0 and sticky_action_prob=0 the observations, rewards and dones equal the Python chain's exactly for the
same actions (tests/test_envs_vector.py). What cannot match it exactly:
- noop_max > 0: the C++ env draws 0..noop_max-1 no-op frames at reset with its own generator (the Python chain
  draws 1..noop_max from the env's numpy generator), so the starts differ by one frame and in which draws come out.
- seed: the C++ env seeds sub-env i with seed + i directly, while ale-py's AtariEnv derives the emulator's seed
  through numpy's SeedSequence; with sticky actions the same seed therefore gives other games than the chain's.
- max_episode_frames counts emulator frames from the end of the no-op start (ALE counts the no-op frames too).
- terminal_on_life_loss: after a life loss the next learning episode starts from the frame of the loss; SB3's
  EpisodicLifeEnv first takes one extra NOOP step (frame_skip frames) that the adapter cannot take for one sub-env.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from envs.atari import N_ACTIONS, AtariSettings
from envs.games import canonical_game

# AtariSettings fields this module maps onto the C++ env or the adapter; a new field must be added here knowingly.
_MAPPED_SETTINGS = frozenset(
    {
        "noop_max",
        "frame_skip",
        "screen_size",
        "frame_stack",
        "terminal_on_life_loss",
        "clip_rewards",
        "sticky_action_prob",
        "max_episode_frames",
    }
)
# Fields of a run's settings (envs.game_env.EnvSettings, an AtariSettings subclass) for other families: not ALE's.
_OTHER_FAMILY_SETTINGS = frozenset({"minatar"})
_INT32_MAX = 2**31 - 1  # the C++ env takes frame caps and seeds as 32-bit ints


def rom_id(game: str) -> str:
    """ale-py ROM id of `game` (any spelling `canonical_game` accepts): "MsPacman" -> "ms_pacman"."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", canonical_game(game)).lower()


def full_to_legal(legal: Sequence[ale_py.Action]) -> np.ndarray:
    """Index in `legal` of each of the 18 ALE actions; FIRE is dropped where the game has no such action."""
    names = [action.name for action in legal]
    full = ale_py.Action.__members__
    return np.array([names.index(name if name in names else name.replace("FIRE", "") or "NOOP") for name in full])


def check_vec_settings(settings: AtariSettings, n_envs: int) -> None:
    """Raise ValueError naming the setting the C++ vector env cannot take, and what to do instead."""
    if not isinstance(settings, AtariSettings):
        raise ValueError(f"settings must be an envs.atari.AtariSettings, got {settings!r}")
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
    unknown = sorted({field.name for field in dataclasses.fields(settings)} - _MAPPED_SETTINGS - _OTHER_FAMILY_SETTINGS)
    if unknown:
        raise ValueError(
            f"envs.vector does not map AtariSettings.{unknown[0]} onto the C++ AtariVectorEnv; map it in "
            "envs/vector.py or build the env with envs.atari.make_atari_env"
        )
    if settings.max_episode_frames > _INT32_MAX:
        raise ValueError(
            f"AtariSettings.max_episode_frames must be <= {_INT32_MAX} for the C++ AtariVectorEnv, "
            f"got {settings.max_episode_frames}; lower it or use envs.atari.make_atari_env"
        )


class CppSubEnvs:
    """SB3 ``VecEnv``'s attribute methods for C++-emulated sub-envs, which have no Python attributes or methods but
    ``game`` (the class's ``game``) and ``render_mode`` (None), and give Monitor's info["episode"] themselves."""

    game: str

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        values = {"game": self.game, "render_mode": None}
        if attr_name not in values:
            name = type(self).__name__
            raise AttributeError(f"{name} sub-envs have only the attributes {sorted(values)}, not {attr_name!r}")
        return [values[attr_name] for _ in self._get_indices(indices)]  # type: ignore[attr-defined]  # VecEnv's

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Refuse: the C++ sub-envs are configured once, from AtariSettings."""
        name = type(self).__name__
        raise AttributeError(f"cannot set {attr_name!r} on {name} sub-envs; build one with other settings")

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Refuse: the C++ sub-envs expose no Python methods."""
        raise AttributeError(f"{type(self).__name__} sub-envs have no Python methods such as {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True for SB3's Monitor only: the sub-envs give Monitor's info["episode"], so evaluate_policy can use it."""
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]  # type: ignore[attr-defined]  # VecEnv's


class AtariVecEnv(CppSubEnvs, VecEnv):
    """`n_envs` copies of one game in ale-py's C++ vector env, with the Python chain's infos (see module docstring)."""

    def __init__(self, game: str, settings: AtariSettings, n_envs: int, num_threads: int = 0) -> None:
        check_vec_settings(settings, n_envs)
        self.game = canonical_game(game)
        self.settings = settings
        self._ale = AtariVectorEnv(
            rom_id(self.game),
            n_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=settings.max_episode_frames,
            repeat_action_probability=settings.sticky_action_prob,
            full_action_space=True,
            autoreset_mode=AutoresetMode.SAME_STEP,
            img_height=settings.screen_size,
            img_width=settings.screen_size,
            grayscale=True,
            stack_num=1,
            frameskip=settings.frame_skip,
            maxpool=True,
            noop_max=settings.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=False,
        )
        self._to_legal = full_to_legal(self._ale.ale.get_action_set())
        shape = (settings.frame_stack, settings.screen_size, settings.screen_size)
        self._stacks = np.zeros((n_envs, *shape), dtype=np.uint8)
        self._returns = np.zeros(n_envs, dtype=np.float64)
        self._lengths = np.zeros(n_envs, dtype=np.int64)
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self._actions = np.zeros(n_envs, dtype=np.int64)
        self._t_start = time.time()
        observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        super().__init__(n_envs, observation_space, gym.spaces.Discrete(N_ACTIONS))

    def reset(self) -> np.ndarray:
        """Start a new game in every sub-env, seeding those given a seed by `seed()` since the last reset."""
        seeds = np.array([-1 if s is None else int(s) % _INT32_MAX for s in self._seeds], dtype=np.int64)
        obs, info = self._ale.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self._stacks[:] = obs
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._lives[:] = info["lives"]
        return self._stacks.copy()

    def step_async(self, actions: np.ndarray) -> None:
        """Remember one action in [0, 18) per sub-env for `step_wait`."""
        actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        if actions.shape != (self.num_envs,) or actions.min() < 0 or actions.max() >= N_ACTIONS:
            raise ValueError(f"expected {self.num_envs} actions in [0, {N_ACTIONS}), got {actions!r}")
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env; at a done, put the final observation in the info and return the next episode's first."""
        obs, raw, terminated, truncated, ale_info = self._ale.step(self._to_legal[self._actions])
        raw = raw.astype(np.float64)
        self._returns += raw
        self._lengths += 1
        game_over = terminated | truncated
        lives = ale_info["lives"].astype(np.int64)
        life_lost = ~game_over & (lives > 0) & (lives < self._lives) & self.settings.terminal_on_life_loss
        self._lives = lives  # after a game over these are already the next game's lives

        self._stacks[:, :-1] = self._stacks[:, 1:]
        self._stacks[:, -1] = np.where(game_over[:, None, None], ale_info.get("final_obs", obs)[:, 0], obs[:, 0])
        infos: list[dict[str, Any]] = [
            {"game": self.game, "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
            for i in range(self.num_envs)
        ]
        for i in np.flatnonzero(game_over | life_lost):
            infos[i]["terminal_observation"] = self._stacks[i].copy()
            if game_over[i]:
                elapsed = round(time.time() - self._t_start, 6)
                infos[i]["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]), "t": elapsed}
                self._returns[i], self._lengths[i] = 0.0, 0
                self._stacks[i] = obs[i, 0]
            else:
                self._stacks[i] = self._stacks[i, -1].copy()
        rewards = np.sign(raw) if self.settings.clip_rewards else raw
        return self._stacks.copy(), rewards.astype(np.float32), game_over | life_lost, infos

    def close(self) -> None:
        """Stop the C++ worker threads."""
        self._ale.close()


def make_atari_vec_env(
    game: str, settings: AtariSettings, n_envs: int, seed: int | None = None, num_threads: int = 0
) -> AtariVecEnv:
    """`n_envs` copies of `game` in one C++ vector env; with a `seed`, sub-env i's first reset uses seed + i.

    `num_threads` is the number of C++ worker threads (0: one per sub-env, at most one per CPU core).
    """
    if rom_id(game) not in roms.get_all_rom_ids():
        raise ValueError(f"ale-py has no ROM {rom_id(game)!r} for {game!r}")
    env = AtariVecEnv(game, settings, n_envs, num_threads=num_threads)
    if seed is not None:
        env.seed(seed)
    return env
