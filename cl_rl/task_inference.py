"""Online task inference from the observation stream: the EWC paper's "flat" forget-me-not process.

Kirkpatrick et al. (PNAS 2017, supplementary, after Milan et al. 2016 "The Forget-me-not Process") infer which game
is being played with no label: the task is the hidden state of an HMM over the frames, each known task has a
generative model of the current frame, and a new task is created when the stream fits none of them.

Here, as in the paper's flat variant:
- A frame is the newest frame of the agent's observation, downscaled to ``size``×``size`` (42×42) by block averaging
  and quantised to ``levels`` intensities. Each task's model is a factored per-pixel Dirichlet-multinomial with
  Bayesian counts c_k[p, v]; its predictive probability of a frame x is
      p_k(x) = Π_p (c_k[p, x_p] + α) / (n_k + L α)                                                         (1)
  with n_k the frames it has absorbed and L the number of levels.
- Models are updated every ``update_every``-th agent step and compete over windows of ``window`` such updates.
  Within a window every model is scored *as if* it absorbed the window's frames one after the other (sequential
  Bayesian predictive, so the window's frames count for each other); at the window's end the most probable model
  keeps those updates and all others revert theirs. Because the within-window counts are the same for every model,
  the "revert" costs nothing: only the winner's counts are ever written.
- One uniform **hold-out** model (no counts) always competes; when it wins, its window becomes a new task's model.
  We confirm a new task only when that model wins the following window too (our addition): the window that straddles
  a switch holds frames of two games, which no single known model explains, so without confirmation every revisit
  would leave a short-lived spurious task behind. Until confirmed, the previous task stays current.
- The HMM's switch prior decays with the time since the last switch, ρ_n = ρ₀ / (1 + d·n) for n windows
  (``switch_prior``, ``switch_prior_decay``): the current task gets prior 1 − ρ_n, each alternative (other tasks and
  the hold-out) ρ_n / (number of alternatives). The window's winner is the maximum a-posteriori task — a hard
  decision per window, which is what makes the model "flat".
- ``count_cap`` (our addition) bounds n_k by rescaling a model's counts, so that a pixel value a model has not seen for
  a long time keeps a probability of order α/cap rather than α/n: without it, small scene changes late in a long
  segment of one game would look ever more surprising.

The cost per agent step is one block average, one gather over (tasks × pixels) and one log every ``update_every``
steps: tens of microseconds, against ~500 µs for the ALE to emulate one agent step (``scripts/bench_task_inference``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class FMNSettings:
    """Settings of the flat forget-me-not task inference (defaults: the EWC paper's, where it gives them)."""

    size: int = 42  # frames are downscaled to size × size (the paper: 42×42)
    levels: int = 8  # quantised intensities per pixel
    update_every: int = 4  # agent steps between model updates (the paper: every 4th step)
    window: int = 4  # updates per competition window (the paper: 4)
    alpha: float = 0.5  # Dirichlet pseudo-count per level (0.5: the Krichevsky–Trofimov estimator)
    switch_prior: float = 0.5  # ρ₀: prior switch probability in the first window after a switch
    switch_prior_decay: float = 1.0  # d in ρ_n = ρ₀ / (1 + d·n), n = windows since the last switch
    count_cap: int = 1000  # frames a model's counts represent at most (0: unbounded)

    def __post_init__(self) -> None:
        for name in ("size", "update_every", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"task.fmn.{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.levels <= 256:
            raise ValueError(f"task.fmn.levels must lie in [2, 256], got {self.levels}")
        if self.alpha <= 0:
            raise ValueError(f"task.fmn.alpha must be > 0, got {self.alpha}")
        if not 0.0 < self.switch_prior < 1.0:
            raise ValueError(f"task.fmn.switch_prior must lie in (0, 1), got {self.switch_prior}")
        if self.switch_prior_decay < 0:
            raise ValueError(f"task.fmn.switch_prior_decay must be >= 0, got {self.switch_prior_decay}")
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


class FlatFMN:
    """Infers a task id for every observation; a ``cl_rl.task_source.TaskSource``.

    ``observe`` returns the task decided at the last window's end (task 0 from the very first observation), so a
    switch is reported at most ``update_every · window`` agent steps after the frames change, plus the windows the
    prior needs to be overcome (usually none: frames of different games differ by thousands of nats).
    """

    def __init__(self, settings: FMNSettings | None = None) -> None:
        self.settings = settings or FMNSettings()
        s = self.settings
        self.n_pixels = s.size * s.size
        # Rows: the confirmed tasks' models, then (when ``has_candidate``) the unconfirmed new task's model.
        self.counts = np.zeros((0, self.n_pixels, s.levels), dtype=np.float32)  # c_k[p, v]
        self.totals = np.zeros(0, dtype=np.float64)  # n_k
        self.has_candidate = False
        self.current = -1
        self.steps = 0
        self.windows_since_switch = 0
        self._window_frames: list[np.ndarray] = []
        self._window_loglik = np.zeros(1)  # one per model row, then the hold-out
        self._pixels = np.arange(self.n_pixels)

    # --- TaskSource ---------------------------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.totals) - self.has_candidate

    def observe(self, observation: np.ndarray, true_label: str | None = None) -> int:
        """Task id of ``observation`` (a frame stack, newest frame last, or a single H×W frame); ignores the label."""
        self.steps += 1
        if (self.steps - 1) % self.settings.update_every:
            return max(self.current, 0)
        frame = observation if observation.ndim == 2 else observation[-1]
        self._add_to_window(downscale_quantize(frame, self.settings.size, self.settings.levels))
        if len(self._window_frames) == self.settings.window:
            self._close_window()
        return max(self.current, 0)

    # --- the window's competition -------------------------------------------------------------------------------
    def _add_to_window(self, x: np.ndarray) -> None:
        """Add frame ``x``'s sequential predictive log-probability (eq. 1) under every model to the window's score."""
        s = self.settings
        j = len(self._window_frames)
        if j == 0:
            self._window_loglik = np.zeros(len(self.totals) + 1)
        # Counts of x's values among the window's earlier frames: the same for every model.
        within = np.full(self.n_pixels, s.alpha, dtype=np.float32)
        for earlier in self._window_frames:
            within += earlier == x
        log_norm = self.n_pixels * np.log(np.append(self.totals, 0.0) + j + s.levels * s.alpha)
        if len(self.totals):
            seen = self.counts[:, self._pixels, x]  # (models, pixels)
            seen += within
            self._window_loglik[:-1] += np.log(seen).sum(axis=1, dtype=np.float64)
        self._window_loglik[-1] += np.log(within).sum(dtype=np.float64)
        self._window_loglik -= log_norm
        self._window_frames.append(x)

    def log_prior(self) -> np.ndarray:
        """log prior of each model row (tasks, then the candidate if any) and of the hold-out (last)."""
        n_models = len(self.totals) + 1
        if self.current < 0:
            return np.full(n_models, -np.log(n_models))
        rho = self.settings.switch_prior / (1.0 + self.settings.switch_prior_decay * self.windows_since_switch)
        prior = np.full(n_models, np.log(rho / (n_models - 1)))
        prior[self.current] = np.log1p(-rho)
        return prior

    def _close_window(self) -> None:
        rows = len(self.totals)
        winner = int(np.argmax(self._window_loglik + self.log_prior())) if rows else rows
        candidate = rows - 1 if self.has_candidate else None
        if winner == rows:  # the hold-out won: its window becomes the (new) unconfirmed candidate
            if candidate is None:
                self.counts = np.concatenate([self.counts, np.zeros((1, *self.counts.shape[1:]), np.float32)])
                self.totals = np.append(self.totals, 0.0)
                candidate = rows
            self.counts[candidate] = 0.0
            self.totals[candidate] = 0.0
            self._absorb_window(candidate)
            self.has_candidate = self.current >= 0  # the stream's first window is task 0 straight away
            if self.has_candidate:
                self.windows_since_switch += 1
                return
            winner = candidate
        elif winner == candidate:  # the candidate won a second window: it is a new task
            self._absorb_window(winner)
            self.has_candidate = False
        else:  # a known task won: forget the candidate
            if candidate is not None:
                self.counts, self.totals = self.counts[:-1], self.totals[:-1]
                self.has_candidate = False
            self._absorb_window(winner)
        if winner == self.current:
            self.windows_since_switch += 1
        else:
            self.current, self.windows_since_switch = winner, 0

    def _absorb_window(self, row: int) -> None:
        """Model ``row`` keeps the window's updates (Bayesian counts); every other model reverts (writes nothing)."""
        for x in self._window_frames:
            self.counts[row, self._pixels, x] += 1.0
        self.totals[row] += len(self._window_frames)
        cap = self.settings.count_cap
        if cap and self.totals[row] > cap:
            self.counts[row] *= cap / self.totals[row]
            self.totals[row] = cap
        self._window_frames = []

    # --- state --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "counts": self.counts.copy(),
            "totals": self.totals.copy(),
            "has_candidate": self.has_candidate,
            "current": self.current,
            "steps": self.steps,
            "windows_since_switch": self.windows_since_switch,
            "window_frames": [x.copy() for x in self._window_frames],
            "window_loglik": self._window_loglik.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        settings = FMNSettings(**state["settings"])
        if (settings.size, settings.levels) != (self.settings.size, self.settings.levels):
            raise ValueError(
                f"task-inference state has {settings.size}² pixels × {settings.levels} levels but this model "
                f"{self.settings.size}² × {self.settings.levels}: resume with the settings the run was started with"
            )
        self.settings = settings
        self.counts = np.asarray(state["counts"], dtype=np.float32).copy()
        self.totals = np.asarray(state["totals"], dtype=np.float64).copy()
        self.has_candidate = bool(state["has_candidate"])
        self.current = int(state["current"])
        self.steps = int(state["steps"])
        self.windows_since_switch = int(state["windows_since_switch"])
        self._window_frames = [np.asarray(x, dtype=np.int64) for x in state["window_frames"]]
        self._window_loglik = np.asarray(state["window_loglik"], dtype=np.float64).copy()
