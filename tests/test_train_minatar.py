"""End-to-end: scripts/train.py on configs/minatar.yaml cut to a few hundred agent steps, then --resume."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.run.checkpoints import list_checkpoints
from tests.conftest import REPO
from tests.test_train_script import _scalars

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]
STEPS = (150, 100, 100, 100, 100, 100)  # Breakout, SpaceInvaders, Freeway, then each again
SHORT = [
    *(f"sequence.segments.{i}.steps={steps}" for i, steps in enumerate(STEPS)),
    "agent.buffer_size=1000",
    "agent.learning_starts=50",
    "agent.exploration_steps=200",
    "env.minatar.max_episode_steps=50",  # Freeway's episodes (2,500 steps) end within the tiny segments
    "eval.episodes=1",
    "run.checkpoint_every=100",
    "run.progress_bar=false",
]
GAMES = ("MinAtar/Breakout", "MinAtar/SpaceInvaders", "MinAtar/Freeway")


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def minatar_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "minatar"
    result = _train(str(REPO / "configs" / "minatar.yaml"), *SHORT, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_a_minatar_run_writes_checkpoints_and_tensorboard_scores(minatar_run):
    ends = [150, 250, 350, 450, 550, 650]
    assert [step for step, _ in list_checkpoints(minatar_run / "checkpoints")] == sorted({*ends, *range(100, 700, 100)})
    scalars = _scalars(minatar_run)
    for game in GAMES:
        assert scalars[f"game/{game}/score"], f"no training score for {game}"
        assert len(scalars[f"eval/{game}/score"]) == len(ends)
        assert f"game/{game}/hns" not in scalars and f"eval/{game}/hns" not in scalars  # MinAtar has no human score
    for tag in ("train/loss", "task/0/epsilon", "task/2/epsilon", "time/frames_per_second", "sequence/segment"):
        assert tag in scalars, tag
    assert {v for _, v in scalars["sequence/segment"]} == set(map(float, range(len(STEPS))))


def test_a_minatar_run_resumes_from_its_newest_checkpoint(minatar_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(minatar_run, run_dir)
    for step, path in list_checkpoints(run_dir / "checkpoints"):
        if step > 300:
            path.unlink()  # as if the run had been killed at step 300
    result = _train("--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")][-3:] == [550, 600, 650]
    assert max(s for s, _ in _scalars(run_dir)["sequence/segment"]) > 300
