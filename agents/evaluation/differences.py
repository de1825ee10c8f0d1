"""The retention table's comparisons: each method against fine-tuning, true against inferred task ids, and every
method's worst drop on each game, each with a stratified-bootstrap 95 % interval (``cl_rl.retention``).

A table row is a method's name, or ``<method>@<source>`` for the same method run with another task source than the
table's (``ewc@oracle`` beside ``ewc``: EWC with true task ids beside EWC with inferred ones, as the EWC paper's
Fig. 3 compares). Each row is compared with the fine-tuning row of the same task source (``finetune@oracle`` for
``ewc@oracle``), on

- the final score and the worst drop, IQM over seeds × games (the table's columns): the difference of the two IQMs;
- the worst drop on the game that fine-tuning loses most (the largest mean over its seeds): the difference of the
  means over seeds;

and each ``<method>@<source>`` row's own method is compared with it (``ewc`` − ``ewc@oracle``: what inferring the
task costs). The intervals resample each row's seeds within each game, independently per row
(``cl_rl.retention.difference_interval`` says why not paired); a difference is *clear* when its interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cl_rl.retention import Interval, difference_interval, iqm, mean, stratified_bootstrap

SOURCE_MARK = "@"  # row name <method>@<task source>
COMPARED = {  # key: (title, metric of the table); pooled: IQM over seeds × games, one game: mean over seeds
    "final": ("final score", "final"),
    "worst_drop": ("worst drop ↓ (pooled)", "worst_drop"),
    "worst_drop_game": ("worst drop ↓ on {game}", "worst_drop"),
}
PerGame = Mapping[str, Mapping[str, np.ndarray]]  # row -> metric -> seeds × games


def split_row(row: str) -> tuple[str, str | None]:
    """``ewc@oracle`` → (``ewc``, ``oracle``); ``ewc`` → (``ewc``, None: the table's task source)."""
    method, mark, source = row.partition(SOURCE_MARK)
    return method, (source if mark else None)


@dataclass(frozen=True)
class Difference:
    """``row`` minus ``baseline`` on one comparison of ``COMPARED`` (``game``: the game of ``worst_drop_game``)."""

    row: str
    baseline: str
    key: str
    interval: Interval
    game: str | None = None

    @property
    def clear(self) -> bool:
        return self.interval.excludes(0.0)

    @property
    def title(self) -> str:
        return COMPARED[self.key][0].format(game=self.game)


def pairs(rows: Sequence[str], finetune: str) -> list[tuple[str, str]]:
    """(row, compared row) of every comparison: each row against fine-tuning of its task source (when the table
    has that row), then each method against its ``@<source>`` row (the table's task source minus the row's: with
    ``fmn`` for the table and ``@oracle`` rows, inferred minus true task ids)."""
    against_finetune = []
    for row in rows:
        method, source = split_row(row)
        base = finetune if source is None else f"{finetune}{SOURCE_MARK}{source}"
        if method != finetune and base in rows:
            against_finetune.append((row, base))
    price = []
    for row in rows:
        method, source = split_row(row)
        if source is not None and method in rows:
            price.append((method, row))
    return against_finetune + price


def differences(per_game: PerGame, games: Sequence[str], finetune: str, reps: int = 50_000) -> list[Difference]:
    """Every comparison of ``pairs`` on every key of ``COMPARED``; games undefined in either row are left out.

    The game of ``worst_drop_game`` is the one the ``finetune`` row loses most, the same for every comparison.
    """
    game = _most_lost(np.asarray(per_game[finetune]["worst_drop"])) if finetune in per_game else None
    out = []
    for row, base in pairs(list(per_game), finetune):
        for key, (_, metric) in COMPARED.items():
            a, b = np.asarray(per_game[row][metric]), np.asarray(per_game[base][metric])
            statistic = iqm
            if key == "worst_drop_game":
                if game is None:
                    continue
                a, b, statistic = a[:, [game]], b[:, [game]], mean
            kept = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
            if not kept.any():
                continue
            interval = difference_interval(a[:, kept], b[:, kept], statistic, reps=reps)
            on = games[game] if key == "worst_drop_game" and game is not None else None
            out.append(Difference(row, base, key, interval, on))
    return out


def _most_lost(drops: np.ndarray) -> int | None:
    """The game with the largest mean worst drop over seeds (None: no game has one)."""
    means = np.array([np.nanmean(col) if np.isfinite(col).any() else -np.inf for col in drops.T])
    return int(np.argmax(means)) if np.isfinite(means).any() else None


def per_game_intervals(values: np.ndarray, reps: int = 50_000) -> list[Interval | None]:
    """Each game's mean over seeds with a bootstrap 95 % interval (seeds resampled); None where a seed lacks it."""
    values = np.asarray(values, dtype=float)
    return [None if np.isnan(col).any() else stratified_bootstrap(col[:, None], mean, reps=reps) for col in values.T]


def format_differences(found: Sequence[Difference]) -> list[str]:
    """The differences as a Markdown section, with the line that says which are clear and which are not."""
    if not found:
        return []
    lines = [
        "## Differences (row − compared row)",
        "",
        "Each cell: difference [stratified-bootstrap 95 % CI, each row's seeds resampled within each game, "
        "independently]; ✓ where the interval excludes 0. Final score: higher is better; worst drop: lower is better.",
        "",
        "| row | compared with | comparison | difference | clear |",
        "|---|---|---|---|---|",
    ]
    for d in found:
        i = d.interval
        lines.append(
            f"| {d.row} | {d.baseline} | {d.title} | {i.value:+.2f} [{i.low:+.2f}, {i.high:+.2f}] | "
            f"{'✓' if d.clear else ''} |"
        )
    clear = [f"{d.row} ({d.title})" for d in found if d.clear]
    unclear = [f"{d.row} ({d.title})" for d in found if not d.clear]
    lines += [
        "",
        f"Clear (interval excludes 0): {', '.join(clear) or 'none'}.",
        f"Not clear (interval holds 0): {', '.join(unclear) or 'none'}.",
    ]
    return lines


def difference_rows(found: Sequence[Difference]) -> list[list[object]]:
    """One CSV row per difference: row, compared row, comparison, game, value, low, high, clear."""
    return [
        [d.row, d.baseline, d.key, d.game or "", d.interval.value, d.interval.low, d.interval.high, d.clear]
        for d in found
    ]


DIFFERENCE_COLUMNS = ["row", "compared_with", "comparison", "game", "difference", "low", "high", "clear"]
