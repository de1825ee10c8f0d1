"""Task inference over a real ALE stream played by a random policy: the measurement behind tests and benchmark.

The agent is irrelevant to how well frames identify games, so a random policy is enough and fast; the stream is the
same ``SequenceEnv`` that training uses (a game switch ends the episode and the next reset starts the next game).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

from cl_rl.task_inference import FlatFMN, FMNSettings
from cl_rl.task_metrics import SwitchDetector, TaskAgreement
from envs.atari import AtariSettings, make_atari_env
from envs.sequence import GameSequence, SequenceEnv


@dataclass
class StreamResult:
    ari: float
    switches: int
    detected: int
    delays: list[int]
    spurious: int
    n_tasks: int
    us_per_step: float  # task inference only
    env_us_per_step: float  # ALE emulation and preprocessing, for comparison
    task_of_segment: list[int] = field(default_factory=list)  # inferred task at each segment's last step

    @property
    def delay_p50(self) -> float:
        return float(np.median(self.delays)) if self.delays else float("nan")

    @property
    def delay_max(self) -> float:
        return float(max(self.delays)) if self.delays else float("nan")

    def line(self) -> str:
        return (
            f"ARI={self.ari:.4f} switches={self.switches} detected={self.detected} delay_p50={self.delay_p50:.0f} "
            f"delay_max={self.delay_max:.0f} spurious={self.spurious} us_per_step={self.us_per_step:.1f}"
        )


def run_inference_stream(
    sequence: GameSequence,
    fmn: FMNSettings | None = None,
    env_settings: AtariSettings | None = None,
    seed: int = 0,
    progress: bool = False,
) -> StreamResult:
    """Play ``sequence`` with uniformly random actions and infer the task of every observation."""
    env = SequenceEnv(sequence, functools.partial(make_atari_env, settings=env_settings or AtariSettings()))
    env.action_space.seed(seed)
    inference = FlatFMN(fmn)
    agreement, detector = TaskAgreement(), SwitchDetector()
    task_of_segment = []
    infer_s = env_s = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sequence.total_steps, unit="step", mininterval=1.0)
    try:
        t = time.perf_counter()
        obs, info = env.reset(seed=seed)
        env_s += time.perf_counter() - t
        for _ in range(sequence.total_steps):
            t = time.perf_counter()
            task = inference.observe(obs)
            infer_s += time.perf_counter() - t
            agreement.update(info["game"], task)
            detector.update(info["game"], task)
            t = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            if info.get("segment_end"):
                task_of_segment.append(task)
            if (terminated or truncated) and env.steps_done < sequence.total_steps:
                obs, info = env.reset()
            env_s += time.perf_counter() - t
            if bar is not None:
                bar.update()
    finally:
        env.close()
        if bar is not None:
            bar.close()
    steps = sequence.total_steps
    return StreamResult(
        ari=agreement.ari(),
        switches=detector.switches,
        detected=detector.detected,
        delays=list(detector.delays),
        spurious=detector.spurious,
        n_tasks=inference.n_tasks,
        us_per_step=1e6 * infer_s / steps,
        env_us_per_step=1e6 * env_s / steps,
        task_of_segment=task_of_segment,
    )
