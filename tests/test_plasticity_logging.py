"""agents/run/plasticity.py: a tiny real MinAtar run logs the plasticity diagnostics, read back from TensorBoard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents.evaluation.retention_table import end_of_run_plasticity
from scripts.bench_speed import main as bench_speed
from tests.conftest import REPO
from tests.test_train_script import _scalars

pytestmark = pytest.mark.slow
STEPS = (200, 150, 150)  # Breakout, SpaceInvaders, Breakout again
SHORT = [
    "sequence.segments=[{game: MinAtar/Breakout, steps: 200}, {game: MinAtar/SpaceInvaders, steps: 150}, "
    "{game: MinAtar/Breakout, steps: 150}]",
    "agent.buffer_size=1000",
    "agent.learning_starts=50",
    "agent.exploration_steps=200",
    "env.minatar.max_episode_steps=50",
    "eval.enabled=false",
    "run.checkpoint_every=0",
    "run.progress_bar=false",
    "log.probe_size=64",
]


def _run(run_dir: Path, every: int) -> dict[str, list[tuple[int, float]]]:
    command = [sys.executable, str(REPO / "scripts" / "train.py"), str(REPO / "configs" / "minatar.yaml"), *SHORT]
    command += [f"log.plasticity_every={every}", "--run-dir", str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return _scalars(run_dir)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plasticity")


@pytest.fixture(scope="module")
def runs(root) -> tuple[dict, dict]:
    return _run(root / "every100", 100), _run(root / "switches", 0)


def test_the_diagnostics_are_in_the_event_file_at_the_cadence_and_at_switches(runs) -> None:
    scalars, _ = runs
    # the probe (64 states) exists from step 64 on; cadence 100; the switches are seen one step after 200 and 350
    assert [step for step, _ in scalars["plasticity/dormant"]] == [100, 200, 201, 300, 351, 400, 500]
    for tag in (
        "dormant/layer_0",
        "dormant/layer_1",
        "effective_rank",
        "stable_rank",
        "feature_norm",
        "weight_norm",
        "weight_norm/layer_2",
        "distance",
        "distance/layer_1",
        "grad_norm",
        "grad_norm/layer_0",
        "churn",
    ):
        assert f"plasticity/{tag}" in scalars, tag
    for tag in ("dormant", "dormant/layer_0", "dormant/layer_1", "churn", "churn_other_tasks"):
        assert all(0.0 <= v <= 1.0 for _, v in scalars[f"plasticity/{tag}"]), tag
    assert all(1 <= v <= 64 and v == int(v) for _, v in scalars["plasticity/effective_rank"])
    assert all(v >= 1.0 for _, v in scalars["plasticity/stable_rank"])  # ‖Φ‖_F² ≥ ‖Φ‖_2²


def test_distance_counts_from_the_start_of_the_current_task(runs) -> None:
    distance = dict(runs[0]["plasticity/distance"])
    assert 0 < distance[100] < distance[200] <= distance[201]  # the first task moves away from its start
    assert distance[300] < distance[201]  # step 300 counts from the switch at 200, not from the run's start


def test_diagnostics_leave_the_training_as_it_was(runs) -> None:
    every100, switches = runs
    assert [step for step, _ in switches["plasticity/dormant"]] == [201, 351]
    # the extra dumps log train/loss at more steps; where both runs logged it, it is the same update's same loss
    with_diagnostics, without = dict(every100["train/loss"]), dict(switches["train/loss"])
    common = sorted(with_diagnostics.keys() & without.keys())
    assert len(common) >= 5 and common[-1] > 400
    assert [with_diagnostics[s] for s in common] == [without[s] for s in common]


def test_the_retention_table_reads_the_last_dormant_fraction_and_effective_rank(runs, root) -> None:
    last = end_of_run_plasticity(root / "every100" / "tb")
    assert last == {
        "dormant": runs[0]["plasticity/dormant"][-1][1],
        "effective_rank": runs[0]["plasticity/effective_rank"][-1][1],
    }


def test_plot_plasticity_draws_the_runs_and_prints_their_last_values(runs, root, tmp_path) -> None:
    script = [sys.executable, str(REPO / "scripts" / "plot_plasticity.py")]
    out = tmp_path / "figure.png"
    command = [*script, str(root / "every100"), str(root / "switches"), "--labels", "every100", "switches"]
    result = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 10_000
    dormant = runs[0]["plasticity/dormant"]
    mean = sum(v for _, v in dormant) / len(dormant)
    assert f"| every100 | {dormant[-1][1]:.3g} ({mean:.3g}) |" in result.stdout
    bad = subprocess.run([*script, str(tmp_path), "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "not run directories" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_speed_times_the_plain_agent_with_the_diagnostics(capsys: pytest.CaptureFixture[str]) -> None:

    # learning starts at 300 transitions: the probe (256 states) exists when the timed span starts
    args = ["--minatar", "--steps", "40", "--warmup", "20", "--learning-starts", "300", "--buffer-size", "1000"]
    args += ["--setup-steps", "120", "--repeats", "1", "--threads", "1", "--plasticity-every", "20"]
    assert bench_speed([*args, "--variants", "sb3,plain,plain_plasticity,full"]) == 0
    out = capsys.readouterr().out
    ratio = next(line for line in out.splitlines() if line.startswith("ratio_plasticity_vs_plain="))
    assert float(ratio.split("=")[1].split()[0]) > 0
    share = next(line for line in out.splitlines() if line.startswith("diagnostics_cpu_share="))
    assert 0 < float(share.split("=")[1].split()[0]) < 1  # two measurements in the 40-step span: some CPU time
