"""Method strengths for the retention table: the sweep files, the selection rule, and the sweep-then-table flow on real
MinAtar runs at a tiny budget (references, a two-value sweep, the selection, the table with the chosen value)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation.strengths import STRENGTH_KEYS, Candidate, choose
from agents.run.config import flatten_settings, load_config
from agents.run.sweep import load_sweep, run_one
from envs.scores import random_score
from scripts.bench_retention import main as table_main
from scripts.select_strengths import main as select_main
from tests.conftest import REPO

PRESET = REPO / "configs" / "minatar_table.yaml"
SWEEPS = [REPO / "configs" / "sweeps" / "minatar_strengths.yaml", REPO / "configs" / "sweeps" / "minatar_memory.yaml"]
TABLE_SEEDS = range(5)
REFERENCES = REPO / "docs" / "results" / "minatar"  # the full protocol's table: references.csv


def test_the_sweeps_cover_every_strength_on_a_log_grid_around_its_default_with_seeds_the_table_does_not_use():
    preset = load_config(PRESET)
    grids: dict[str, set] = {}
    for path in SWEEPS:
        for run in load_sweep(path).runs:
            config = run.config
            assert config.run.seed not in TABLE_SEEDS and config.task.source == "fmn"
            assert config.sequence == preset.sequence and config.eval == preset.eval  # the table's protocol
            key = STRENGTH_KEYS[config.method.name]
            grids.setdefault(config.method.name, set()).add(flatten_settings(config.to_dict())[key])
    assert set(grids) == set(STRENGTH_KEYS)
    defaults = flatten_settings(preset.to_dict())
    for method, values in grids.items():
        low, mid, high = sorted(values)
        # the default in the middle; λ's and memory's at the top (a smaller λ keeps more plasticity; the preset's
        # buffer already holds all that a task sees)
        top = STRENGTH_KEYS[method] == "agent.buffer_size" or method in ("ewc", "online_ewc", "mas")
        assert (high if top else mid) == defaults[STRENGTH_KEYS[method]], method
        assert math.log(mid / low) == pytest.approx(math.log(high / mid), rel=0.15), method  # memory: ×3–3.3


def test_the_highest_criterion_wins_and_a_tie_goes_to_the_value_listed_first():
    def candidate(value: float, final: float, drop: float) -> Candidate:
        return Candidate("ewc", "method.ewc.lam", value, ["r"], [final], [drop])

    a, b, c = candidate(4, 0.9, 0.5), candidate(40, 0.8, 0.2), candidate(400, 0.9, 0.3)
    assert a.criterion == pytest.approx(0.5 * (0.9 + 1 - 0.5))
    assert choose([a, b, c])["ewc"] is b  # 0.80 against 0.70 and 0.80: b is listed first
    assert b.criterion == pytest.approx(c.criterion)


def test_bad_selection_and_tuned_input_exit_2(tmp_path, capsys):
    assert select_main([str(tmp_path), "--references", str(tmp_path)]) == 2
    assert "references.csv does not exist" in capsys.readouterr().err
    bad = tmp_path / "tuned.yaml"
    bad.write_text("ewc: 40\n")
    assert table_main([str(PRESET), "--methods", "ewc", "--tuned", str(bad), "--out", str(tmp_path / "t")]) == 2
    assert "must map each method" in capsys.readouterr().err


TINY = {  # Breakout → SpaceInvaders, each twice: 300 agent steps in all, short episodes, one evaluation episode
    "sequence.segments": [
        {"game": "MinAtar/Breakout", "steps": 100},
        {"game": "MinAtar/SpaceInvaders", "steps": 100},
        {"game": "MinAtar/Breakout", "steps": 50},
        {"game": "MinAtar/SpaceInvaders", "steps": 50},
    ],
    "agent.learning_starts": 32,
    "agent.buffer_size": 500,
    "agent.exploration_steps": 50,
    "agent.target_update_interval": 50,
    "eval.every": 0,
    "eval.episodes": 1,
    "env.minatar.max_episode_steps": 60,
    "method.ewc.batches": 2,
    "log.plasticity_every": 0,
}
GRID = {"ewc_lam1": 1.0, "ewc_lam1000": 1000.0}


def _criterion_by_hand(run_dir, reference: dict[str, float]) -> float:
    """½ (final + 1 − worst drop) from the run's TensorBoard scalars at the four segment ends, written out for the
    segments Breakout, SpaceInvaders, Breakout, SpaceInvaders."""
    tb = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    tb.Reload()
    finals, drops = [], []
    for game in ("MinAtar/Breakout", "MinAtar/SpaceInvaders"):
        if not reference[game] > random_score(game):
            continue  # no scale
        by_step = {e.step: e.value for e in tb.Scalars(f"eval/{game}/score")}
        scale = reference[game] - random_score(game)
        r = [(by_step[end] - random_score(game)) / scale for end in (100, 200, 250, 300)]
        if game == "MinAtar/Breakout":  # own segments 1 and 3
            drop = max(r[0] - r[1], r[0] - r[2], max(r[0], r[2]) - r[3])
        else:  # own segments 2 and 4
            drop = max(r[1] - r[2], r[1] - r[3])
        finals.append(r[3])
        drops.append(drop)
    return 0.5 * (np.mean(finals) + 1 - np.mean(drops))


@pytest.mark.slow
def test_sweep_then_table_on_real_minatar_runs(tmp_path, capsys):
    # 1. The references that normalise the sweep: those of the full protocol's table in docs/results/minatar (a tiny
    # run's own references are rarely above random play, and then nothing can be normalised).
    with (REFERENCES / "references.csv").open() as f:
        reference = {row["game"]: float(row["reference_mean"]) for row in csv.DictReader(f)}

    # 2. The sweep, with the project's sweep tooling: the file expanded and validated by load_sweep, each run the body
    # of a sweep task (run_one), as Ray runs it.
    sweep_file = tmp_path / "sweep.yaml"
    axis = {label: {"name": "ewc", "ewc": {"lam": lam}} for label, lam in GRID.items()}
    sweep_file.write_text(
        yaml.safe_dump(
            {"name": "tiny", "base": str(PRESET), "overrides": TINY, "axes": {"method": axis, "run.seed": [100]}}
            | {"evaluate": "none"}
        )
    )
    sweep_dir = tmp_path / "sweep"
    for run in load_sweep(sweep_file).runs:
        assert run_one(str(sweep_dir / run.name), run.config.to_dict(), "none")["state"] == "done"

    # 3. The selection: every candidate's criterion computed again from the TensorBoard scalars; the best is chosen.
    table = tmp_path / "table"
    tuned = table / "tuned.yaml"
    assert select_main([str(sweep_dir), "--references", str(REFERENCES), "--write", str(tuned)]) == 0
    capsys.readouterr()
    selection = json.loads((table / "selection.json").read_text())
    by_hand = {lam: _criterion_by_hand(sweep_dir / f"{label}__seed100", reference) for label, lam in GRID.items()}
    assert {row["value"]: row["criterion"] for row in selection} == pytest.approx(by_hand)
    best = max(GRID.values(), key=lambda lam: (by_hand[lam], -list(GRID.values()).index(lam)))
    assert [row["value"] for row in selection if row["chosen"]] == [best]
    assert yaml.safe_load(tuned.read_text()) == {"ewc": {"method.ewc.lam": best}}

    # 4. The table with the chosen value: EWC trained at the chosen λ beside fine-tuning, and compared with it (where
    # its tiny references give a scale).
    sets = ["--set", *(f"{k}={json.dumps(v)}" for k, v in TINY.items())]
    args = [str(PRESET), "--methods", "finetune", "ewc", "--seeds", "1", "--jobs", "1", "--out", str(table)]
    assert table_main([*args, "--reps", "200", "--tuned", str(tuned), *sets]) == 0
    assert load_config(table / "runs" / "ewc__seed0" / "config.yaml").method.ewc.lam == best
    assert load_config(table / "runs" / "finetune__seed0" / "config.yaml").method.name == "none"
    with (table / "differences.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["row"], r["compared_with"]) for r in rows} <= {("ewc", "finetune")}
    assert json.loads((table / "table.json").read_text())["settings"]["tuned"] == {"ewc": {"method.ewc.lam": best}}
