"""What scripts/train.py prints while it runs: switch, evaluation, resume and summary lines, and the progress bar.

One tiny real run (Pong 0-200, Breakout 200-350, Pong 350-500, oracle tasks), resumed from step 300, then resumed
again once finished. Printed evaluation scores are checked against the TensorBoard events of the same run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.run.checkpoints import list_checkpoints
from agents.run.config import ConfigError, load_config
from agents.run.training import new_run_dir, train
from tests.conftest import REPO

pytestmark = pytest.mark.slow
TINY = str(REPO / "configs" / "tiny.yaml")
# Breakout's first evaluation comes before its training: a task the agent does not have yet, said "new"
EVAL_LINE = re.compile(
    r"^\[step (\d+)\] evaluation: Pong (-?[\d.]+) \(task 0\), Breakout (-?[\d.]+) \(task 1(: new)?\)"
)


def _train(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)


def _files(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of the run with its size and modification time."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("live") / "run"
    result = _train(TINY, "run.checkpoint_every=100", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_a_line_at_the_start_and_at_each_switch(run):
    lines = [line for line in run[1].stdout.splitlines() if "] start: " in line or "] switch: " in line]
    assert lines == [
        "[step 0] start: game Pong (segment 1/3), task 0",
        "[step 200] switch: game Breakout (segment 2/3), task 1 (new)",
        "[step 350] switch: game Pong (segment 3/3), task 0",  # a task seen before: not new
    ]


def test_a_line_at_each_evaluation_with_the_scores_tensorboard_holds(run):
    run_dir, result = run
    printed = [EVAL_LINE.match(line) for line in result.stdout.splitlines() if "evaluation:" in line]
    assert all(printed) and [int(m[1]) for m in printed] == [200, 350, 500]
    acc = EventAccumulator(str(run_dir / "tb")).Reload()
    for game, group in (("Pong", 2), ("Breakout", 3)):
        logged = [(e.step, e.value) for e in acc.Scalars(f"eval/{game}/score")]
        assert logged == [(int(m[1]), pytest.approx(float(m[group]), abs=0.05)) for m in printed]


def test_summary_gives_steps_per_second(run):
    match = re.search(r"finished: agent step 500; 500 steps in (\d+) s, ([\d.]+) steps/s", run[1].stdout)
    assert match, run[1].stdout
    seconds, rate = int(match[1]), float(match[2])
    assert rate > 0 and abs(500 / rate - seconds) <= 1  # seconds are rounded to whole ones


def test_resume_says_what_it_resumed_and_the_bar_counts_the_whole_run(run, tmp_path):
    run_dir = tmp_path / "resumed"
    shutil.copytree(run[0], run_dir)
    for step, path in list_checkpoints(run_dir / "checkpoints"):
        if step > 300:
            path.unlink()  # as if the run had been killed just after step 300
    result = _train("--resume", str(run_dir), "run.progress_bar=true")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert f"resumed {run_dir / 'checkpoints' / 'step_0000000300.zip'} at agent step 300 of 500" in out
    assert "[step 300] start: game Breakout (segment 2/3), task 1" in out
    assert "[step 350] switch: game Pong (segment 3/3), task 0" in out
    assert [int(m[1]) for m in map(EVAL_LINE.match, out) if m] == [350, 500]
    assert re.search(r"finished: agent step 500 \(resumed at 300\); 200 steps in", result.stdout)
    # tqdm writes the bar to stderr: it starts at 300 of the whole 500 and shows game, segment, task and score.
    assert "300/500" in result.stderr and "500/500" in result.stderr and "/200" not in result.stderr
    assert "Pong seg 3/3 task 0 score" in result.stderr


def test_resuming_a_finished_run_says_so_and_writes_nothing(run):
    run_dir = run[0]
    before = _files(run_dir)
    result = _train("--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert f"run already finished: {run_dir / 'checkpoints' / 'step_0000000500.zip'} is at agent step 500 of 500" in (
        result.stdout
    )
    assert "finished: agent step" not in result.stdout
    assert _files(run_dir) == before  # no new TensorBoard event file, no checkpoint


class _ThreadsSeen(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def _on_step(self) -> bool:
        self.seen.add(torch.get_num_threads())
        return True


@pytest.mark.parametrize("threads", [2, 1])
def test_run_threads_is_applied_while_training(tmp_path, threads):
    short = ["sequence.segments.0.steps=8", "sequence.segments.1.steps=4", "sequence.segments.2.steps=4"]
    config = load_config(TINY, [*short, "eval.enabled=false", f"run.threads={threads}"])
    torch.set_num_threads(3 - threads)  # the other value, so that the run must change it
    seen = _ThreadsSeen()
    try:
        train(config, tmp_path / "run", callbacks=[seen])
    finally:
        torch.set_num_threads(1)  # as tests/conftest.py pins it
    assert seen.seen == {threads}


def test_run_threads_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"run\.threads must be >= 0"):
        load_config(TINY, ["run.threads=-1"])


def test_threads_option_is_run_threads_and_a_bad_value_exits_2(tmp_path):
    result = _train(TINY, "--threads", "-1", "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2 and "run.threads must be >= 0, got -1" in result.stderr
    assert not (tmp_path / "r").exists()


def test_help_states_the_run_directory_the_code_makes():
    help_text = " ".join(_train("--help").stdout.split())
    assert "(default: runs/<run.name>__seed<run.seed>__<YYYYmmdd-HHMMSS>)" in help_text
    made = new_run_dir(load_config(TINY, ["run.name=mine", "run.seed=3"]))
    assert re.fullmatch(r"runs/mine__seed3__\d{8}-\d{6}", made.as_posix())
