"""A game sequence played by `n_envs` copies of the current ALE game in ale-py's C++ vector env, behind SB3's VecEnv.

`AtariSequenceVecEnv` is the C++ counterpart of `envs.sequence.ParallelSequence` in SB3's `DummyVecEnv`
(``agent.vector: cpp``): every env plays the current segment's game and all switch together, segments counted in agent
steps of all envs (each a multiple of `n_envs`, `per_env_sequence`). Each segment gets its own
`envs.vector.AtariVecEnv`: at the boundary the old one is closed and the next game's opened, so a segment always
starts new games (as `SequenceEnv`, which never resumes an interrupted game).

It gives the agent what `DummyVecEnv` over `SequenceEnv`s gives it:
- every info has info["game"] and info["segment"] (of the step's game), and `reset_infos[i]` those of the episode
  env i starts after a done (the agent infers its task on env 0 from them, `ContinualDQN._observe_task`);
- the step that completes a segment is a done of every env with info["segment_end"] = True, the last observation in
  info["terminal_observation"] and info["TimeLimit.truncated"] = True unless the episode ended there anyway; the
  returned observation is the first of the next segment's game (of a new episode of the last game at the very end,
  after which `step` refuses, as `SequenceEnv` does);
- `steps_done`, `seek(step)` (to resume), `sequence`, `n_envs` and `close` of `GameStream`, so the training driver
  takes either stream.

Seeding: `seed(s)` makes the env opened for segment k seed its sub-env i with s + k·n_envs + i (a revisit gets
other games than the first visit; the Python stream instead goes on with the game's emulator). The C++ env's other
differences from the Python chain (no-op start draws, NOOP after a life loss) are listed in `envs.vector`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ale_py import roms
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from envs.atari import N_ACTIONS, AtariSettings
from envs.sequence import GameSequence, per_env_sequence
from envs.vector import AtariVecEnv, CppSubEnvs, check_vec_settings, rom_id


class AtariSequenceVecEnv(CppSubEnvs, VecEnv):
    """`n_envs` C++-emulated copies of the current game of an ALE `GameSequence`, switching games together."""

    def __init__(self, sequence: GameSequence, settings: AtariSettings, n_envs: int, num_threads: int = 0) -> None:
        if sequence.family != "ale":
            raise ValueError(
                f"the C++ AtariVectorEnv plays ALE games only, but the sequence plays {sequence.family} games "
                f"({', '.join(sequence.games)}): use envs.sequence.ParallelSequence"
            )
        check_vec_settings(settings, n_envs)
        per_env_sequence(sequence, n_envs)  # every segment a multiple of n_envs
        missing = [game for game in sequence.games if rom_id(game) not in roms.get_all_rom_ids()]
        if missing:
            raise ValueError(f"ale-py has no ROM for {', '.join(missing)}")
        self.sequence, self.settings, self.n_envs, self.num_threads = sequence, settings, n_envs, num_threads
        self._vec: AtariVecEnv | None = None  # the open C++ env, made for segment self._segment
        self._segment = 0
        self._steps_done = 0
        self._needs_reset = True
        self._seed: int | None = None  # the last seed() given, for every env opened after it
        self._seed_pending = False  # seed() was called: the next reset seeds even an env already open
        shape = (settings.frame_stack, settings.screen_size, settings.screen_size)
        super().__init__(n_envs, gym.spaces.Box(0, 255, shape, np.uint8), gym.spaces.Discrete(N_ACTIONS))

    @property
    def steps_done(self) -> int:
        """Agent steps taken by all envs together (the global schedule position)."""
        return self._steps_done

    @property
    def segment_index(self) -> int:
        """Index of the segment of the current observations."""
        return self._segment

    @property
    def current_game(self) -> str:
        """Game of the current observations (for logging and oracles; not part of the observation)."""
        return self.sequence.segments[self._segment].game

    @property
    def game(self) -> str:  # type: ignore[override]  # CppSubEnvs reads it: every sub-env plays the current game
        return self.current_game

    def seek(self, step: int) -> None:
        """Put the schedule at global agent step `step` (a multiple of n_envs); the next `reset()` plays its game."""
        if not 0 <= step <= self.sequence.total_steps or step % self.n_envs:
            raise ValueError(
                f"step must be a multiple of n_envs={self.n_envs} in [0, {self.sequence.total_steps}], got {step!r}"
            )
        self._steps_done = step
        self._needs_reset = True

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed the env of every segment opened from now on (segment k: seed + k·n_envs + i) and the next reset."""
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))  # as SB3's VecEnv.seed
        self._seed, self._seed_pending = seed, True
        return [seed + i for i in range(self.n_envs)]

    def reset(self) -> np.ndarray:
        """New episodes of the game scheduled at `steps_done` (the last game once the sequence is over)."""
        finished = self._steps_done >= self.sequence.total_steps
        segment = len(self.sequence) - 1 if finished else self.sequence.segment_at(self._steps_done)
        if self._vec is None or segment != self._segment:
            obs = self._open(segment)
        else:
            if self._seed_pending and self._seed is not None:
                self._vec.seed(self._seed + segment * self.n_envs)
            obs = self._vec.reset()
        self._seed_pending = False
        self._needs_reset = finished
        self.reset_infos = [self._segment_info() for _ in range(self.n_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember one action in [0, 18) per env; refused until `reset()` after a seek or the sequence's end."""
        if self._needs_reset or self._vec is None:
            if self._steps_done >= self.sequence.total_steps:
                raise RuntimeError(f"the game sequence is over after {self.sequence.total_steps} agent steps")
            raise RuntimeError("call reset() first: seek() was called, or no reset yet")
        self._vec.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env; at the segment's last step end every episode and return the next game's first frames."""
        assert self._vec is not None, "step_async opens no env"
        obs, rewards, dones, infos = self._vec.step_wait()
        assert isinstance(obs, np.ndarray), "AtariVecEnv observations are one array"
        self._steps_done += self.n_envs
        for i, info in enumerate(infos):
            info["segment"] = self._segment
            if dones[i]:
                self.reset_infos[i] = self._segment_info()
        if self._steps_done == self.sequence.ends[self._segment]:
            for i, info in enumerate(infos):
                info["segment_end"] = True
                if not dones[i]:
                    info["terminal_observation"] = obs[i].copy()
                    info["TimeLimit.truncated"] = True
            dones = np.ones_like(dones)
            obs = self.reset()  # the next segment's game, or a new episode of the last one at the end
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Stop the open C++ env's worker threads (again: a no-op)."""
        if self._vec is not None:
            self._vec.close()
            self._vec = None

    def _open(self, segment: int) -> np.ndarray:
        """Close the open C++ env, open `segment`'s game (seeded if `seed()` was called) and reset it."""
        self.close()
        self._vec = AtariVecEnv(
            self.sequence.segments[segment].game, self.settings, self.n_envs, num_threads=self.num_threads
        )
        self._segment = segment
        if self._seed is not None:
            self._vec.seed(self._seed + segment * self.n_envs)
        return self._vec.reset()

    def _segment_info(self) -> dict[str, Any]:
        return {"game": self.current_game, "segment": self._segment}
