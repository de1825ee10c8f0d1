"""SB3 callbacks that log a continual run per game and checkpoint it at segment ends."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from agents.run.checkpoints import checkpoint_path, list_checkpoints, replay_path, write_atomically
from agents.sb3.continual_dqn import AtStepBoundary, StopAtBoundary
from agents.sb3.replay import buffer_nbytes
from cl_rl.task_metrics import SwitchDetector, TaskAgreement
from envs.scores import has_human_score, human_normalized_score
from envs.sequence import GameSequence

if TYPE_CHECKING:
    from agents.sb3.continual_dqn import ContinualDQN


class ContinualLoggingCallback(BaseCallback):
    """TensorBoard scalars of a game stream, namespaced like SB3's.

    ``game/<Game>/score`` (raw, unclipped episode score), ``game/<Game>/hns`` (human-normalised score; not for MinAtar
    games, which have no human score) and ``game/<Game>/ep_len`` at each episode end; ``sequence/segment``,
    ``task/<k>/epsilon`` and ``time/frames_per_second``. SB3 writes ``train/loss``, ``time/fps`` and ``rollout/*``
    itself.
    """

    model: ContinualDQN  # the agent whose continual state this callback reads

    def __init__(self, frame_skip: int = 4) -> None:
        super().__init__()
        self.frame_skip = frame_skip
        self.last_scores: dict[str, list[float]] = {}
        self._t0 = 0.0
        self._steps0 = 0

    def _on_training_start(self) -> None:
        self._t0, self._steps0 = time.perf_counter(), self.num_timesteps

    def _on_step(self) -> bool:
        # Episodes of every env (n_envs > 1: several may end in one step; the logger keeps the last of each tag).
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is None:
                continue
            game, score = info["game"], float(episode["r"])
            self.logger.record(f"game/{game}/score", score)
            if has_human_score(game):
                self.logger.record(f"game/{game}/hns", human_normalized_score(game, score))
            self.logger.record(f"game/{game}/ep_len", int(episode["l"]))
            self.last_scores.setdefault(game, []).append(score)
            self._record_rates()
        if self.locals["infos"][0].get("segment_end"):  # every env ends the segment at the same step
            self._record_rates()
            self.logger.dump(self.num_timesteps)
        return True

    def _record_rates(self) -> None:
        self.logger.record("sequence/segment", self.locals["infos"][0]["segment"])
        for task, steps in self.model.epsilon.steps.items():
            self.logger.record(f"task/{task}/epsilon", self.model.epsilon.value(task))
            self.logger.record(f"task/{task}/steps", steps)
        elapsed = time.perf_counter() - self._t0
        if elapsed > 0:
            self.logger.record(
                "time/frames_per_second", (self.num_timesteps - self._steps0) * self.frame_skip / elapsed
            )


class TaskInferenceMonitor(BaseCallback):
    """How well the inferred task ids match the true games, and what the per-task replay buffers hold.

    The logger knows the true game (``info['game']``) although the agent does not, so it scores the inference live:
    ``task/ari`` (adjusted Rand index of inferred ids against games, over all steps of the run: the counts are kept
    in the agent, ``ContinualDQN.task_inference_record``, and so saved with its checkpoints),
    ``task/switch_delay`` (agent steps from a true switch to the inferred id's change, at each detection),
    ``task/true_switches``, ``task/detected_switches``, ``task/spurious_switches``; and ``replay/task_<k>/size``,
    ``replay/bytes_allocated`` (all buffers), ``replay/bytes_filled`` and ``replay/freed_buffers``.
    """

    model: ContinualDQN  # the agent whose continual state this callback reads

    def __init__(self, every: int = 500) -> None:
        super().__init__()
        self.every = every
        self.agreement = TaskAgreement()
        self.detector = SwitchDetector()

    def _on_training_start(self) -> None:
        if self.model.task_inference_record is None:  # a new run; a resumed one goes on with its saved counts
            self.model.task_inference_record = (self.agreement, self.detector)
        self.agreement, self.detector = self.model.task_inference_record

    def _on_step(self) -> bool:
        done = bool(self.locals["dones"][0])
        # The task was inferred from the newest observation: after an episode end, that is the next episode's first.
        info = self.training_env.reset_infos[0] if done else self.locals["infos"][0]  # type: ignore[attr-defined]
        game = info.get("game")
        if game is None:
            return True
        task = self.model.current_task
        self.agreement.update(game, task)
        delay = self.detector.update(game, task)
        if delay is not None:
            self.logger.record("task/switch_delay", delay)
        crossed = self.num_timesteps // self.every > (self.num_timesteps - self.training_env.num_envs) // self.every
        if crossed or self.locals["infos"][0].get("segment_end"):  # n_envs steps at a time: a multiple was passed
            self.record()
        return True

    def record(self) -> None:
        self.logger.record("task/ari", self.agreement.ari())
        self.logger.record("task/true_switches", self.detector.switches)
        self.logger.record("task/detected_switches", self.detector.detected)
        self.logger.record("task/spurious_switches", self.detector.spurious)
        replay = self.model.replay_buffer
        filled = 0.0
        for task, buffer in enumerate(replay.buffers):
            size = 0 if buffer is None else buffer.size()
            self.logger.record(f"replay/task_{task}/size", size)
            if buffer is not None:
                filled += buffer_nbytes(buffer) * size / buffer.buffer_size
        self.logger.record("replay/bytes_allocated", replay.nbytes)
        self.logger.record("replay/bytes_filled", filled)
        self.logger.record("replay/freed_buffers", replay.freed)


class SegmentCheckpointCallback(AtStepBoundary):
    """Saves the model at every segment end and every ``every`` agent steps (0: segment ends only).

    A checkpoint at step S is taken between steps S and S + 1 (``ContinualDQN.step_boundary_hooks``): step S's
    transition is stored and the updates due at S are done, so a run resumed from it updates as often as one never
    stopped. A write that fails (disk full) leaves the previous checkpoint as it was, warns, and training goes on.
    ``keep`` > 0 keeps only the newest ``keep`` periodic checkpoints; segment-end checkpoints are always kept because
    evaluation of retention reads them.
    """

    model: ContinualDQN  # the agent whose continual state this callback reads

    def __init__(
        self, directory: Path, segment_ends: list[int], every: int = 0, keep: int = 0, save_replay: bool = False
    ) -> None:
        super().__init__(segment_ends, every)
        self.directory = Path(directory)
        self.keep, self.save_replay = keep, save_replay
        self.last_saved: Path | None = None
        self.failed: list[str] = []  # a line for each checkpoint that could not be written

    def act(self) -> None:
        self.save()

    def save(self) -> Path | None:
        """Write the checkpoint of this step; None (and a warning) if the write failed."""
        path = checkpoint_path(self.directory, self.model.num_timesteps)
        try:
            write_atomically(path, self.model.save)
            if self.save_replay:
                write_atomically(replay_path(path), self.model.save_replay_buffer)
        except OSError as err:
            path.unlink(missing_ok=True)  # a model without its replay buffers would resume another run
            previous = f"the previous checkpoint {self.last_saved} is intact" if self.last_saved else "none was written"
            self.failed.append(f"step {self.model.num_timesteps}: {err}")
            warnings.warn(f"checkpoint {path} could not be written ({err}); {previous}", stacklevel=2)
            return None
        self._prune()
        self.last_saved = path
        return path

    def _prune(self) -> None:
        if not self.keep:
            return
        periodic = [p for step, p in list_checkpoints(self.directory) if step not in self.segment_ends]
        for path in periodic[: -self.keep]:
            path.unlink(missing_ok=True)
            replay_path(path).unlink(missing_ok=True)


class StopRequest:
    """Set by a signal handler (Ctrl-C, SIGTERM); read by ``GracefulStopCallback`` between two agent steps."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


class GracefulStopCallback(BaseCallback):
    """On a stop request: finish the current step, write a checkpoint (unless this step already has one), and end
    ``learn`` there, before the next step begins (``StopAtBoundary``)."""

    model: ContinualDQN  # the agent whose step boundaries this callback watches

    def __init__(self, request: StopRequest, checkpoints: SegmentCheckpointCallback) -> None:
        super().__init__()
        self.request, self.checkpoints = request, checkpoints
        self.stopped_at: int | None = None

    def _on_training_start(self) -> None:
        self.model.step_boundary_hooks.append(self.at_boundary)

    def at_boundary(self) -> None:
        """Between two steps: on a stop request, checkpoint this whole step and end ``learn``."""
        if not self.request.requested:
            return
        self.stopped_at = self.model.num_timesteps
        if self.checkpoints.last_saved != checkpoint_path(self.checkpoints.directory, self.stopped_at):
            self.checkpoints.save()
        raise StopAtBoundary

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.model.step_boundary_hooks.remove(self.at_boundary)


class LiveOutputCallback(BaseCallback):
    """What a person watching the run sees: a bar over the whole sequence and a line at each switch.

    The bar (``bar=True``) counts agent steps of the whole sequence from the step the run starts at (a resumed run
    continues where it stopped), and shows the current game, segment, task and the mean score of that game's last
    ``recent`` episodes. Whether or not there is a bar, a line says where the run starts (and which checkpoint it
    resumed, ``resumed_from``), and a line is printed whenever the game or the task that plays it changes, e.g.
    ``[step 200] switch: game Breakout (segment 2/3), task 1 (new)``; with inferred tasks the game changes first and
    the task follows a few steps later, each with its own line. Lines go through ``tqdm.write``, above the bar.
    """

    model: ContinualDQN  # the agent whose continual state this callback reads

    def __init__(
        self, sequence: GameSequence, bar: bool = True, recent: int = 5, resumed_from: Path | None = None
    ) -> None:
        super().__init__()
        self.sequence, self.show_bar, self.recent, self.resumed_from = sequence, bar, recent, resumed_from
        self.bar: tqdm | None = None
        self.scores: dict[str, list[float]] = {}
        self.playing: tuple[str, int] | None = None  # (game, task) of the latest step
        self.tasks_seen: set[int] = set()

    def _on_training_start(self) -> None:
        # The task of the first step is known now: learn() has reset the env and asked the task source.
        step, task = self.num_timesteps, self.model.current_task
        segment = self.sequence.segment_at(step)
        game = self.sequence.segments[segment].game
        self.tasks_seen = set(range(self.model.n_tasks_created))
        if self.show_bar:
            self.bar = tqdm(total=self.sequence.total_steps, initial=step, unit="step", dynamic_ncols=True)
        if self.resumed_from is not None:
            tqdm.write(f"resumed {self.resumed_from} at agent step {step} of {self.sequence.total_steps}")
        self._announce(step, game, task, segment)

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        game, task, segment = info.get("game"), self.model.current_task, info.get("segment", 0)
        ended = [i for i in self.locals["infos"] if i.get("episode") is not None and i.get("game") is not None]
        for each in ended:  # every env's episodes
            self.scores.setdefault(each["game"], []).append(float(each["episode"]["r"]))
        episode = ended[-1]["episode"] if ended else None
        if game is not None and (game, task) != self.playing:
            self._announce(self.num_timesteps - 1, game, task, segment)  # 0-based index of the step just played
        if self.bar is not None:
            if episode is not None:
                self._set_postfix(game, task, segment)
            self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def _announce(self, step: int, game: str, task: int, segment: int) -> None:
        kind = "start" if self.playing is None else "switch"
        new = " (new)" if task not in self.tasks_seen else ""
        self.tasks_seen.add(task)
        self.playing = (game, task)
        tqdm.write(f"[step {step}] {kind}: game {game} (segment {segment + 1}/{len(self.sequence)}), task {task}{new}")
        if self.bar is not None:
            self._set_postfix(game, task, segment)

    def _set_postfix(self, game: str | None, task: int, segment: int) -> None:
        assert self.bar is not None, "postfix without a bar"
        tail = self.scores.get(game or "", [])[-self.recent :]
        score = f"{sum(tail) / len(tail):.1f}" if tail else "–"
        self.bar.set_postfix_str(f"{game} seg {segment + 1}/{len(self.sequence)} task {task} score {score}")

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
