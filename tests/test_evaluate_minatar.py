"""scripts/evaluate.py on a real tiny MinAtar run: no human-normalised output, raw or reference-normalised metrics
as the retention table defines them, `complete` for a finished run, task sources written apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.run.config import load_config
from agents.run.training import train
from envs.scores import random_score
from tests.conftest import MINATAR_TINY_AGENT, REPO

pytestmark = pytest.mark.slow
SI, BO = "MinAtar/SpaceInvaders", "MinAtar/Breakout"
EVALUATE = [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--no-progress"]


def _train(run_dir: Path, segments: str, *overrides: str) -> Path:
    tiny = [*MINATAR_TINY_AGENT, "eval.episodes=1", "method.name=none", f"sequence.segments={segments}", *overrides]
    train(load_config(REPO / "configs" / "first_run.yaml", tiny), run_dir)
    return run_dir


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*EVALUATE, *args], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """SpaceInvaders → Breakout → SpaceInvaders (150 agent steps each) and a single-task SpaceInvaders reference."""
    root = tmp_path_factory.mktemp("minatar")
    three = f"[{{game: {SI}, steps: 150}}, {{game: {BO}, steps: 150}}, {{game: {SI}, steps: 150}}]"
    return {
        "run": _train(root / "run", three),
        "reference_si": _train(root / "ref_si", f"[{{game: {SI}, steps: 300}}]", "run.name=ref"),
        "reference_bo": _train(root / "ref_bo", f"[{{game: {BO}, steps: 150}}]", "run.name=ref"),
    }


@pytest.fixture(scope="module")
def raw(runs) -> tuple[subprocess.CompletedProcess, dict]:
    result = _evaluate(str(runs["run"]), "--checkpoints", "segments")
    return result, json.loads((runs["run"] / "eval" / "metrics.json").read_text())


def test_no_human_normalised_output_for_minatar(runs, raw):
    result, metrics = raw
    eval_dir = runs["run"] / "eval"
    assert not (eval_dir / "retention_hns.csv").exists() and not (eval_dir / "total_clipped_hns.png").exists()
    assert "hns" not in json.loads((eval_dir / "retention.json").read_text())
    assert not any("hns" in key for key in metrics)
    assert "HNS" not in result.stdout and "raw score" in result.stdout
    assert metrics["unit"] == "raw" and metrics["complete"] is True  # every segment end of the finished run scored


def test_raw_metrics_follow_the_retention_table_definitions(runs, raw):
    _, metrics = raw
    r = np.array(json.loads((runs["run"] / "eval" / "retention.json").read_text())["score"])
    assert r.shape == (3, 2) and np.allclose(metrics["retention"], r)
    # SpaceInvaders is trained in segments 0 and 2: forgetting compares its best own score with the end;
    # the worst drop is the largest fall below the best own score so far at any later segment end.
    assert metrics["forgetting"][SI] == pytest.approx(max(r[0, 0], r[2, 0]) - r[2, 0])
    assert metrics["worst_drop"][SI] == pytest.approx(max(r[0, 0] - r[1, 0], max(r[0, 0], r[0, 0]) - r[2, 0]))
    assert metrics["forgetting"][BO] == pytest.approx(r[1, 1] - r[2, 1])
    assert metrics["worst_drop"][BO] == pytest.approx(r[1, 1] - r[2, 1])
    assert metrics["forward_transfer"] == pytest.approx(r[0, 1] - random_score(BO))  # zero-shot against random
    assert metrics["random_score"] == {SI: random_score(SI), BO: random_score(BO)}


def test_with_references_the_metrics_are_reference_normalised(runs, raw):
    result = _evaluate(
        str(runs["run"]),
        "--checkpoints",
        "segments",
        "--reference",
        str(runs["reference_si"]),
        str(runs["reference_bo"]),
    )
    metrics = json.loads((runs["run"] / "eval" / "metrics.json").read_text())
    assert metrics["unit"] == "reference" and "reference-normalised score" in result.stdout
    ref = {}
    for game, key in ((SI, "reference_si"), (BO, "reference_bo")):
        events = EventAccumulator(str(runs[key] / "tb"))  # the reference's end score, as its training logged it
        events.Reload()
        ref[game] = events.Scalars(f"eval/{game}/score")[-1].value
    r = np.array(json.loads((runs["run"] / "eval" / "retention.json").read_text())["score"])
    rnd, scale = np.array([random_score(SI), random_score(BO)]), np.array([ref[SI], ref[BO]])
    expected = np.where(scale > rnd, (r - rnd) / np.where(scale > rnd, scale - rnd, 1.0), np.nan)
    np.testing.assert_allclose(np.array(metrics["retention"], dtype=float), expected)


def test_task_sources_write_apart(runs, raw):
    configured = runs["run"] / "eval" / "metrics.json"
    before = configured.read_bytes()
    result = _evaluate(str(runs["run"]), "--checkpoints", "segments", "--task-source", "oracle")
    assert "task ids: oracle" in result.stdout and str(runs["run"] / "eval_oracle") in result.stdout
    oracle = json.loads((runs["run"] / "eval_oracle" / "metrics.json").read_text())
    assert oracle["settings"]["task_source"] == "oracle"
    assert configured.read_bytes() == before  # the configured evaluation's files are left as they were
    assert (runs["run"] / "tb" / "eval_oracle").is_dir() and (runs["run"] / "tb" / "eval").is_dir()


def test_only_the_last_checkpoint_is_not_complete(runs, raw):
    _evaluate(str(runs["run"]), "--checkpoints", "last")
    metrics = json.loads((runs["run"] / "eval" / "metrics.json").read_text())
    assert metrics["complete"] is False
