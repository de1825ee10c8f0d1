"""Online task inference from the observation stream: the EWC paper's flat forget-me-not process, decided per episode.

Kirkpatrick et al. (PNAS 2017, supplementary, after Milan et al. 2016 "The Forget-me-not Process") infer which game
is being played with no label: the task is the hidden state of an HMM over the frames, each known task has a
generative model of the current frame, and a uniform hold-out model that wins creates a new task.

What we keep from the paper's flat variant:
- A frame is the newest frame of the agent's observation, downscaled to ``size``×``size`` (42×42) by block averaging
  and quantised to ``levels`` (8) intensities. Each task's model is a factored per-pixel Dirichlet-multinomial with
  Bayesian counts c_k[p, v]; its predictive probability of a frame x is
      p_k(x) = Π_p (c_k[p, x_p] + α) / (n_k + L α)                                                         (1)
  with n_k the frames it has absorbed and L the number of levels. Models see every ``update_every``-th (4th) frame
  of an image (every frame of a grid, below).
- Models compete over a window of such frames; the maximum a-posteriori model wins the window and absorbs its frames
  (only the winner's counts are ever written). A hold-out model always competes; when it wins, its window becomes a
  new task's model.

Where we depart from the paper, and why (on other games than the five it was tuned on, the continuous
variant merged games, opened new tasks on revisits and on a game's later phases, and switched spuriously):
- **A task can change only at an episode start.** The agent sees episode boundaries, and a game switch always
  starts a new episode, so a switch inside an episode is never real; deciding continuously only adds chances to be
  wrong. ``observe(..., episode_start=True)`` opens a decision window of the episode's first ``window`` model frames
  (taken every ``update_every`` agent steps from the episode's first frame); at its end the MAP model becomes the
  task for the rest of the episode. Until then the previous task is reported, so detection takes
  ``update_every · (window − 1) + 1`` agent steps (29 on Atari, 8 on MinAtar). Within an episode, once the window
  is full, nothing is computed: the cost is a counter.
- **A task's model is its game's episode-start screens.** Each task's counts absorb only the decision windows it won,
  i.e. the first frames of its episodes. These screens hardly vary across a game's episodes (and change little as
  the agent learns: they come before the agent has done much), while a game's later phases (day/night, levels,
  scrolling scenery) never enter the competition. So long stays add no task, and the counts stay sharp enough that a
  different game's start screens cost thousands of nats more under them than under the hold-out.
- **Scores are per-feature mixtures** (eq. 2). With the paper's product of eq. (1) over features, a vague model
  wins: a model that has absorbed one window (small n_k) pays little anywhere, and the uniform hold-out pays for
  learning every background feature (MinAtar: ~1000 off cells), more than a known model of another game pays for the
  few cells that differ, so games merged. Here each feature's window likelihood is
      L_k(p) = (1 − ε) Π_j p_k(x_jp) + ε KT_p,                                                               (2)
  with p_k eq. (1) with a small α (sharp from one frame) and KT_p the window's own sequential Krichevsky–Trofimov
  predictive of the feature (what a model that knew nothing would pay). A task uses ε_k = ``task_novelty`` (tiny):
  each feature where a window looks unlike the task costs ~log(1/ε_k). The hold-out's model is, per feature, the mean
  over tasks of Π_j p_k(x_jp) (a new game may look like any known game in each feature, e.g. a black background),
  and on images of a uniform model too (it may look like no known game: without it, a single young task's pool is
  that task, and its own game's next episode starts opened new tasks), with
  ε_h chosen so that ``novel_features`` novel features pay for its (1 − ε_h) on every other feature:
      F log((1 − ε_k)/(1 − ε_h)) = N log(ε_h/ε_k).                                                            (3)
  So a window opens a new task when it shows about N features that no known task explains (plus what the hold-out
  loses where the tasks disagree), whatever the number of features F.
- The switch prior is flat: a switch can happen only at an episode start, where the current task has prior
  1 − ``switch_prior`` and each alternative (other tasks and the hold-out) an equal share of ``switch_prior``.
- A window may decide before it is full once the MAP model leads by ``margin`` nats, but only from its
  ``early_after``-th frame on: an episode's very first frame can be far from the game's usual start screen (a Pong
  revisit's first frame once cost its own task 6,000 nats more than the hold-out, and opened a spurious task).
- ``count_cap`` bounds n_k by rescaling a model's counts, so the model follows slow drift of its start screens.
- Observations whose height and width are at most ``grid_max`` (MinAtar's 10×10 grids, channel-first, channels
  padded) are modelled per cell and channel (L = 2: the cell is on or off; padded channels are always off and cost
  nothing under any model), without downscaling. For grids (MinAtar):
  - **A model frame every agent step** (``grid_update_every`` = 1; images keep every 4th): a grid costs little to
    score, and the window then closes ``window`` (8) agent steps into an episode, so detection takes ≤ 8 steps
    (it took 29, and its delay alone held the ARI at 0.98). Windows on grids decide at their end only: their leads
    are 100–200 nats, never the 1000-nat ``margin``, so early checks only cost time.
  - **The sequential predictive with a cell back-off** replaces eq. (1). A task's model learns from each frame of
    the window as it comes (the paper's models update online), so the window's probability under task k is the
    Dirichlet-multinomial marginal
        P_k(window) = Π_p Π_j (c_k[p, x_jp] + a_k[p, x_jp] + h_<j[p, x_jp]) / (n_k + Σ_v a_k[p, v] + j),       (1')
    h_<j the window's counts before frame j, with prior pseudo-counts a_k[p, on] = α + β m_k(q) and
    a_k[p, off] = α + β (1 − m_k(q)), m_k(q) the task's mean on-rate of p's cell q over the channels, β =
    ``cell_share``. Why: MinAtar Freeway draws its 8 cars' speeds and directions at random each episode, and a car's
    speed picks its trail's channel, so each episode's start shows trails in channels and cells its task never saw
    (30–60 features per window). Under eq. (1), a slow car's trail that stays in one cell for 6 of 8 frames was paid
    for 6 times, each at the price of a feature never seen, and every Freeway episode opened a new task (12 tasks for
    5 games). Under eq. (1') a novel feature is paid for about once, and a channel at a cell where the task has seen
    another channel costs less. Images keep eq. (1) (their frames are 4 steps apart; measured unchanged).
  - A grid window is scored and absorbed by two compiled kernels (numba; ``_binary_window_scores``,
    ``_absorb_binary``) from each feature's on-count in the window: features that no task and not the window ever
    showed on (most cells) are scored once per cell, weighted by their number, and once for all the cells no task has
    seen on. With numpy a window took ~60 calls (~0.5 ms on a loaded machine); the kernels compute the same sums
    (scores agree to ~1e-14, every decision of the benchmark's streams is unchanged: ``--check-tasks``).
  - **Row counts.** A grid frame also has, per row, the number of its cells on over every channel and column, in
    ``COUNT_LEVELS`` buckets (0, 1, 2, 3–4, 5–8, 9–16, 17–32, 33+), as one binary feature per row and bucket
    (``row_counts``); they belong to no cell (their back-off is 0). Why: the cells say *where* things are, and
    where they are changes with the episode's draw (Freeway's car speeds) and with what the agent has learnt (a
    trained Freeway chicken climbs rows in its first steps that a random one rarely reaches). With cells alone, a
    learning agent's own game showed more novel features than ``novel_features`` allows (a Freeway task split in 6 of
    the table's 33 runs; a learning agent's recorded stream opened a fourth task for three games), while a young
    Freeway task (two episodes) explained Asterix's nearly empty start screens better than the hold-out (by ~60 nats),
    so the threshold could not move either way. A row's count is what the game is rather than where its objects are:
    a Freeway row always holds one car and its trail, an Asterix row one thing or nothing, a Breakout row of bricks
    ten; so the counts separate games (Asterix from a young Freeway by ~10 novel features) and hardly vary within
    one (about one novel feature per window once a task has seen two episodes, none after eight). Per-channel
    counts were tried and rejected: Freeway's trail channels hold a random number of its eight cars each episode,
    so they split Freeway. Known limit: the agent's own object adds one to the count of the row it is in, so a
    young task (Freeway's first episodes) can still meet novel row counts when the agent climbs (docs/
    TASK_INFERENCE.md).

Cost: an image stream costs ~11 µs per Atari agent step (under 1% of the ALE's). A grid stream costs a few µs of CPU
per MinAtar agent step, most in streams with short episodes (Breakout's ~9-step episodes each end a window); the
benchmark prints it against the emulator's own CPU time per step (``scripts/bench_task_inference.py --only minatar``;
figures in docs/TASK_INFERENCE.md). The kernels compile once per process at the first grid observation (not later,
inside a decision window), in seconds, or load from numba's cache (``cl_rl/__pycache__``); image streams never
compile them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit


@dataclass
class FMNSettings:
    """Settings of the forget-me-not task inference (defaults: the EWC paper's, where it gives them)."""

    size: int = 42  # Atari frames are downscaled to size × size (the paper: 42×42)
    levels: int = 8  # quantised intensities per pixel (the paper: 8)
    update_every: int = 4  # agent steps between model frames of images (the paper: every 4th step)
    grid_update_every: int = 1  # agent steps between model frames of grids (cheap to score: every step)
    window: int = 8  # model frames per decision window, from each episode's start (the paper: 4)
    alpha: float = 0.01  # Dirichlet pseudo-count per level of a task's counts (small: models are sharp from one frame)
    switch_prior: float = 0.5  # prior probability that an episode starts another task than the current one
    count_cap: int = 2000  # frames a model's counts represent at most (0: unbounded)
    margin: float = 1000.0  # nats by which the MAP model must lead to decide before the window is full
    early_after: int = 3  # model frames a window needs before it may decide early (an episode's first frame varies)
    novel_features: float = 8.0  # features a window must show beyond every known task's for a new task (eq. 3)
    task_novelty: float = 1e-8  # ε_k: prior probability that a task's feature shows values it never showed (eq. 2)
    cell_share: float = 1.0  # grids: pseudo-count of a cell's back-off to its mean over channels (eq. 1')
    grid_max: int = 16  # observations at most grid_max × grid_max (MinAtar) are modelled per cell and channel

    def __post_init__(self) -> None:
        for name in ("size", "update_every", "grid_update_every", "window", "grid_max", "early_after"):
            if getattr(self, name) < 1:
                raise ValueError(f"task.fmn.{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.levels <= 256:
            raise ValueError(f"task.fmn.levels must lie in [2, 256], got {self.levels}")
        if self.alpha <= 0:
            raise ValueError(f"task.fmn.alpha must be > 0, got {self.alpha}")
        if not 0.0 < self.switch_prior < 1.0:
            raise ValueError(f"task.fmn.switch_prior must lie in (0, 1), got {self.switch_prior}")
        if self.novel_features <= 0:
            raise ValueError(f"task.fmn.novel_features must be > 0, got {self.novel_features}")
        if not 0.0 < self.task_novelty < 1e-3:
            raise ValueError(f"task.fmn.task_novelty must lie in (0, 0.001), got {self.task_novelty}")
        if self.cell_share < 0:
            raise ValueError(f"task.fmn.cell_share must be >= 0, got {self.cell_share}")
        if self.count_cap < 0:
            raise ValueError(f"task.fmn.count_cap must be >= 0 (0: unbounded), got {self.count_cap}")


def holdout_novelty(n_features: int, novel_features: float, task_novelty: float) -> float:
    """ε_h of eq. (3): the hold-out's novelty weight at which ``novel_features`` novel features pay for the rest.

    Solves  F · log((1 − ε_k) / (1 − ε_h)) = N · log(ε_h / ε_k)  for ε_h ∈ (ε_k, 1) by bisection (the left side
    grows and the right side's growth slows with ε_h, so the difference has one root).
    """
    lo, hi = task_novelty, 1.0 - 1e-12
    for _ in range(100):
        mid = (lo + hi) / 2
        gap = novel_features * math.log(mid / task_novelty) - n_features * math.log((1 - task_novelty) / (1 - mid))
        lo, hi = (mid, hi) if gap > 0 else (lo, mid)
    return lo


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


def is_grid(observation: np.ndarray, settings: FMNSettings) -> bool:
    """Whether ``observation`` is a grid (H, W ≤ ``grid_max``, e.g. MinAtar's C×10×10) rather than an image."""
    return observation.shape[-1] <= settings.grid_max and observation.shape[-2] <= settings.grid_max


COUNT_LEVELS = 8  # a row's count of on cells, in buckets 0, 1, 2, 3–4, 5–8, 9–16, 17–32, 33+


def count_bucket(n: np.ndarray) -> np.ndarray:
    """The bucket (0 … ``COUNT_LEVELS`` − 1) of each count of on cells: 0 and 1 and 2 alone, then powers of two."""
    n = np.asarray(n, np.int64)
    log2 = np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)
    return np.where(n == 0, 0, np.minimum(log2 + 1, COUNT_LEVELS - 1))


def row_counts(observation: np.ndarray) -> np.ndarray:
    """A grid's row counts as binary features: per row (of C×H×W, or of one H×W channel), one feature per bucket of
    its number of on cells over all channels and columns, on for the bucket it falls in (H · ``COUNT_LEVELS`` uint8
    values, one 1 per row)."""
    rows = np.count_nonzero(observation.reshape(-1, *observation.shape[-2:]), axis=(0, 2))
    onehot = np.zeros((len(rows), COUNT_LEVELS), np.uint8)
    onehot[np.arange(len(rows)), count_bucket(rows)] = 1
    return onehot.reshape(-1)


def frame_features(observation: np.ndarray, settings: FMNSettings) -> tuple[np.ndarray, int]:
    """The model's view of an observation: (flat int64 values, number of levels).

    A grid (H, W ≤ ``grid_max``, e.g. MinAtar's C×10×10): every cell of every channel, on or off, then each
    row's count of on cells (``row_counts``). An image stack (newest frame last, e.g. Atari's 4×84×84) or a
    single H×W frame: the newest frame, downscaled and quantised.
    """
    if is_grid(observation, settings):
        cells = (observation.reshape(-1) > 0).astype(np.int64)
        return np.concatenate([cells, row_counts(observation).astype(np.int64)]), 2
    frame = observation if observation.ndim == 2 else observation[-1]
    return downscale_quantize(frame, settings.size, settings.levels), settings.levels


KT_ALPHA = 0.5  # the novelty component's pseudo-count per level (Krichevsky–Trofimov)


def _with_row(array: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """``array`` with one more row of ``fill`` (a new task; its values are set when it absorbs its first window)."""
    return np.concatenate([array, np.full((1, *array.shape[1:]), fill, array.dtype)])


def _log_mean_exp(rows: np.ndarray) -> np.ndarray:
    """log of the mean over axis 0 of exp(rows), stably (the hold-out's per-feature pool over tasks)."""
    if len(rows) == 1:
        return rows[0]
    top = rows.max(axis=0)
    return top + np.log(np.exp(rows - top).mean(axis=0))


# Compiled kernels for binary features (grids): a window's scores and its absorption cost a few numpy calls' worth,
# however many features it shows (MinAtar's Breakout ends an episode, and so a window, every ~9 agent steps).
@njit(cache=True, inline="always")
def _logaddexp(a: float, b: float) -> float:
    """log(e^a + e^b), as numpy's ``logaddexp`` computes it."""
    if a == b:
        return a + math.log(2.0)
    return a + math.log1p(math.exp(b - a)) if a > b else b + math.log1p(math.exp(a - b))


@njit(cache=True)
def _count_on(frames, n_frames):
    """How many of ``frames[:n_frames]`` show each feature on (> 0)."""
    on = np.zeros(frames.shape[1], np.int64)
    for i in range(n_frames):
        for p in range(frames.shape[1]):
            on[p] += 1 if frames[i, p] > 0 else 0
    return on


@njit(cache=True, inline="always")  # a call per feature would reference-count every array it is passed
def _add_feature_scores(scores, terms, p, q, h, weight, model, novel, keep, new):
    """Add feature ``p`` (cell ``q``)'s eq. (2) mixtures times ``weight`` to each model's score, the window showing it
    on ``h`` times: under task k, eq. (1') (its log, less the totals' runs); under the hold-out, their mean over
    tasks. ``model`` = (counts [k, p, v], totals' log runs [k], back-off [k, q], α, β); see
    ``_binary_window_scores``."""
    counts, run_totals, backoff, alpha, share = model[0], model[1], model[2], model[3], model[4]
    n_tasks, n_frames = counts.shape[0], len(novel) - 1
    if n_tasks == 0:
        scores[0] += weight * novel[h]
        return
    top = -np.inf
    for k in range(n_tasks):
        off = np.float64(counts[k, p, 0] + np.float32(alpha))  # c + α in float32, as the counts are
        on = np.float64(counts[k, p, 1] + np.float32(alpha))
        run = 1.0
        for i in range(n_frames - h):
            run *= ((off + i) + share) - backoff[k, q]  # a = α + β (1 − m) off
        for i in range(h):
            run *= (on + i) + backoff[k, q]  # a = α + β m on
        terms[k] = math.log(run) - run_totals[k]
        top = max(top, terms[k])
        scores[k] += weight * _logaddexp(terms[k] + keep[k], np.float64(novel[h] + new[k]))
    # The hold-out's model: the mean over tasks of their likelihoods. Unlike on images (``window_loglik``), the pool
    # holds no uniform model: every one of a grid's ~1000 background features would cost the hold-out up to log 2
    # against the task that fits it, more than a new game's 100–200-nat lead. Measured with a uniform model added
    # here: `bench_task_inference.py --only minatar` merged two MinAtar games (ARI 0.64, 4 of 9 streams failed);
    # without it, a grid task started alone keeps one task over 100k steps (the long stays).
    pooled = terms[0]
    if n_tasks > 1:
        total = 0.0
        for k in range(n_tasks):
            total += math.exp(terms[k] - top)
        pooled = top + math.log(total / n_tasks)
    scores[n_tasks] += weight * _logaddexp(pooled + keep[n_tasks], np.float64(novel[h] + new[n_tasks]))


@njit(cache=True)
def _binary_window_scores(frames, n_frames, active, model, novel, keep, new):
    """``FlatFMN.window_loglik`` for binary features (grids): each scored feature's mixtures summed into each model's
    score. Scored are the features some task or the window shows on, and per cell one background feature weighted
    by the cell's number of them; background cells whose back-off is 0 under every task (cells no task has seen on)
    score alike, so one of them stands for all.

    ``frames[:n_frames]``: the window (features p = channel · cells + cell for p < ``grid``, on where > 0, then the
    row counts, which belong to no cell: back-off group ``cells``, always 0); returns the scores and how many
    frames show each feature on;
    ``active`` [p]: some task has seen p on; ``model`` = (counts [k, p, v], the totals' log runs [k] for this window
    length, back-off β m_k(q) [k, q], α, β, ``grid``); ``novel`` [h]: a feature's KT term when the window shows it on
    h times; ``keep``, ``new``: log(1 − ε), log ε of each model."""
    counts, backoff, grid = model[0], model[2], model[5]
    n_tasks, cells = counts.shape[0], backoff.shape[1] - 1
    novel = novel[: n_frames + 1]
    on = _count_on(frames, n_frames)
    scores = np.zeros(n_tasks + 1)
    terms = np.empty(n_tasks)
    background = np.zeros(cells + 1, np.int64)
    first = np.full(cells + 1, -1, np.int64)
    for c in range(grid // cells + 1):  # p = c · cells + q, without a division per feature; then the counts
        for q in range(cells if c * cells < grid else len(on) - grid):
            p = c * cells + q
            group = q if p < grid else cells
            if active[p] or on[p] > 0:
                _add_feature_scores(scores, terms, p, group, on[p], 1.0, model, novel, keep, new)
            else:
                background[group] += 1
                if first[group] < 0:
                    first[group] = p
    unseen, unseen_weight, unseen_cell = -1, 0.0, 0  # background cells with no back-off under any task
    for q in range(cells + 1):
        if not background[q]:
            continue
        seen = False
        for k in range(n_tasks):
            seen = seen or backoff[k, q] != 0.0
        if seen:
            _add_feature_scores(scores, terms, first[q], q, 0, float(background[q]), model, novel, keep, new)
        else:
            unseen, unseen_weight, unseen_cell = first[q], unseen_weight + background[q], q
    if unseen >= 0:
        _add_feature_scores(scores, terms, unseen, unseen_cell, 0, unseen_weight, model, novel, keep, new)
    return scores, on


@njit(cache=True)
def _absorb_binary(on, n_frames, counts, active, scale, share, total, backoff, grid):
    """Task counts ``counts`` [p, v] absorb a window of ``n_frames`` frames that shows feature p on ``on[p]`` times,
    then are rescaled by ``scale`` (``count_cap``) unless it is 1; ``active`` marks the features shown on;
    ``backoff`` [q] becomes β m(q) of eq. (1') for the task's ``total`` frames, m(q) over the ``grid`` cell features
    (the last group, the row counts', stays 0). Returns whether ``active`` grew."""
    grew = False
    for p in range(counts.shape[0]):
        counts[p, 0] += np.float32(n_frames - on[p])
        counts[p, 1] += np.float32(on[p])
        if scale != 1.0:
            counts[p, 0] = np.float32(np.float64(counts[p, 0]) * scale)
            counts[p, 1] = np.float32(np.float64(counts[p, 1]) * scale)
        if on[p] > 0 and not active[p]:
            active[p] = True
            grew = True
    cells = len(backoff) - 1
    channels = grid // cells
    coef = share / max(total, 1.0)
    for q in range(cells):
        rate = np.float32(0.0)
        for c in range(channels):
            rate += counts[c * cells + q, 1]
        backoff[q] = coef * np.float64(rate / np.float32(channels))  # the cell's mean on-rate over channels
    return grew


@njit(cache=True)
def _row_counts_into(grid, out, buckets):
    """``row_counts`` of the C×H×W ``grid`` written into ``out`` (H · ``COUNT_LEVELS``), with ``buckets[n]`` the
    bucket of n on cells: one pass over the grid, no temporary arrays (it runs for every frame of a window)."""
    channels, rows, cols = grid.shape
    levels = len(out) // rows
    for r in range(rows):
        n = 0
        for c in range(channels):
            for x in range(cols):
                n += 1 if grid[c, r, x] > 0 else 0
        for b in range(levels):
            out[r * levels + b] = 0
        out[r * levels + buckets[n]] = 1


def warm_grid_kernels() -> None:
    """Compile (or load from numba's cache) the grid kernels for MinAtar's uint8 grids, once per process: called at
    the first grid observation, so Atari runs never pay it and a grid run pays it once (~6 s of CPU compiling,
    ~0.7 s loading), not in the middle of a decision window."""
    global _WARM
    if _WARM:
        return
    _WARM = True
    frames, counts = np.zeros((2, 4), np.uint8), np.zeros((1, 4, 2), np.float32)
    on = _count_on(frames, 1)
    weights = np.zeros(2, np.float32)
    # the window's run totals are a column of a (tasks, window) array: contiguous for one task, strided for more
    for totals in (np.zeros(1, np.float32), np.zeros((2, 2), np.float32)[:, 0]):
        model = (counts, totals, np.zeros((1, 2)), 0.01, 1.0, 2)
        _binary_window_scores(frames, 1, np.zeros(4, bool), model, np.zeros(2, np.float32), weights, weights)
    _absorb_binary(on, 1, counts[0], np.zeros(4, bool), 1.0, 1.0, 1.0, np.zeros(2), 2)
    _row_counts_into(np.zeros((1, 2, 2), np.uint8), np.zeros(2 * COUNT_LEVELS, np.uint8), count_bucket(np.arange(5)))


_WARM = False


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
        self._frames = np.zeros((0, 0), np.uint8)  # the open window's frames, one row each: image features, raw grids
        self._n_frames = 0  # frames in the open window (0: no decision open)
        self._deciding = False  # the open window has not decided the episode's task yet
        self._window_open = False  # the episode's first ``window`` model frames are still being collected
        self._every = 0  # agent steps between model frames of the observations seen (0: set by the next one)
        self._shape: tuple[int, ...] = ()  # the shape of the observations ``_every`` and ``_grid`` were set for
        self._grid = False  # observations are grids (cells on or off), not images
        self._log_p = np.zeros((0, 0, 0), np.float32)  # log of eq. (1)'s per-feature predictive, per task
        self._eps_h: tuple[tuple, float] = ((), 0.0)  # (features, novel_features, task_novelty) → ε_h
        self._hist = np.zeros((0, 0), np.float32)  # images: the window's count of each value of each feature (p, v)
        self._task_loglik = np.zeros((0, 0), np.float32)  # Σ_j log p_k(x_jp) over the window (images only)
        self._kt = np.zeros(0)  # log Γ(h + ½) for h = 0 … window: the KT predictive in closed form
        self._flat = np.zeros(0, np.int64)  # p · L: a feature's offset in the flattened (p, v) arrays
        self._active = np.zeros(0, bool)  # features some task has seen at a value other than 0
        self._scored: tuple[np.ndarray, np.ndarray] | None = None  # ``_select_features(_active)``, until it grows
        self._groups = (0, 0)  # (features, groups) that share a back-off: grids (channels, cells), images (F, 1)
        self._backoff = np.zeros((0, 0))  # grids, [k, q]: β m_k(q) of eq. (1'), m_k(q) the mean on-rate of cell q
        self._run_totals = np.zeros((0, 0), np.float32)  # grids: Σ_{i<J} log(n_k + Σ_v a_k[p, v] + i)
        self._totals_runs: dict[float, np.ndarray] = {}  # n → Σ_{i<J} log(n + 2α + β + i) for J = 1 … window
        self._novel = np.zeros((0, 0), np.float32)  # binary features, [J, h]: ``_novel_loglik`` of h on in J frames
        self._mix = (np.zeros(0), np.zeros(0))  # ``_mix_weights``
        self._on: np.ndarray | None = None  # ``_window_on``
        self._prior: tuple[tuple[int, int], np.ndarray] = ((-1, -1), np.zeros(0))  # (tasks, current) → log prior
        self._buckets = np.zeros(0, np.int64)  # grids: ``count_bucket`` of 0 … all cells, for ``_row_counts_into``

    # --- TaskSource ---------------------------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.totals)

    def observe(self, observation: np.ndarray, true_label: str | None = None, *, episode_start: bool = False) -> int:
        """Task id of ``observation`` (newest frame last, or a grid); ignores the label.

        ``episode_start``: this observation is the first of an episode (after a reset); the very first observation
        always is one.
        """
        if episode_start or (not self._deciding and not len(self.totals)):
            if self._n_frames:  # the previous episode ended before its window was full: use what it had
                if self._deciding:
                    self._decide()
                self._absorb_window(self.current)
            self._deciding, self._window_open, self.steps_in_episode = True, True, 0
        if self._window_open and self.steps_in_episode % (self._every or self._set_kind(observation)) == 0:
            self._add_to_window(observation)
            full = self._n_frames == self.settings.window
            if self._deciding and (full or not len(self.totals) or (self.levels > 2 and self._clear_winner())):
                self._decide()
            if full:
                self._absorb_window(self.current)
        self.steps_in_episode += 1
        return self.current

    def cut_episode(self) -> None:
        """The episode being watched stops here unfinished; the next observation starts a fresh episode that does not
        continue it (a resumed run's env is reset, not restored mid-episode). A window still deciding is dropped and
        the current task kept: its few frames may not decide (a decision needs ``early_after`` frames or a full
        window), and the fresh episode's own window decides. A window that has decided is absorbed by its task at the
        next episode start, as at any episode end."""
        if self._deciding and self._n_frames:
            self._n_frames, self._on, self._deciding, self._window_open = 0, None, False, False

    def _set_kind(self, observation: np.ndarray) -> int:
        """Check that ``observation`` fits the task models (set them up at the very first); the agent steps between
        its model frames: ``grid_update_every`` for grids, ``update_every`` for images."""
        x, levels = frame_features(observation, self.settings)
        if not self.levels:
            self.levels = levels
            self.counts = np.zeros((0, x.size, levels), dtype=np.float32)
            self._log_p = np.zeros((0, x.size, levels), np.float32)
            self._run_totals = np.zeros((0, self.settings.window + 1), np.float32)
            self._active = np.zeros(x.size, bool)
            grid = is_grid(observation, self.settings)
            cells = observation.shape[-2] * observation.shape[-1]
            self._groups = (observation.size // cells, cells) if grid else (x.size, 1)
            self._backoff = np.zeros((0, self._groups[1] + 1))  # grids: a cell's back-off; last, the counts' (0)
        if (x.size, levels) != self.counts.shape[1:]:
            raise ValueError(
                f"observation of shape {observation.shape} gives {x.size} features × {levels} levels, but the task "
                f"models have {self.counts.shape[1]} × {self.counts.shape[2]}: one task source serves one kind of game"
            )
        self._grid, self._shape = is_grid(observation, self.settings), observation.shape
        if self._grid:
            warm_grid_kernels()
        self._every = self.settings.grid_update_every if self._grid else self.settings.update_every
        dtype = observation.dtype if self._grid else np.uint8  # a grid frame is kept as it comes (a cheap copy)
        if self._frames.shape != (self.settings.window, x.size) or self._frames.dtype != dtype:
            frames = np.zeros((self.settings.window, x.size), dtype)
            if self._n_frames:  # a window loaded from a state
                frames[: self._n_frames] = self._frames[: self._n_frames]
            self._frames = frames
        return self._every

    # --- the decision window --------------------------------------------------------------------------------------
    def _add_to_window(self, observation: np.ndarray) -> None:
        """Add the frame's features to the window and, for images, its values to the window's histogram and (until
        the episode's task is decided) its log predictive under every task (eq. 1)."""
        if observation.shape != self._shape:
            self._set_kind(observation)
        if self._grid:  # copied as it is; a cell is on where > 0 (``_binary_window_scores``); then the counts
            # No reshaped view of ``_frames`` is kept for this: a deep copy or a pickle (the periodic evaluation's
            # task source, a checkpoint) would turn it into a second array that the window's scores never read.
            row, grid = self._frames[self._n_frames], observation.size
            row[:grid] = observation.reshape(-1)
            if self._buckets.size != grid + 1:
                self._buckets = count_bucket(np.arange(grid + 1))
            _row_counts_into(observation.reshape(-1, *observation.shape[-2:]), row[grid:], self._buckets)
        else:
            self._frames[self._n_frames] = frame_features(observation, self.settings)[0]
            if self.levels > 2:
                self._score(self._frames[self._n_frames])
        self._n_frames += 1
        self._on = None

    def _score(self, x: np.ndarray) -> None:
        """Images: count ``x`` in the window's histogram and add its per-feature log predictive under each task (a
        gather; binary features are scored from the window's frames at its end)."""
        n_features, levels = self.counts.shape[1:]
        if not self._n_frames:
            self._hist = np.zeros((n_features, levels), np.float32)
            self._task_loglik = np.zeros((self.n_tasks, n_features), np.float32)
            self._flat = np.arange(n_features) * levels
        self._hist += np.bincount(self._flat + x, minlength=self._hist.size).reshape(self._hist.shape)
        if self._deciding and self.n_tasks:
            self._task_loglik += self._log_p.reshape(self.n_tasks, -1)[:, self._flat + x]

    def window_loglik(self) -> np.ndarray:
        """Window log-likelihood of each task and of the hold-out (last), eq. (2): per feature, a two-component
        mixture of the model's predictive (weight 1 − ε) and the window's own (weight ε). The hold-out's model is,
        per feature, the mean over tasks of their window likelihoods: a new game may look like any known game in
        each feature, and pays ε_h (eq. 3) for each feature where it looks like none.

        Features that no task and not the window ever showed other than at value 0 (a background: most of MinAtar's
        cells) score alike under every model when they share a back-off group (a grid's cell; all of an image), so
        one of them per group is scored, weighted by their number. Binary features (grids) are scored by a compiled
        kernel (``_binary_window_scores``): a window costs a few numpy calls' worth however many features it has."""
        j = self._n_frames
        keep, new = self._mix_weights()
        if self.levels == 2:
            grid = self._groups[0] * self._groups[1]
            alpha, share = self.settings.alpha, self.settings.cell_share
            model = (self.counts, self._run_totals[:, j], self._backoff, alpha, share, grid)
            scores, self._on = _binary_window_scores(
                self._frames, j, self._active, model, self._novel_table(j), keep, new
            )
            return scores
        idx, weight = self._scored_features(self._hist[:, 0] < j)
        novel = self._novel_loglik(self._hist[idx])
        if not self.n_tasks:  # the hold-out alone
            return np.array([novel @ weight])
        tasks_term = self._task_loglik[:, idx]
        # The hold-out's pool also holds a model of no known game (uniform over the levels): with a single task the
        # pool would otherwise be that task itself, so the hold-out would match it wherever it fits and win by its
        # larger ε at the first ``novel_features`` novel features (a young first task lost to every new episode
        # start of its own game: 10–50 tasks in 100k steps of Boxing, Asterix or Enduro started alone).
        uniform = np.full((1, idx.size), -j * math.log(self.levels), np.float32)
        models = np.concatenate([tasks_term, _log_mean_exp(np.concatenate([tasks_term, uniform]))[None]])
        mixed = np.logaddexp(models + keep[:, None], novel + new[:, None])  # eq. (2): tasks with ε_k, hold-out ε_h
        scores = np.empty(len(models))
        scores[:-1] = mixed[:-1] @ weight
        scores[-1] = mixed[-1] @ weight
        return scores

    def _window_on(self) -> np.ndarray:
        """Binary features: how many of the window's frames show each feature on (counted once per window state)."""
        if self._on is None:
            self._on = _count_on(self._frames, self._n_frames)
        return self._on

    def _mix_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """log(1 − ε) and log ε of each task (ε_k) and of the hold-out (ε_h, last), float32 (eq. 2)."""
        if len(self._mix[0]) != self.n_tasks + 1:
            eps = [self.settings.task_novelty] * self.n_tasks + [self._holdout_novelty()]
            keep, new = [math.log1p(-e) for e in eps], [math.log(e) for e in eps]
            self._mix = (np.array(keep, np.float32), np.array(new, np.float32))
        return self._mix

    def _scored_features(self, shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The features to score and their weights (see ``_select_features``), given the features the window
        ``shown`` at a value other than 0; the same for every window that shows no feature beyond those some task
        has shown (most windows), so kept until ``_active`` grows."""
        if (shown > self._active).any():
            return self._select_features(self._active | shown)
        if self._scored is None:
            self._scored = self._select_features(self._active)
        return self._scored

    def _select_features(self, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every ``active`` feature once, and per back-off group one background feature standing for all of the
        group's (see ``window_loglik``), with their weights."""
        active = active.reshape(self._groups)
        background = self._groups[0] - np.count_nonzero(active, axis=0)  # per group
        groups = np.flatnonzero(background)
        first = np.argmin(active, axis=0)[groups]  # a background feature of each such group
        idx = np.concatenate([np.flatnonzero(active), first * self._groups[1] + groups])
        weight = np.concatenate([np.ones(idx.size - groups.size), background[groups]])
        return idx, weight

    def _novel_table(self, j: int) -> np.ndarray:
        """Binary features: ``_novel_loglik`` of a feature on h times in ``j`` frames, for h = 0 … ``window``."""
        if not self._novel.size:
            on = np.arange(self.settings.window + 1)
            hists = [np.stack([np.maximum(frames - on, 0), on], axis=1) for frames in on]
            self._novel = np.stack([self._novel_loglik(hist, frames) for frames, hist in enumerate(hists)])
        return self._novel[j]

    def _novel_loglik(self, hist: np.ndarray, frames: int | None = None) -> np.ndarray:
        """Per feature (row of ``hist``, the window's count of each value), the log probability of the window under
        its own sequential Krichevsky–Trofimov predictive, in closed form:
        Σ_v log Γ(h_v + ½) − L log Γ(½) − log Γ(J + L/2) + log Γ(L/2), J the window's frames (or ``frames``)."""
        j, levels = self._n_frames if frames is None else frames, self.levels
        if len(self._kt) <= self.settings.window:
            self._kt = np.array([math.lgamma(h + KT_ALPHA) for h in range(self.settings.window + 1)], np.float32)
        const = levels * math.lgamma(KT_ALPHA) + math.lgamma(j + levels * KT_ALPHA) - math.lgamma(levels * KT_ALPHA)
        return self._kt[hist.astype(np.intp)].sum(axis=1) - np.float32(const)

    def _holdout_novelty(self) -> float:
        """ε_h for this kind of observation (computed once)."""
        key = (self.counts.shape[1], self.settings.novel_features, self.settings.task_novelty)
        if self._eps_h[0] != key:
            self._eps_h = (key, holdout_novelty(*key))
        return self._eps_h[1]

    def log_prior(self) -> np.ndarray:
        """log prior of each task and of the hold-out (last) for the decision at an episode start."""
        if self._prior[0] == (self.n_tasks, self.current):
            return self._prior[1]
        n_models = self.n_tasks + 1
        if self.n_tasks == 0:
            return np.zeros(1)
        rho = self.settings.switch_prior
        prior = np.full(n_models, np.log(rho / (n_models - 1)))
        prior[self.current] = np.log1p(-rho)
        self._prior = ((self.n_tasks, self.current), prior)
        return prior

    def _clear_winner(self) -> bool:
        """Images: whether the window's MAP model leads every other by at least ``margin`` nats already (grids decide
        at the window's end: a full window is only ``window`` agent steps, ``grid_update_every`` = 1)."""
        if self._n_frames < self.settings.early_after:
            return False
        top2 = np.partition(self.window_loglik() + self.log_prior(), -2)[-2:]
        return bool(top2[1] - top2[0] >= self.settings.margin)

    def _decide(self) -> None:
        """The window's MAP model becomes the episode's task; a winning hold-out becomes a new task."""
        winner = int((self.window_loglik() + self.log_prior()).argmax())
        if winner == self.n_tasks:
            self.counts = np.concatenate([self.counts, np.zeros((1, *self.counts.shape[1:]), np.float32)])
            self._log_p = _with_row(self._log_p)
            self._backoff, self._run_totals = _with_row(self._backoff), _with_row(self._run_totals)
            self.totals = np.append(self.totals, 0.0)
        self.current, self._deciding = winner, False

    def _absorb_window(self, row: int) -> None:
        """Task ``row`` keeps the window's updates (Bayesian counts); every other model reverts (writes nothing)."""
        j, cap = self._n_frames, self.settings.count_cap
        total = self.totals[row] + j
        scale = cap / total if cap and total > cap else 1.0  # ``count_cap``: the counts represent ``cap`` frames
        self.totals[row] = min(total, cap) if cap else total
        if self.levels == 2:
            share, on, n = self.settings.cell_share, self._window_on(), self.totals[row]
            grid = self._groups[0] * self._groups[1]
            grew = _absorb_binary(on, j, self.counts[row], self._active, scale, share, n, self._backoff[row], grid)
        else:
            self.counts[row] += self._hist
            shown = self._hist[:, 0] < j
            grew = bool((shown > self._active).any())
            self._active |= shown
            if scale != 1.0:
                self.counts[row] *= scale
        if grew:
            self._scored = None
        self._n_frames, self._window_open = 0, False
        self._refresh(row)

    def _refresh(self, row: int) -> None:
        """Cache what task ``row``'s predictive needs for the next windows: images, the log of eq. (1); grids, the
        log of the totals' runs of eq. (1') for every window length (the back-off is set by ``_absorb_binary``)."""
        alpha, n = self.settings.alpha, self.totals[row]
        if self.levels > 2:
            self._log_p[row] = np.log((self.counts[row] + alpha) / (n + self.levels * alpha))
            return
        if n not in self._totals_runs:  # n stays at ``count_cap`` once reached
            steps = np.arange(self.settings.window, dtype=np.float64)
            self._totals_runs[n] = np.cumsum(np.log(n + 2 * alpha + self.settings.cell_share + steps))
        self._run_totals[row, 1:] = self._totals_runs[n]

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
            "groups": self._groups,
            "window_frames": [self._features(j) for j in range(self._n_frames)],
        }

    def _features(self, j: int) -> np.ndarray:
        """The window's ``j``-th frame as ``frame_features`` gives it (int64 values)."""
        row = self._frames[j]
        return (row > 0).astype(np.int64) if self.levels == 2 else row.astype(np.int64)

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
        groups = state.get("groups", (self.counts.shape[1], 1))  # images: one group (older states lack it)
        self._groups = (int(groups[0]), int(groups[1]))
        grid = self.levels == 2 and self._groups[1] > 1  # images' features form one group
        counts_of_rows = self.counts.shape[1] - self._groups[0] * self._groups[1]
        if grid and (counts_of_rows <= 0 or counts_of_rows % COUNT_LEVELS):
            raise ValueError(
                "task-inference state of a grid game from before the row counts (or the cell back-off): it "
                "cannot be resumed with this version; start the run again"
            )
        self._every, self._shape = 0, ()  # set again by the next observation
        self._log_p = np.zeros_like(self.counts)
        self._backoff = np.zeros((self.n_tasks, self._groups[1] + 1))
        self._totals_runs, self._mix = {}, (np.zeros(0), np.zeros(0))
        self._run_totals = np.zeros((self.n_tasks, settings.window + 1), np.float32)
        self._active = np.asarray((self.counts[:, :, 1:] > 0).any(axis=(0, 2)))
        self._scored, self._prior = None, ((-1, -1), np.zeros(0))
        for row in range(self.n_tasks):
            if self.levels == 2:  # the back-off, by absorbing an empty window
                none, n = np.zeros(self.counts.shape[1], np.int64), self.totals[row]
                cells, share = self._groups[0] * self._groups[1], settings.cell_share
                _absorb_binary(none, 0, self.counts[row], self._active, 1.0, share, n, self._backoff[row], cells)
            self._refresh(row)
        # The open window's scores are recomputed from its frames (they depend only on the counts, which it has not
        # touched yet).
        self._frames = np.zeros((settings.window, self.counts.shape[1]), np.uint8)
        self._n_frames, self._on = 0, None
        for x in state["window_frames"]:
            self._frames[self._n_frames] = x
            if self.levels > 2:
                self._score(self._frames[self._n_frames])
            self._n_frames += 1
