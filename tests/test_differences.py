"""The retention table's comparisons: rows against fine-tuning and true against inferred task ids, on hand-made
per-game metrics whose differences are computed again here; rows with another task source in the table's plan."""

from __future__ import annotations

import numpy as np
import pytest

from agents.evaluation.differences import (
    differences,
    format_differences,
    pairs,
    per_game_intervals,
    split_row,
)
from agents.evaluation.retention_table import FINETUNE, TableError, plan_runs
from cl_rl.retention import difference_interval, iqm, mean, stratified_bootstrap
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny.yaml"
GAMES = ["A", "B", "C"]


def _rows() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    drops = np.array([0.2, 0.9, 0.4])  # fine-tuning loses B most
    ewc_final = rng.normal(0.8, 0.1, (3, 3))
    return {
        "finetune": {"final": rng.normal(0.3, 0.1, (4, 3)), "worst_drop": drops + rng.normal(0, 0.05, (4, 3))},
        "ewc": {"final": ewc_final, "worst_drop": 0.1 + rng.normal(0, 0.05, (3, 3))},
        # the same final scores in another seed order: the same IQM
        "ewc@oracle": {"final": ewc_final[::-1].copy(), "worst_drop": 0.1 + rng.normal(0, 0.05, (3, 3))},
        "finetune@oracle": {"final": rng.normal(0.3, 0.1, (3, 3)), "worst_drop": rng.normal(0.5, 0.05, (3, 3))},
    }


def test_rows_name_their_task_source_and_are_paired_with_finetuning_of_the_same_source():
    assert split_row("ewc") == ("ewc", None) and split_row("ewc+lwf@oracle") == ("ewc+lwf", "oracle")
    assert pairs(list(_rows()), FINETUNE) == [
        ("ewc", "finetune"),
        ("ewc@oracle", "finetune@oracle"),
        ("ewc", "ewc@oracle"),  # the price of inferred task ids, EWC's and fine-tuning's
        ("finetune", "finetune@oracle"),
    ]
    assert pairs(["ewc@oracle", "mas"], FINETUNE) == []  # no fine-tuning row of either source, no plain ewc


def test_differences_are_the_rows_statistics_apart_with_their_bootstrap_intervals():
    rows = _rows()
    found = {(d.row, d.baseline, d.key): d for d in differences(rows, GAMES, FINETUNE, reps=2000)}
    assert len(found) == 4 * 3
    ewc, ft = rows["ewc"], rows["finetune"]
    final = found[("ewc", "finetune", "final")]
    assert final.interval == difference_interval(ewc["final"], ft["final"], iqm, reps=2000)
    assert final.interval.value == pytest.approx(iqm(ewc["final"]) - iqm(ft["final"]))
    assert final.clear and final.interval.low > 0  # 0.8 against 0.3 with a spread of 0.1
    # The game fine-tuning loses most (B) is the same for every comparison; its statistic is the mean of seeds.
    on_b = found[("ewc@oracle", "finetune@oracle", "worst_drop_game")]
    assert on_b.game == "B" and on_b.title == "worst drop ↓ on B"
    b_rows = rows["ewc@oracle"]["worst_drop"][:, [1]], rows["finetune@oracle"]["worst_drop"][:, [1]]
    assert on_b.interval.value == pytest.approx(mean(b_rows[0]) - mean(b_rows[1]))
    assert on_b.interval == difference_interval(*b_rows, mean, reps=2000)
    price = found[("ewc", "ewc@oracle", "final")]
    assert price.interval.value == pytest.approx(0.0) and not price.clear  # the interval holds 0

    lines = format_differences(list(found.values()))
    assert "| ewc | finetune | final score | " in "\n".join(lines)
    clear_line = next(line for line in lines if line.startswith("Clear"))
    unclear_line = next(line for line in lines if line.startswith("Not clear"))
    assert "ewc (final score)" in clear_line and "ewc (final score)" in unclear_line  # ewc − finetune; ewc − oracle
    assert format_differences([]) == []


def test_a_game_undefined_in_a_row_is_left_out_of_its_differences():
    rows = _rows()
    rows["ewc"]["final"][0, 2] = np.nan  # game C lacks a score in one seed
    found = {(d.row, d.baseline, d.key): d for d in differences(rows, GAMES, FINETUNE, reps=500)}
    want = difference_interval(rows["ewc"]["final"][:, :2], rows["finetune"]["final"][:, :2], iqm, reps=500)
    assert found[("ewc", "finetune", "final")].interval == want


def test_per_game_intervals_are_each_games_mean_of_seeds_with_a_bootstrap_of_seeds():
    values = np.array([[0.1, np.nan], [0.3, np.nan], [0.8, np.nan]])
    first, second = per_game_intervals(values, reps=1000)
    assert first == stratified_bootstrap(values[:, :1], mean, reps=1000)
    assert first is not None and first.value == pytest.approx(0.4) and first.low < 0.4 < first.high
    assert second is None


def test_a_row_with_another_task_source_is_planned_beside_the_tables():
    _, specs = plan_runs(TINY, ["finetune", "ewc", "ewc@oracle"], [0], "fmn")
    runs = {s.name: s for s in specs}
    references = ["reference__Pong__seed0", "reference__Breakout__seed0"]
    assert list(runs) == [*references, "finetune__seed0", "ewc__seed0", "ewc@oracle__seed0"]
    ewc, oracle = runs["ewc__seed0"].config, runs["ewc@oracle__seed0"].config
    assert (ewc.method.name, ewc.task.source) == ("ewc", "fmn")
    assert (oracle.method.name, oracle.task.source, runs["ewc@oracle__seed0"].method) == ("ewc", "oracle", "ewc@oracle")
    with pytest.raises(TableError, match="fmn or oracle"):
        plan_runs(TINY, ["ewc@truth"], [0])
    with pytest.raises(TableError, match="did you mean ewc"):
        plan_runs(TINY, ["ewk@oracle"], [0])
