"""End-to-end: scripts/train.py on real games with tiny budgets, TensorBoard events read back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.run.checkpoints import list_checkpoints
from tests.conftest import REPO

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every event file in the run's TensorBoard directory."""
    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = _train(str(REPO / "configs" / "tiny.yaml"), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert f"tensorboard --logdir {run_dir / 'tb'}" in result.stdout
    return run_dir


def test_tensorboard_has_a_score_for_each_game_and_the_training_signals(tiny_run):
    scalars = _scalars(tiny_run)
    for game in ("Pong", "Breakout"):
        scores = scalars[f"game/{game}/score"]
        assert scores, f"no score for {game}"
        assert len(scalars[f"game/{game}/hns"]) == len(scores)
    # Pong's scores come from both its segments (steps 0-200 and 350-500), Breakout's from 200-350 only.
    assert min(s for s, _ in scalars["game/Pong/score"]) <= 200 and max(s for s, _ in scalars["game/Pong/score"]) > 350
    assert all(200 < s <= 350 for s, _ in scalars["game/Breakout/score"])
    # Raw scores, not clipped ones: a Pong episode of 100 agent steps loses points, HNS follows the DQN Zoo table.
    for (_, score), (_, hns) in zip(scalars["game/Pong/score"], scalars["game/Pong/hns"], strict=True):
        assert hns == pytest.approx((score + 20.7) / (14.6 + 20.7), abs=1e-5)
    for tag in ("train/loss", "task/0/epsilon", "task/1/epsilon", "time/fps", "sequence/segment"):
        assert tag in scalars, tag
    assert {v for _, v in scalars["sequence/segment"]} == {0.0, 1.0, 2.0}


def test_run_directory_holds_config_and_segment_checkpoints(tiny_run):
    assert (tiny_run / "config.yaml").is_file()
    assert [step for step, _ in list_checkpoints(tiny_run / "checkpoints")] == [200, 350, 500]
    tags = EventAccumulator(str(next((tiny_run / "tb").glob("events.*")))).Reload().Tags()
    assert "config/text_summary" in tags["tensors"]


def test_resume_continues_from_the_newest_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    config = str(REPO / "configs" / "tiny.yaml")
    assert _train(config, "run.checkpoint_every=100", "--run-dir", str(run_dir)).returncode == 0
    for step, path in list_checkpoints(run_dir / "checkpoints"):
        if step > 300:
            path.unlink()  # as if the run had been killed at step 300
    result = _train("--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [100, 200, 300, 350, 400, 500]
    steps = [s for s, _ in _scalars(run_dir)["sequence/segment"]]
    assert max(steps) > 300  # the resumed part logged into the same TensorBoard directory


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["configs/tiny.yaml", "sequence.segments.0.game=Pongg"], "Pong"),
        (["configs/tiny.yaml", "agent.bach_size=3"], "did you mean batch_size"),
        (["configs/missing.yaml"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, message, tmp_path):
    result = _train(*args, "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_existing_run_directory_is_refused(tiny_run):
    before = sorted(p.name for p in tiny_run.rglob("*"))
    result = _train(str(REPO / "configs" / "tiny.yaml"), "--run-dir", str(tiny_run))
    assert result.returncode == 2 and "--resume" in result.stderr and "--overwrite" in result.stderr
    assert sorted(p.name for p in tiny_run.rglob("*")) == before


def test_ewc_run_logs_penalties_per_task_and_importance_statistics(tmp_path):
    run_dir = tmp_path / "ewc"
    result = _train(
        str(REPO / "configs" / "tiny.yaml"),
        "method.name=ewc",
        "method.ewc.batches=5",
        "--run-dir",
        str(run_dir),
    )
    assert result.returncode == 0, result.stderr
    scalars = _scalars(run_dir)
    # Pong is left at step 200 (anchor 0, active on Breakout), Breakout at 350 (anchor 1, active on Pong's revisit).
    assert all(200 < step <= 350 for step, _ in scalars["train/penalty/ewc/task_0"])
    assert all(step > 350 for step, _ in scalars["train/penalty/ewc/task_1"])
    for tag in ("importance_mean", "importance_max", "lambda", "seconds"):
        assert len(scalars[f"consolidation/ewc/{tag}"]) == 2, tag
    acc = EventAccumulator(str(next((run_dir / "tb").glob("events.*"))))
    assert "consolidation/ewc/importance" in acc.Reload().Tags()["histograms"]


def test_inferred_tasks_run_end_to_end_and_log_their_agreement_with_the_games(tmp_path):
    """task.source=fmn: the agent is never told the game; the logger scores the inference against the true games."""
    run_dir = tmp_path / "fmn"
    overrides = [
        "task.source=fmn",
        "sequence.segments.0.steps=400",
        "sequence.segments.2.steps=300",
        "eval.enabled=false",
    ]
    result = _train(str(REPO / "configs" / "tiny.yaml"), *overrides, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    scalars = _scalars(run_dir)
    assert max(v for _, v in scalars["task/n_tasks"]) == 2  # Pong and Breakout; the Pong revisit is recognised
    assert scalars["task/true_switches"][-1][1] == 2 and scalars["task/detected_switches"][-1][1] == 2
    assert all(delay <= 100 for _, delay in scalars["task/switch_delay"])
    assert scalars["task/ari"][-1][1] > 0.6  # ~50 of the 850 steps fall in the two detection delays
    assert scalars["replay/bytes_allocated"][-1][1] > 0 and "replay/task_1/size" in scalars
