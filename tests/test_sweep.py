"""Sweeps (agents/run/sweep.py, agents/run/sweep_ray.py, scripts/sweep.py): expansion and validation without Ray;
then real tiny runs as tasks of one local Ray instance: a 2×2 sweep and its re-launch, a worker SIGKILLed and resumed,
Ctrl-C on the script and the re-launch that resumes its runs."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agents.run.checkpoints import checkpoint_problem, list_checkpoints
from agents.run.config import save_config
from agents.run.sweep import (
    SweepError,
    check_existing,
    compare_sweep,
    load_sweep,
    read_progress,
    run_state,
)
from agents.sb3.continual_dqn import CHECKPOINT_FORMAT

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
# 100 agent steps over Pong → Breakout → Pong with 25-step episodes (scores within each segment), checkpoints at the
# segment ends only, a Fisher from 2 minibatches of 8, no live evaluation: ALE games, as the comparison needs HNS.
FAST = {
    "sequence.segments": [
        {"game": "Pong", "steps": 40},
        {"game": "Breakout", "steps": 30},
        {"game": "Pong", "steps": 30},
    ],
    "agent.learning_starts": 16,
    "method.ewc.batches": 2,
    "method.ewc.batch_size": 8,
    "run.checkpoint_every": 0,
    "env.max_episode_frames": 100,
    "eval.enabled": False,
}
# The faults' runs: 2 × 400 agent steps of MinAtar (the MinAtar paper's small network: ~10× cheaper a step than the
# Nature network on 84×84 frames; ~250 steps/s on a free core), a checkpoint every 50. A signal sent after the first
# checkpoint thus finds a run between two checkpoints with seconds to spare before its end.
MINATAR = {
    "sequence.segments": [{"game": "MinAtar/Breakout", "steps": 400}, {"game": "MinAtar/Freeway", "steps": 400}],
    "agent.network": "minatar",
    "agent.replay": "sb3",
    "agent.learning_starts": 32,
    "run.checkpoint_every": 50,
    "eval.enabled": False,
}


def write_sweep(tmp_path: Path, **fields) -> Path:
    axes = {"method.name": ["none", "ewc"], "run.seed": [0, 1]}
    data = {"base": TINY, "overrides": FAST, "axes": axes, "evaluate": "last", **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- expansion and validation (no Ray) ---------------------------------------------------------------------------
def test_axes_expand_into_named_validated_runs(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, resources={"num_cpus": 2}))
    assert [r.name for r in sweep.runs] == ["none__seed0", "none__seed1", "ewc__seed0", "ewc__seed1"]
    assert [(r.config.method.name, r.config.run.seed, r.config.run.name) for r in sweep.runs] == [
        ("none", 0, "none"),
        ("none", 1, "none"),
        ("ewc", 0, "ewc"),
        ("ewc", 1, "ewc"),
    ]
    run = sweep.runs[0]
    assert run.total_steps == 100 and run.config.method.ewc.batches == 2 and not run.config.run.progress_bar
    assert (sweep.num_cpus, sweep.num_gpus, sweep.name) == (2, 0, "sweep")


def test_axis_mapping_labels_values_and_lists_reach_nested_keys(tmp_path: Path) -> None:
    pong = [{"game": "Pong", "steps": 30}]
    freeway = [{"game": "Freeway", "steps": 40}]
    axes = {"sequence.segments": {"pong": pong, "freeway": freeway}, "method.ewc.lam": [1, 2.5]}
    sweep = load_sweep(write_sweep(tmp_path, axes=axes))
    names = ["pong_1__seed0", "pong_2.5__seed0", "freeway_1__seed0", "freeway_2.5__seed0"]
    assert [r.name for r in sweep.runs] == names
    assert sweep.runs[1].config.sequence.segments == pong and sweep.runs[1].config.method.ewc.lam == 2.5
    assert sweep.runs[3].total_steps == 40


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"axes": {"agent.bach_size": [32]}}, "unknown config key 'agent.bach_size'; did you mean batch_size"),
        ({"axes": {"run.seed": []}}, "axis 'run.seed' is empty"),
        ({"axes": {}}, "axes must be a non-empty mapping"),
        ({"axes": {"agent.batch_size": [32, -1]}}, "agent.batch_size"),
        ({"axes": {"sequence.segments.0.game": ["Pongg"]}}, "'Pongg'"),
        ({"base": "configs/nope.yaml"}, "base config 'configs/nope.yaml' does not exist"),
        ({"seeds": 3}, "unknown key(s) seeds"),
        ({"axes": {"method.ewc.lam": {"a_b": 1, "a": 2}, "method.mas.lam": {"c": 1, "b_c": 2}}}, "share the run dir"),
        ({"resources": {"gpus": 1}}, "resources: unknown key(s) gpus"),
    ],
)
def test_bad_sweep_files_are_refused(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(SweepError) as err:
        load_sweep(write_sweep(tmp_path, **fields))
    assert message in str(err.value)


def test_run_state_reads_the_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "r"
    assert run_state(run, 100) == "new"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    assert run_state(run, 100) == "restart"  # stopped before its first checkpoint
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_0000000050.zip").write_bytes(b"x")
    assert run_state(run, 100) == "resume"
    (run / "checkpoints" / "step_0000000100.zip").write_bytes(b"not a zip")
    assert run_state(run, 100) == "resume"  # a damaged last checkpoint is not a finished run


def test_a_run_directory_of_another_config_is_refused(tmp_path: Path) -> None:
    none0, _, ewc0, _ = load_sweep(write_sweep(tmp_path)).runs
    (tmp_path / "r").mkdir()
    save_config(none0.config, tmp_path / "r" / "config.yaml")
    check_existing(tmp_path / "r", none0)  # the same run: fine
    with pytest.raises(SweepError, match=r"\(method\.name, run\.name differ\)"):
        check_existing(tmp_path / "r", ewc0)


def test_script_exits_2_and_starts_nothing_on_a_bad_sweep(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad = write_sweep(tmp_path, axes={"agent.bach_size": [32]})
    cmd = [sys.executable, str(REPO / "scripts" / "sweep.py"), str(bad)]
    result = subprocess.run([*cmd, "--sweep-dir", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "unknown config key 'agent.bach_size'" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("fields", [{"axes": {"run.seed": []}}, {"base": "missing.yaml"}, {"axes": "run.seed"}])
def test_script_main_refuses_bad_sweeps_in_process(tmp_path: Path, capsys, fields: dict) -> None:
    main = runpy.run_path(str(REPO / "scripts" / "sweep.py"))["main"]
    out = tmp_path / "out"
    assert main([str(write_sweep(tmp_path, **fields)), "--sweep-dir", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not out.exists()


# --- on a local Ray instance -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for every test here (starting one costs 5-10 s); its workers stay warm from test to test."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_2x2_sweep_finishes_aggregates_and_a_relaunch_starts_nothing(local_ray, tmp_path: Path) -> None:
    from agents.run.sweep_ray import run_sweep

    sweep = load_sweep(write_sweep(tmp_path))
    lines: list[str] = []
    states = run_sweep(sweep, tmp_path / "sw", refresh_s=5, echo=lines.append)
    assert states == dict.fromkeys(["none__seed0", "none__seed1", "ewc__seed0", "ewc__seed1"], "done"), lines
    for name in states:
        run_dir = tmp_path / "sw" / name
        assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [40, 70, 100]  # segment ends
        progress = read_progress(run_dir)
        assert progress["status"] == "finished" and progress["step"] == 100
        assert sorted(progress["scores"]) == ["Breakout", "Pong"]  # the live view's latest score per game
        assert [a["action"] for a in progress["attempts"]] == ["new"]
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert (run_dir / "tb").is_dir() and saved["run"]["seed"] == int(name[-1])

    text = compare_sweep(sweep, tmp_path / "sw")
    rows = json.loads((tmp_path / "sw" / "comparison" / "comparison.json").read_text())
    assert sorted((r["group"], r["seed"]) for r in rows) == [("ewc", 0), ("ewc", 1), ("none", 0), ("none", 1)]
    for r in rows:
        low, high = r["group_iqm_end_hns_ci"]
        assert low <= r["group_iqm_end_hns"] <= high
    assert "group IQM end HNS" in text

    stamps = {name: (tmp_path / "sw" / name / "progress.json").stat().st_mtime_ns for name in states}
    again: list[str] = []
    assert run_sweep(sweep, tmp_path / "sw", echo=again.append) == states
    assert again == [f"sweep 'sweep': 4 runs (method.name (2) × run.seed (2)) from {TINY}; 0 new, 0 to resume, 4 done"]
    assert stamps == {name: (tmp_path / "sw" / name / "progress.json").stat().st_mtime_ns for name in states}


@pytest.mark.slow
def test_a_sigkilled_worker_is_resumed_from_its_checkpoint(local_ray, tmp_path: Path) -> None:
    from agents.run.sweep_ray import run_sweep

    sweep = load_sweep(write_sweep(tmp_path, overrides=MINATAR, axes={"run.seed": [3]}, evaluate="none"))
    run_dir = tmp_path / "sw" / "tiny__seed3"
    killed: list[int] = []

    def kill_after_first_checkpoint(running: dict) -> None:
        progress = running.get("tiny__seed3")
        if not killed and progress and progress["status"] == "running" and list_checkpoints(run_dir / "checkpoints"):
            os.kill(progress["pid"], signal.SIGKILL)
            killed.append(progress["step"])

    states = run_sweep(sweep, tmp_path / "sw", poll_s=0.1, on_poll=kill_after_first_checkpoint, echo=lambda _: None)
    assert killed and killed[0] < 800, "the run finished before it could be killed"
    assert states == {"tiny__seed3": "done"}
    assert list_checkpoints(run_dir / "checkpoints")[-1][0] == 800
    attempts = read_progress(run_dir)["attempts"]
    assert [a["action"] for a in attempts] == ["new", "resume"]
    assert attempts[1]["from_step"] >= 50 and attempts[1]["pid"] != attempts[0]["pid"]


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_resumably_and_a_relaunch_finishes_every_run(local_ray, tmp_path: Path) -> None:
    """Ctrl-C: SIGINT to the script while one run trains and the other waits for its CPUs (each takes both of this
    Ray's). The script joins this module's Ray: a Ray of its own would only add its start-up."""
    from agents.run.sweep_ray import run_sweep

    # 2 × 1,500 steps: seconds of margin between the first checkpoint (step 50) and the end, on a free core too
    games = [segment["game"] for segment in MINATAR["sequence.segments"]]
    longer = {**MINATAR, "sequence.segments": [{"game": game, "steps": 1500} for game in games]}
    path = write_sweep(
        tmp_path, overrides=longer, axes={"run.seed": [5, 6]}, resources={"num_cpus": 2}, evaluate="none"
    )
    out = tmp_path / "sw"
    runs = [out / "tiny__seed5", out / "tiny__seed6"]
    address = local_ray.get_runtime_context().gcs_address
    script = [sys.executable, str(REPO / "scripts" / "sweep.py"), str(path)]
    cmd = [*script, "--sweep-dir", str(out), "--refresh", "1", "--address", address]
    # SIGINT at its default in the driver: a test run started in the background (nohup, a CI runner) ignores it, and
    # the driver would inherit that, as a terminal's foreground job does not
    driver = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600  # a bound for a hung driver, not a timing (a loaded CI machine is slow)
    while not any(list_checkpoints(run / "checkpoints") for run in runs):  # a run past its first checkpoint
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.1)
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    assert "Ctrl-C: stopping the runs" in stdout and "Traceback" not in stdout + stderr
    assert f"stopped; every run is resumable: {sys.executable} scripts/sweep.py {path} --sweep-dir {out}" in stdout

    trained, waited = sorted(runs, key=lambda run: not (run / "checkpoints").is_dir())
    progress, (step, newest) = read_progress(trained), list_checkpoints(trained / "checkpoints")[-1]
    assert progress["status"] == "SIGINT" and progress["step"] == step < 3000  # a checkpoint at the step it stopped
    assert checkpoint_problem(newest, CHECKPOINT_FORMAT) is None and run_state(trained, 3000) == "resume"
    assert run_state(waited, 3000) == "new"
    assert (
        f"{trained.name}: resume (stopped at step {step})" in stdout and f"{waited.name}: new (not started)" in stdout
    )

    lines: list[str] = []
    assert run_sweep(load_sweep(path), out, echo=lines.append) == {"tiny__seed5": "done", "tiny__seed6": "done"}
    assert lines[0].endswith("1 new, 1 to resume, 0 done")
    assert [(a["action"], a["from_step"]) for a in read_progress(trained)["attempts"]] == [("new", 0), ("resume", step)]
    assert [(a["action"], a["from_step"]) for a in read_progress(waited)["attempts"]] == [("new", 0)]
    assert all(list_checkpoints(run / "checkpoints")[-1][0] == 3000 for run in runs)
