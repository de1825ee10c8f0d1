"""Scores of the agent on every game of its sequence, taken during training without disturbing it.

As in the EWC paper (Kirkpatrick et al. 2017, Fig. 4), every game of the sequence (seen or not yet) is played with
training off: ``episodes`` full episodes, ε-greedy (ε = 0.05), with the training preprocessing and episode cap. The
task id of each step comes from a *copy* of the agent's task source fed with the evaluation's own observations
(``configured``: an inferred task source must also recognise the game), or from the true game (``oracle``).

A task id the network does not have yet (a game never trained, or one the task source takes for a new one) is played
the way the agent would meet it: with fresh gains (1) and biases (0) on the shared weights, i.e. the parameters a new
task starts from (``cl_rl.task_modulation``), in a copy of the network. For a game not trained yet that is the
zero-shot score of forward transfer; for a game already trained it is a recognition failure, not forgetting, so it is
said on the evaluation line and logged (``eval/<Game>/task_known``, ``eval/unrecognised``).

Training state is left as it was: the evaluation has its own envs and ε generator, copies the task source, restores
the active task, and saves and restores the global ``random``, NumPy and torch generators; ε timers and replay
buffers are never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
from tqdm import tqdm

from agents.evaluation.play import GameEvaluation, play_game
from agents.run.config import EvalConfig
from agents.run.rng import capture_rng_state, restore_rng_state
from agents.sb3.continual_dqn import AtStepBoundary, ContinualDQN
from cl_rl.retention import total_clipped
from cl_rl.task_source import OracleTaskSource, TaskSource
from envs.atari import AtariSettings
from envs.scores import has_human_score
from envs.sequence import GameSequence

TaskMode = Literal["configured", "oracle"]


def evaluate_games(
    model: ContinualDQN,
    games: Sequence[str],
    settings: AtariSettings,
    episodes: int = 3,
    epsilon: float = 0.05,
    task_source: TaskMode = "configured",
    seed: int = 0,
    on_game: Callable[[GameEvaluation], None] | None = None,
) -> list[GameEvaluation]:
    """Play ``episodes`` episodes of each game ε-greedily; game ``k`` of ``games`` uses env and ε seed ``seed + k``.

    ``on_game`` is called with each game's result as soon as it is known (for a progress bar).
    """
    if task_source not in ("configured", "oracle"):
        raise ValueError(f"task_source must be 'configured' or 'oracle', got {task_source!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    with preserved_global_rng():
        results = []
        for k, game in enumerate(games):
            source = _task_source_copy(model, task_source, games)
            results.append(play_game(model, game, source, settings, episodes, epsilon, seed + k))
            if on_game is not None:
                on_game(results[-1])
        return results


@contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global generators on exit."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def _task_source_copy(model: ContinualDQN, mode: TaskMode, games: Sequence[str]) -> TaskSource:
    """A task source the evaluation may feed freely: the agent's own (copied), or an oracle."""
    if mode == "configured" or isinstance(model.task_source, OracleTaskSource):
        source = copy.deepcopy(model.task_source)
        # The evaluation's episodes do not continue the training's: an undecided window of the training's episode
        # must not decide in the copy from a few frames of another game (it opened tasks the agent does not have).
        source.cut_episode()
        return source
    oracle = OracleTaskSource()  # the agent infers its tasks: number games in order of first appearance, as it would
    oracle.load_state_dict({"ids": {game: k for k, game in enumerate(dict.fromkeys(games))}})
    return oracle


def evaluation_line(step: int, results: Sequence[GameEvaluation], trained: Collection[str] = ()) -> str:
    """``[step 200] evaluation: Pong -21.0 (task 0), Breakout 1.0 (task 1); mean HNS 0.01``: mean raw scores.

    A game played with a task the agent does not have says so: ``(task 2: not recognised)`` if it was ``trained``
    already (a recognition failure), ``(task 2: new)`` if not (zero-shot); a task that played several games says
    which others (``(task 0, also Pong)``)."""
    games_of: dict[int, list[str]] = {}
    for r in results:
        games_of.setdefault(r.task, []).append(r.game)
    parts = []
    for r in results:
        note = ""
        if r.task >= r.known_tasks:
            note = ": not recognised" if r.game in trained else ": new"
        elif len(games_of[r.task]) > 1:
            note = ", also " + " and ".join(g for g in games_of[r.task] if g != r.game)
        parts.append(f"{r.game} {r.score:.1f} (task {r.task}{note})")
    hns = [r.hns for r in results if has_human_score(r.game)]
    return f"[step {step}] evaluation: {', '.join(parts)}" + (f"; mean HNS {np.mean(hns):.2f}" if hns else "")


