"""The retention table: metrics and intervals computed two ways; a tiny real run of scripts/bench_retention.py."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation.retention_table import (
    FINETUNE,
    MARKER,
    TableError,
    aggregate,
    known_methods,
    method_overrides,
    plan_runs,
    run_metrics,
)
from agents.run.config import load_config
from cl_rl.methods import REGISTRY
from cl_rl.retention import iqm, normalize
from scripts.bench_retention import main
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny.yaml"


def test_every_registered_method_is_known_and_selected_by_its_overrides():
    assert known_methods() == (FINETUNE, *REGISTRY)
    for name in known_methods():
        config = load_config(TINY, method_overrides(name))
        assert config.method.name == ("none" if name == FINETUNE else name)
    assert load_config(TINY, method_overrides("ewc+lwf")).method.name == "ewc+lwf"
    with pytest.raises(TableError, match="did you mean ewc"):
        method_overrides("ewk")


def test_plan_has_every_method_seed_and_a_reference_per_game_as_long_as_the_game_in_the_sequence():
    sequence, specs = plan_runs(TINY, ["finetune", "ewc"], [0, 1], "fmn", steps_scale=0.5, threads=2)
    assert [(s.game, s.steps) for s in sequence.segments] == [("Pong", 100), ("Breakout", 75), ("Pong", 75)]
    assert [s.name for s in specs] == [  # seed by seed, references first: a table cut short is whole at its seeds
        "reference__Pong__seed0",
        "reference__Breakout__seed0",
        "finetune__seed0",
        "ewc__seed0",
        "reference__Pong__seed1",
        "reference__Breakout__seed1",
        "finetune__seed1",
        "ewc__seed1",
    ]
    ewc = specs[7].config
    assert (ewc.method.name, ewc.run.seed, ewc.task.source, ewc.run.threads) == ("ewc", 1, "fmn", 2)
    assert ewc.sequence.build() == sequence
    pong = specs[0].config
    assert pong.sequence.build().to_list() == [{"game": "Pong", "steps": 175}]
    assert (pong.method.name, pong.task.source) == ("none", "oracle")
    with pytest.raises(TableError, match="steps-scale"):
        plan_runs(TINY, ["finetune"], [0], steps_scale=0)


def test_run_metrics_on_a_hand_made_run():
    # Games A (random 0, reference 10) and B (random -5, reference 15); segments train A, B, A.
    raw = np.array([[8.0, -5.0], [4.0, 15.0], [10.0, 5.0]])
    normalised = normalize(raw, np.array([0.0, -5.0]), np.array([10.0, 15.0]))
    assert normalised == pytest.approx(np.array([[0.8, 0.0], [0.4, 1.0], [1.0, 0.5]]))
    no_scale = normalize(raw, np.array([0.0, 15.0]), np.array([10.0, 15.0]))  # B's reference is no better than random
    assert np.isnan(no_scale[:, 1]).all() and no_scale[:, 0] == pytest.approx(normalised[:, 0])
    with pytest.raises(ValueError, match="one value per game"):
        normalize(raw, np.zeros(3), np.ones(3))
    m = run_metrics(normalised, [0, 1, 0])
    assert m["final"] == pytest.approx([1.0, 0.5])
    assert m["forgetting"] == pytest.approx([1.0 - 1.0, 1.0 - 0.5])  # A: best own 1.0 (after 2); B: 1.0 after 1
    assert m["worst_drop"] == pytest.approx([0.8 - 0.4, 1.0 - 0.5])  # A: 0.8, then 0.4 after B's segment
    assert np.isnan(m["backward_transfer"][0]) and m["backward_transfer"][1] == pytest.approx(0.5 - 1.0)
    assert np.isnan(m["forward_transfer"][0]) and m["forward_transfer"][1] == pytest.approx(0.0)  # B before it: 0
    assert m["forward_transfer_reference"] == pytest.approx([0.8 - 1.0, 1.0 - 1.0])


def test_interval_is_the_iqm_over_seeds_x_games_and_a_bootstrap_of_seeds_within_games():
    values = np.array([[0.1, np.nan, 0.9], [0.5, np.nan, 0.2], [0.3, np.nan, 0.8], [0.7, np.nan, 0.4]])
    interval = aggregate(values, reps=400, seed=3)
    kept = values[:, [0, 2]]  # the game without a value in any seed is left out
    middle = np.sort(kept.ravel())[2:6]  # 8 values: the middle half
    assert interval.value == pytest.approx(middle.mean()) == pytest.approx(iqm(kept))
    rng = np.random.default_rng(3)  # the same resamples, drawn and summarised one by one
    draws = rng.integers(0, 4, size=(400, 4, 2))
    stats = [np.sort(np.array([kept[draws[r, :, j], j] for j in range(2)]).ravel())[2:6].mean() for r in range(400)]
    assert (interval.low, interval.high) == pytest.approx(tuple(np.percentile(stats, [2.5, 97.5])))
    assert interval.low <= interval.value <= interval.high
    assert aggregate(np.full((3, 2), np.nan)) is None


@pytest.mark.slow
def test_table_command_writes_every_output_then_reuses_finished_runs_and_resumes_a_cut_one(tmp_path, capsys):
    out = tmp_path / "table"
    args = [str(TINY), "--methods", "finetune", "ewc", "--seeds", "1", "--jobs", "2", "--out", str(out)]
    args += ["--steps-scale", "0.4", "--reps", "500"]  # Pong 80 → Breakout 60 → Pong 60 agent steps
    args += ["--set", "method.ewc.batches=4"]  # EWC's Fisher from 4 minibatches, not 100: seconds, not a minute
    assert main(args) == 0
    first = capsys.readouterr().out
    files = ["table.md", "table.csv", "table.json", "runs.csv", "references.csv"]
    files += [f"{m}_{kind}.png" for m in ("finetune", "ewc") for kind in ("scores", "retention")]
    for name in files:
        assert (out / name).stat().st_size > 0, name
    for name in files[-4:]:
        assert Image.open(out / name).size[0] > 100
    assert "| finetune |" in first and "| ewc |" in first and "## Single-task references" in first

    data = json.loads((out / "table.json").read_text())
    assert data["games"] == ["Pong", "Breakout"] and set(data["methods"]) == {"finetune", "ewc"}
    assert load_config(out / "runs" / "ewc__seed0" / "config.yaml").method.ewc.batches == 4
    run = data["methods"]["ewc"]["runs"][0]
    assert np.array(run["retention_score"]).shape == (3, 2) and run["updates"] > 0 and run["seconds"] > 0
    reference = EventAccumulator(str(out / "runs" / "reference__Pong__seed0" / "tb"))
    reference.Reload()
    assert data["reference"]["Pong"]["seeds"] == [reference.Scalars("eval/Pong/score")[-1].value]
    with (out / "references.csv").open() as f:
        rows = {row["game"]: row for row in csv.DictReader(f)}
    assert (rows["Pong"]["steps"], rows["Breakout"]["steps"]) == ("140", "60")
    pong = (np.array(run["retention_score"])[:, 0] - -20.7) / (data["reference"]["Pong"]["mean"] - -20.7)
    assert np.array(run["retention_normalised"])[:, 0] == pytest.approx(pong)
    raw = " | ".join(" / ".join(f"{v:.1f}" for v in row) for row in run["retention_score"])  # one seed: its own
    assert "## Raw scores after each segment" in first and f"| ewc | {raw} |" in first
    # Worst drop per game, by hand from the normalised matrix: Pong (trained in segments 1 and 3) below its best own
    # score after segment 1 at the later segment ends 2 and 3; Breakout has no scale here (its tiny reference is not
    # above random), so no drop: "–".
    norm = np.array(run["retention_normalised"], dtype=float)
    pong_drop = norm[0, 0] - min(norm[1, 0], norm[2, 0])
    assert np.isnan(norm[:, 1]).all() and np.isfinite(pong_drop)
    per_game = np.array(run["per_game"]["worst_drop"], dtype=float)
    assert per_game[0] == pytest.approx(pong_drop) and np.isnan(per_game[1])
    one_seed = f"{pong_drop:.2f} [{pong_drop:.2f}, {pong_drop:.2f}]"  # one seed: the interval is a point
    assert "## Worst drop per game" in first and f"| ewc | {one_seed} | – |" in first
    # Task inference from the run's own TensorBoard file, read back here tag by tag: the tasks it created, its
    # spurious switches and ARI at the end, and the evaluations that played a trained game with an unknown task.
    ewc_tb = EventAccumulator(str(out / "runs" / "ewc__seed0" / "tb"), size_guidance={"scalars": 0})
    ewc_tb.Reload()
    last = {tag: ewc_tb.Scalars(tag)[-1].value for tag in ("task/n_tasks", "task/spurious_switches", "task/ari")}
    unknown = sum(e.value for e in ewc_tb.Scalars("eval/unrecognised"))
    assert run["task_inference"] == {
        "tasks": last["task/n_tasks"],
        "spurious_switches": last["task/spurious_switches"],
        "ari": pytest.approx(last["task/ari"]),
        "unrecognised": unknown,
    }
    assert (last["task/n_tasks"], unknown) == (2, 0)  # two games, each its own task, every evaluation recognised
    tasks_line = f"| ewc | 1.00, 1.00 | {last['task/spurious_switches']:.1f}, "
    assert "## Task inference" in first and tasks_line in first

    # --rescore scores every checkpoint again instead of reading the logged scores: the same numbers here, where
    # training logged them with today's evaluation code.
    assert main([*args, "--report-only", "--rescore"]) == 0
    capsys.readouterr()
    rescored = json.loads((out / "table.json").read_text())["methods"]["ewc"]["runs"][0]
    assert rescored["retention_score"] == run["retention_score"]
    assert list((out / "runs" / "ewc__seed0" / "eval" / "cache").glob("step_*.json"))

    # --report-only trains nothing and builds the table from the finished runs, saying which seeds are missing.
    finetune = out / "runs" / "finetune__seed0"
    (finetune / MARKER).unlink()
    assert main([*args, "--report-only"]) == 0
    partial = capsys.readouterr().out
    assert "partial table" in partial and "finetune 0/1" in partial and "| ewc |" in partial
    assert "| finetune |" not in partial and "reused" not in partial and "train    " not in partial

    # Second call: the ewc run and the references are reused as they are; finetune, cut before its last segment's
    # checkpoint, is resumed.
    (finetune / "checkpoints" / "step_0000000200.zip").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("[er]*/checkpoints/*.zip")}
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "resume    finetune__seed0" in second and "finished finetune__seed0" in second
    for name in ("ewc__seed0", "reference__Pong__seed0", "reference__Breakout__seed0"):
        assert f"reused   {name}" in second
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (finetune / "checkpoints" / "step_0000000200.zip").is_file()
    assert "resuming" in (out / "logs" / "finetune__seed0.log").read_text()


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main([str(TINY), "--methods", "ewk", "--out", str(tmp_path)]) == 2
    assert "did you mean ewc" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_finished_run_stays_valid_when_only_settings_it_does_not_use_change(tmp_path):
    from agents.evaluation.retention_table import TableError, run_state
    from agents.run.config import save_config
    from agents.run.training import CONFIG_NAME

    def config(*overrides: str):
        return load_config(TINY, ["task.source=oracle", "method.name=ewc", *overrides])

    save_config(config(), tmp_path / CONFIG_NAME)
    # another method's settings and, with oracle task ids, the task inference's do not change what this run trains
    assert run_state(tmp_path, config("method.vcl.kl_weight=0.5", "task.fmn.window=3")) == "partial"
    with pytest.raises(TableError, match=r"method\.ewc\.lam"):
        run_state(tmp_path, config("method.ewc.lam=7.0"))
    save_config(config("task.source=fmn"), tmp_path / CONFIG_NAME)
    with pytest.raises(TableError, match=r"task\.fmn\.window"):
        run_state(tmp_path, config("task.source=fmn", "task.fmn.window=3"))
