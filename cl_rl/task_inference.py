"""Online task inference from the observation stream: the EWC paper's flat forget-me-not process, decided per episode.

Kirkpatrick et al. (PNAS 2017, supplementary, after Milan et al. 2016 "The Forget-me-not Process") infer which game
is being played with no label: the task is the hidden state of an HMM over the frames, each known task has a
generative model of the current frame, and a uniform hold-out model that wins creates a new task.

What we keep from the paper's flat variant:
- A frame is the newest frame of the agent's observation, downscaled to ``size``×``size`` (42×42) by block averaging
  and quantised to ``levels`` (8) intensities. Each task's model is a factored per-pixel Dirichlet-multinomial with
  Bayesian counts c_k[p, v]; its predictive probability of a frame x is
      p_k(x) = Π_p (c_k[p, x_p] + α) / (n_k + L α)                                                         (1)
  with n_k the frames it has absorbed and L the number of levels. Models see every ``update_every``-th (4th) frame.
- Models compete over a window of such frames, each scored *as if* it absorbed the window's frames one after the
  other (sequential Bayesian predictive); the maximum a-posteriori model wins the window and keeps its updates, all
  others revert (free here: only the winner's counts are ever written). A uniform hold-out model (no counts) always
  competes; when it wins, its window becomes a new task's model.

Where we depart from the paper, and why (issue 18: on other games than the five it was tuned on, the continuous
variant merged games, opened new tasks on revisits and on a game's later phases, and switched spuriously):
- **A task can change only at an episode start.** The agent sees episode boundaries, and a game switch always
  starts a new episode, so a switch inside an episode is never real; deciding continuously only adds chances to be
  wrong. ``observe(..., episode_start=True)`` opens a decision window of the episode's first ``window`` model frames
  (taken every ``update_every`` agent steps from the episode's first frame); at its end the MAP model becomes the
  task for the rest of the episode. Until then the previous task is reported, so detection takes
  ``update_every · (window − 1) + 1`` agent steps. Within an episode nothing is computed: the cost is a counter.
- **A task's model is its game's episode-start screens.** Each task's counts absorb only the decision windows it won,
  i.e. the first frames of its episodes. These screens hardly vary across a game's episodes (and change little as
  the agent learns: they come before the agent has done much), while a game's later phases (day/night, levels,
  scrolling scenery) never enter the competition. So long stays add no task, and the counts stay sharp enough that a
  different game's start screens cost thousands of nats more under them than under the hold-out.
- The switch prior is flat: a switch can happen only at an episode start, where the current task has prior
  1 − ``switch_prior`` and each alternative (other tasks and the hold-out) an equal share of ``switch_prior``.
- ``count_cap`` bounds n_k by rescaling a model's counts, so the model follows slow drift of its start screens.
- Observations whose height and width are at most ``grid_max`` (MinAtar's 10×10 grids, channel-first, channels
  padded) are modelled per cell and channel (L = 2: the cell is on or off; padded channels are always off and cost
  nothing under any model), without downscaling.

The cost per agent step is, on average, one window of ``window`` gathers over (tasks × pixels) per episode: well under
1% of the ALE's ~0.5 ms per agent step (``scripts/bench_task_inference.py`` measures it per stream).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class FMNSettings:
    """Settings of the forget-me-not task inference (defaults: the EWC paper's, where it gives them)."""

    size: int = 42  # Atari frames are downscaled to size × size (the paper: 42×42)
    levels: int = 8  # quantised intensities per pixel (the paper: 8)
    update_every: int = 4  # agent steps between model frames (the paper: every 4th step)
    window: int = 8  # model frames per decision window, from each episode's start (the paper: 4)
    alpha: float = 0.5  # Dirichlet pseudo-count per level (0.5: the Krichevsky–Trofimov estimator)
    switch_prior: float = 0.5  # prior probability that an episode starts another task than the current one
    count_cap: int = 2000  # frames a model's counts represent at most (0: unbounded)
    margin: float = 1000.0  # nats by which the MAP model must lead to decide before the window is full
    holdout_prior: float = 2.0  # frames' worth of the pooled tasks' counts in the hold-out's prior (0: uniform)
    grid_max: int = 16  # observations at most grid_max × grid_max (MinAtar) are modelled per cell and channel

    def __post_init__(self) -> None:
        for name in ("size", "update_every", "window", "grid_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"task.fmn.{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.levels <= 256:
            raise ValueError(f"task.fmn.levels must lie in [2, 256], got {self.levels}")
        if self.alpha <= 0:
            raise ValueError(f"task.fmn.alpha must be > 0, got {self.alpha}")
        if not 0.0 < self.switch_prior < 1.0:
            raise ValueError(f"task.fmn.switch_prior must lie in (0, 1), got {self.switch_prior}")
        if self.holdout_prior < 0:
            raise ValueError(f"task.fmn.holdout_prior must be >= 0, got {self.holdout_prior}")
        if self.count_cap < 0:
            raise ValueError(f"task.fmn.count_cap must be >= 0 (0: unbounded), got {self.count_cap}")


def downscale_quantize(frame: np.ndarray, size: int, levels: int) -> np.ndarray:
    """``frame`` (H×W uint8) block-averaged to size×size, quantised to ``levels`` values; flat int64 array.

    When H or W is not a multiple of ``size``, rows/columns are picked at evenly spaced positions instead.
    """
    h, w = frame.shape
    if h % size == 0 and w % size == 0:
        fy, fx = h // size, w // size
        blocks = frame.reshape(size, fy, size, fx).sum(axis=(1, 3), dtype=np.int64)
        small = blocks // (fy * fx)
    else:
        rows = np.linspace(0, h - 1, size).round().astype(np.int64)
        cols = np.linspace(0, w - 1, size).round().astype(np.int64)
        small = frame[np.ix_(rows, cols)].astype(np.int64)
    return (small * levels // 256).reshape(-1)


def frame_features(observation: np.ndarray, settings: FMNSettings) -> tuple[np.ndarray, int]:
    """The model's view of an observation: (flat int64 values, number of levels).

    A grid (H, W ≤ ``grid_max``, e.g. MinAtar's C×10×10): every cell of every channel, on or off. An image stack
    (newest frame last, e.g. Atari's 4×84×84) or a single H×W frame: the newest frame, downscaled and quantised.
    """
    if observation.shape[-1] <= settings.grid_max and observation.shape[-2] <= settings.grid_max:
        return (observation.reshape(-1) > 0).astype(np.int64), 2
    frame = observation if observation.ndim == 2 else observation[-1]
    return downscale_quantize(frame, settings.size, settings.levels), settings.levels


class FlatFMN:
    """Infers a task id for every observation; a ``cl_rl.task_source.TaskSource``.

    ``observe`` returns the task decided at the end of the current episode's decision window (task 0 from the very
    first observation); see the module docstring.
    """

    def __init__(self, settings: FMNSettings | None = None) -> None:
        self.settings = settings or FMNSettings()
        self.levels = 0  # set by the first observation (8 for images, 2 for grids)
        self.counts = np.zeros((0, 0, 0), dtype=np.float32)  # c_k[p, v], one row per task
        self.totals = np.zeros(0, dtype=np.float64)  # n_k
        self.current = 0
        self.steps_in_episode = 0
        self._window_frames: list[np.ndarray] = []  # the open decision window's frames (empty: no decision open)
        self._window_loglik = np.zeros(1)  # one per task, then the hold-out
        self._deciding = False  # the open window has not decided the episode's task yet
        self._window_open = False  # the episode's first ``window`` model frames are still being collected
        self._holdout_prior = np.zeros((0, 0), np.float32)

    # --- TaskSource ---------------------------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.totals)

    def observe(self, observation: np.ndarray, true_label: str | None = None, *, episode_start: bool = False) -> int:
        """Task id of ``observation`` (newest frame last, or a grid); ignores the label.

        ``episode_start``: this observation is the first of an episode (after a reset); the very first observation
        always is one.
        """
        if episode_start or (not self.n_tasks and not self._deciding):
            if self._window_frames:  # the previous episode ended before its window was full: use what it had
                if self._deciding:
                    self._decide()
                self._absorb_window(self.current)
            self._deciding, self._window_open, self.steps_in_episode = True, True, 0
        if self._window_open and self.steps_in_episode % self.settings.update_every == 0:
            self._add_to_window(observation)
            if self._deciding and (len(self._window_frames) == self.settings.window or self._clear_winner()):
                self._decide()
            if len(self._window_frames) == self.settings.window:
                self._absorb_window(self.current)
        self.steps_in_episode += 1
        return self.current

    # --- the decision window --------------------------------------------------------------------------------------
    def _add_to_window(self, observation: np.ndarray) -> None:
        """Add the frame to the window and, until the episode's task is decided, score it under every model."""
        x, levels = frame_features(observation, self.settings)
        if not self.levels:
            self.levels = levels
            self.counts = np.zeros((0, x.size, levels), dtype=np.float32)
        if (x.size, levels) != self.counts.shape[1:]:
            raise ValueError(
                f"observation of shape {observation.shape} gives {x.size} features × {levels} levels, but the task "
                f"models have {self.counts.shape[1]} × {self.counts.shape[2]}: one task source serves one kind of game"
            )
        if self._deciding:
            self._score(x, levels)
        self._window_frames.append(x)

    def _score(self, x: np.ndarray, levels: int) -> None:
        """Add ``x``'s sequential predictive log-probability (eq. 1) under every model to the window's score."""
        alpha, j = self.settings.alpha, len(self._window_frames)
        if j == 0:
            self._window_loglik = np.zeros(self.n_tasks + 1)
            self._holdout_prior = self._pooled_prior()
        # Counts of x's values among the window's earlier frames (plus α): the same for every model.
        within = np.full(x.size, alpha, dtype=np.float32)
        for earlier in self._window_frames:
            within += earlier == x
        log_norm = x.size * np.log(np.append(self.totals, 0.0) + j + levels * alpha)
        if self.n_tasks:
            seen = self.counts[:, np.arange(x.size), x]  # (tasks, features)
            seen += within
            self._window_loglik[:-1] += np.log(seen).sum(axis=1, dtype=np.float64)
        holdout = self._holdout_prior[np.arange(x.size), x] + within
        self._window_loglik[:-1] -= log_norm[:-1]
        holdout_norm = self._holdout_prior[0].sum() + j + levels * alpha
        self._window_loglik[-1] += np.log(holdout).sum(dtype=np.float64) - x.size * np.log(holdout_norm)

    def _pooled_prior(self) -> np.ndarray:
        """The hold-out's extra Dirichlet pseudo-counts: ``holdout_prior`` frames' worth of all tasks' pooled counts."""
        if not self.n_tasks or not self.settings.holdout_prior:
            return np.zeros(self.counts.shape[1:], np.float32)
        # At most half the frames the pool holds: the hold-out must stay vaguer than the tasks it is pooled from.
        mass = min(self.settings.holdout_prior, self.totals.sum() / 2)
        return (mass * self.counts.sum(axis=0) / self.totals.sum()).astype(np.float32)

    def log_prior(self) -> np.ndarray:
        """log prior of each task and of the hold-out (last) for the decision at an episode start."""
        n_models = self.n_tasks + 1
        if self.n_tasks == 0:
            return np.zeros(1)
        rho = self.settings.switch_prior
        prior = np.full(n_models, np.log(rho / (n_models - 1)))
        prior[self.current] = np.log1p(-rho)
        return prior

    def _clear_winner(self) -> bool:
        """Whether the window's MAP model leads every other by at least ``margin`` nats already."""
        if not self.n_tasks:
            return True
        top2 = np.partition(self._window_loglik + self.log_prior(), -2)[-2:]
        return bool(top2[1] - top2[0] >= self.settings.margin)

    def _decide(self) -> None:
        """The window's MAP model becomes the episode's task; a winning hold-out becomes a new task."""
        winner = int(np.argmax(self._window_loglik + self.log_prior()))
        if winner == self.n_tasks:
            self.counts = np.concatenate([self.counts, np.zeros((1, *self.counts.shape[1:]), np.float32)])
            self.totals = np.append(self.totals, 0.0)
        self.current, self._deciding = winner, False

    def _absorb_window(self, row: int) -> None:
        """Task ``row`` keeps the window's updates (Bayesian counts); every other model reverts (writes nothing)."""
        features = np.arange(self.counts.shape[1])
        for x in self._window_frames:
            self.counts[row, features, x] += 1.0
        self.totals[row] += len(self._window_frames)
        cap = self.settings.count_cap
        if cap and self.totals[row] > cap:
            self.counts[row] *= cap / self.totals[row]
            self.totals[row] = cap
        self._window_frames, self._window_open = [], False

    # --- state --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "levels": self.levels,
            "counts": self.counts.copy(),
            "totals": self.totals.copy(),
            "current": self.current,
            "steps_in_episode": self.steps_in_episode,
            "deciding": self._deciding,
            "window_open": self._window_open,
            "window_frames": [x.copy() for x in self._window_frames],
            "window_loglik": self._window_loglik.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        settings = FMNSettings(**state["settings"])
        if (settings.size, settings.levels, settings.grid_max) != (
            self.settings.size,
            self.settings.levels,
            self.settings.grid_max,
        ):
            raise ValueError(
                f"task-inference state has {settings.size}² pixels × {settings.levels} levels but this model "
                f"{self.settings.size}² × {self.settings.levels}: resume with the settings the run was started with"
            )
        self.settings = settings
        self.levels = int(state["levels"])
        self.counts = np.asarray(state["counts"], dtype=np.float32).copy()
        self.totals = np.asarray(state["totals"], dtype=np.float64).copy()
        self.current = int(state["current"])
        self.steps_in_episode = int(state["steps_in_episode"])
        self._deciding = bool(state["deciding"])
        self._window_open = bool(state["window_open"])
        self._window_frames = [np.asarray(x, dtype=np.int64) for x in state["window_frames"]]
        self._window_loglik = np.asarray(state["window_loglik"], dtype=np.float64).copy()
