"""End-to-end: scripts/evaluate.py on tiny real runs: files, shapes, agreement with the live evaluation, comparison."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py"), str(REPO / "configs" / "tiny.yaml")]
EVALUATE = [sys.executable, str(REPO / "scripts" / "evaluate.py")]


def _run(command: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def _train(run_dir: Path, *overrides: str) -> Path:
    result = _run(TRAIN, *overrides, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def _tensorboard(directory: Path) -> EventAccumulator:
    acc = EventAccumulator(str(next(directory.glob("events.out.tfevents.*"))), size_guidance={"images": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two seeds of the tiny Pong → Breakout → Pong run and a single-task Breakout reference."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "seed0": _train(root / "seed0"),
        "seed1": _train(root / "seed1", "run.seed=1"),
        "reference": _train(root / "breakout", "sequence.segments=[{game: Breakout, steps: 150}]", "run.name=ref"),
    }


@pytest.fixture(scope="module")
def evaluated(runs, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("comparison")
    result = _run(
        EVALUATE, str(runs["seed0"]), str(runs["seed1"]), "--reference", str(runs["reference"]), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return result, out


def test_writes_the_retention_matrix_as_csv_and_json_with_one_row_per_segment(runs, evaluated):
    eval_dir = runs["seed0"] / "eval"
    with (eval_dir / "retention.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["segment", "trained_game", "step", "Pong", "Breakout"]
    assert [row[:3] for row in rows[1:]] == [["0", "Pong", "200"], ["1", "Breakout", "350"], ["2", "Pong", "500"]]
    data = json.loads((eval_dir / "retention.json").read_text())
    assert np.array(data["score"]).shape == (3, 2) and np.array(data["hns"]).shape == (3, 2)
    assert np.allclose(np.array(data["score"]), np.array([row[3:] for row in rows[1:]], dtype=float))
    assert data["checkpoints"]["steps"] == [200, 350, 500]
    assert data["settings"] == {"episodes": 1, "epsilon": 0.05, "task_source": "configured", "seed": 0}
    hns = np.array(data["hns"])
    pong = np.array(data["score"])[:, 0]
    assert np.allclose(hns[:, 0], (pong + 20.7) / (14.6 + 20.7))


def test_metrics_follow_the_matrix(runs, evaluated):
    eval_dir = runs["seed0"] / "eval"
    hns = np.array(json.loads((eval_dir / "retention.json").read_text())["hns"])
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["games"] == ["Pong", "Breakout"] and metrics["complete"] and metrics["unit"] == "hns"
    assert metrics["end_mean"] == pytest.approx(hns[-1].mean())
    assert metrics["end_total_clipped_hns"] == pytest.approx(np.clip(hns[-1], 0, 1).sum())
    # Pong: best after its segments 0 and 2 minus its end score; Breakout: after segment 1 minus the end.
    assert metrics["forgetting"]["Pong"] == pytest.approx(max(hns[0, 0], hns[2, 0]) - hns[2, 0])
    assert metrics["forgetting"]["Breakout"] == pytest.approx(hns[1, 1] - hns[2, 1])
    # Worst drop: Pong's fall at segment 1 below its segment-0 score, or at 2 below it; Breakout's at 2 below 1.
    assert metrics["worst_drop"]["Pong"] == pytest.approx(max(hns[0, 0] - hns[1, 0], hns[0, 0] - hns[2, 0]))
    assert metrics["worst_drop"]["Breakout"] == pytest.approx(hns[1, 1] - hns[2, 1])
    assert metrics["backward_transfer"] == pytest.approx(hns[2, 1] - hns[1, 1])  # Pong is trained last
    assert metrics["forward_transfer"] == pytest.approx(hns[0, 1])  # Breakout zero-shot after Pong vs random
    # The reference's score at its end, as its own training logged it (same evaluation settings and seeds).
    reference = _tensorboard(runs["reference"] / "tb").Scalars("eval/Breakout/hns")[-1].value
    assert metrics["forward_transfer_reference"] == pytest.approx(hns[1, 1] - reference)


def test_segment_end_rows_repeat_what_training_logged_live(runs, evaluated):
    live = _tensorboard(runs["seed0"] / "tb")
    data = json.loads((runs["seed0"] / "eval" / "retention.json").read_text())
    for j, game in enumerate(["Pong", "Breakout"]):
        logged = {e.step: e.value for e in live.Scalars(f"eval/{game}/score")}
        assert [logged[step] for step in (200, 350, 500)] == pytest.approx([row[j] for row in data["score"]])
    assert "eval/total_clipped_hns" in live.Tags()["scalars"]


def test_plots_and_tensorboard_image(runs, evaluated):
    eval_dir = runs["seed0"] / "eval"
    for name in ("scores.png", "total_clipped_hns.png", "retention.png"):
        width, height = Image.open(eval_dir / name).size
        assert width > 300 and height > 200, name
    acc = _tensorboard(runs["seed0"] / "tb" / "eval")
    assert "eval/retention_matrix" in acc.Tags()["images"]
    assert [e.step for e in acc.Scalars("eval/Pong/score")] == [200, 350, 500]


def test_runs_are_compared_in_one_table_with_iqm_and_confidence_intervals(evaluated):
    result, out = evaluated
    assert "group IQM end HNS [95% CI]" in result.stdout
    rows = json.loads((out / "comparison.json").read_text())
    assert [(r["group"], r["seed"]) for r in rows] == [("tiny", 0), ("tiny", 1)]
    low, high = rows[0]["group_iqm_end_hns_ci"]
    assert low <= rows[0]["group_iqm_end_hns"] <= high
    assert (out / "comparison.csv").is_file() and Image.open(out / "comparison.png").size[0] > 300


def test_a_second_evaluation_reuses_the_cached_results(runs, evaluated):
    cached = sorted((runs["seed0"] / "eval" / "cache").glob("step_*.json"))
    assert len(cached) == 3
    before = [p.stat().st_mtime_ns for p in cached]
    assert _run(EVALUATE, str(runs["seed0"]), "--checkpoints", "segments").returncode == 0
    assert [p.stat().st_mtime_ns for p in cached] == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "does not exist"),
        (["{seed0}", "--checkpoints", "201"], "no checkpoint at step(s) [201]; available: 200, 350, 500"),
        (["{seed0}", "--episodes", "0"], "--episodes must be >= 1"),
        (["{seed0}", "--reference", "{seed1}"], "a reference must be a single-task run"),
        (["{empty}"], "holds no config.yaml"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(runs, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", **runs}
    result = _run(EVALUATE, *(arg.format(**paths) for arg in args))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