def unrecognised(results: Sequence[GameEvaluation], trained: Collection[str]) -> list[str]:
    """The ``trained`` games that an evaluation played with a task the agent does not have (not recognised)."""
    return [r.game for r in results if r.game in trained and r.task >= r.known_tasks]


class PeriodicEvaluationCallback(AtStepBoundary):
    """Evaluates every game at each segment end and every ``every`` agent steps (0: segment ends only).

    Logs ``eval/<Game>/score`` (raw mean score), ``eval/<Game>/hns``, ``eval/<Game>/task`` (the task id that played
    it), ``eval/<Game>/task_known`` (1 if the agent had that task, 0 if it was played with a new task's parameters),
    ``eval/unrecognised`` (games trained before this evaluation but played with a task the agent does not have),
    ``eval/mean_hns`` and ``eval/total_clipped_hns`` (Σ clip(HNS, 0, 1): 0 random, number of games at most), and
    prints one line per evaluation (``evaluation_line``). MinAtar games have no human score: no HNS is logged for them.
    ``trained_from``: the agent step at which each game's training starts (the games trained by an evaluation are
    those started before it).
    """

    model: ContinualDQN

    def __init__(
        self,
        games: Sequence[str],
        settings: AtariSettings,
        segment_ends: Sequence[int],
        every: int = 0,
        episodes: int = 3,
        epsilon: float = 0.05,
        task_source: TaskMode = "configured",
        seed: int = 0,
        trained_from: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(segment_ends, every)
        self.games, self.settings = list(games), settings
        self.trained_from = dict(trained_from or {})
        self.episodes, self.epsilon, self.task_source, self.seed = episodes, epsilon, task_source, seed
        self.history: list[tuple[int, list[GameEvaluation]]] = []

    def act(self) -> None:
        # Evaluated between steps S and S + 1, where the checkpoint of step S is taken (``AtStepBoundary``): after
        # step S's updates, so the scores logged at S are those of the weights the checkpoint of S holds (a
        # checkpoint scored again gives the logged scores), and a run resumed from S does not evaluate S again.
        self.evaluate()

    def evaluate(self) -> list[GameEvaluation]:
        """Score every game now, log it under ``eval/`` at the current step, and keep it in ``history``."""
        results = evaluate_games(
            self.model, self.games, self.settings, self.episodes, self.epsilon, self.task_source, self.seed
        )
        trained = [g for g, start in self.trained_from.items() if start < self.num_timesteps]
        for r in results:
            self.logger.record(f"eval/{r.game}/score", r.score)
            if has_human_score(r.game):
                self.logger.record(f"eval/{r.game}/hns", r.hns)
            self.logger.record(f"eval/{r.game}/task", r.task)
            self.logger.record(f"eval/{r.game}/task_known", float(r.task < r.known_tasks))
        self.logger.record("eval/unrecognised", len(unrecognised(results, trained)))
        hns = np.array([r.hns for r in results if has_human_score(r.game)])
        if hns.size:
            self.logger.record("eval/mean_hns", float(hns.mean()))
            self.logger.record("eval/total_clipped_hns", total_clipped(hns))
        self.logger.dump(self.num_timesteps)
        self.history.append((self.num_timesteps, results))
        tqdm.write(evaluation_line(self.num_timesteps, results, trained))  # above the progress bar, if there is one
        return results

    @classmethod
    def from_config(
        cls, config: EvalConfig, sequence: GameSequence, settings: AtariSettings
    ) -> PeriodicEvaluationCallback:
        """The callback a run's ``eval`` section asks for, over every game of ``sequence``."""
        return cls(
            sequence.games,
            settings,
            sequence.ends,
            config.every,
            config.episodes,
            config.epsilon,
            config.task_source,
            config.seed,
            trained_from=first_starts(sequence),
        )


def first_starts(sequence: GameSequence) -> dict[str, int]:
    """The agent step at which each game of ``sequence`` is first trained."""
    starts: dict[str, int] = {}
    for segment, end in zip(sequence.segments, sequence.ends, strict=True):
        starts.setdefault(segment.game, end - segment.steps)
    return starts
