"""Runs survive interruption and bad input: signals, SIGKILL at any moment, damaged checkpoints, determinism."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.run.checkpoints import checkpoint_problem, list_checkpoints, write_atomically
from agents.run.rng import capture_rng_state, restore_rng_state
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import CHECKPOINT_FORMAT
from tests.conftest import REPO

TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]
TINY = str(REPO / "configs" / "tiny.yaml")
QUIET = ["eval.enabled=false"]


def _train_main():
    spec = importlib.util.spec_from_file_location("train_script", REPO / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _digest(directory: Path) -> dict[str, str]:
    """Content hash of every file under ``directory``: proves nothing was lost or overwritten."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reliability") / "run"
    result = subprocess.run(  # overrides after --run-dir, as a user may type them
        [*TRAIN, TINY, "--run-dir", str(run_dir), *QUIET, "run.checkpoint_every=100"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "checkpoint_every: 100" in (run_dir / "config.yaml").read_text()
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


# --- bad input: one paragraph, exit 2, no traceback, nothing written or lost ------------------------------------
def _damage(kind: str, run_dir: Path) -> None:
    checkpoints = [p for _, p in list_checkpoints(run_dir / "checkpoints")]
    if kind == "missing":
        for p in checkpoints:
            p.unlink()
    for p in checkpoints if kind in ("truncated", "corrupt", "format") else []:
        data = p.read_bytes()
        if kind == "truncated":
            p.write_bytes(data[: len(data) // 2])
        elif kind == "corrupt":
            p.write_bytes(data[:1000] + bytes(b ^ 0xFF for b in data[1000:2000]) + data[2000:])
        else:
            import zipfile

            with zipfile.ZipFile(p) as src:
                members = {n: src.read(n) for n in src.namelist()}
            members["data"] = members["data"].replace(
                f'"checkpoint_format": {CHECKPOINT_FORMAT}'.encode(), b'"checkpoint_format": 99'
            )
            with zipfile.ZipFile(p, "w") as dst:
                for n, d in members.items():
                    dst.writestr(n, d)


NEW_RUN_CASES = [
    (["sequence.segments.0.game=Pongg"], "closest valid names: Pong"),
    (["agent.bach_size=3"], "did you mean batch_size"),
    (["agent.batch_size=abc"], "agent.batch_size must be an integer"),
    (["sequence.segments.0.steps=-5"], "must be a positive integer"),
    (["method.ewc.lam=-1"], "lam must be >= 0"),
    (["agent.batch_size=5000"], "larger than agent.buffer_size"),
    (["agent.replay_memory_gb=0.001"], "smaller than one task's replay buffer"),
    (["sequence.segments=[]"], "give exactly one of"),
    (["task.fmn.levels=1"], "task.fmn.levels"),
]


@pytest.mark.parametrize(("overrides", "message"), NEW_RUN_CASES)
def test_bad_config_exits_2_with_the_fix_and_writes_nothing(overrides, message, tmp_path, capsys):
    code = _train_main()([TINY, *overrides, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert err.count("\n") == 1  # one paragraph
    assert not (tmp_path / "r").exists()


def test_overrides_after_the_run_dir_are_read_as_overrides(tmp_path, capsys):
    code = _train_main()([TINY, "--run-dir", str(tmp_path / "r"), "eval.enabled=false", "agent.batch_size=abc"])
    err = capsys.readouterr().err
    assert code == 2 and "agent.batch_size must be an integer" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("file", "is a file; choose another --run-dir"),
        ("under_file", "which is a file; choose another --run-dir"),
        ("unwritable", "cannot be written: '/proc' refuses new files"),
    ],
)
def test_an_unusable_run_dir_exits_2_with_the_fix(where, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a directory")
    run_dir = {
        "file": tmp_path / "a_file",
        "under_file": tmp_path / "a_file" / "run",
        "unwritable": Path("/proc/cl_rl_run"),  # refused to every user, root included
    }[where]
    code = _train_main()([TINY, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert (tmp_path / "a_file").read_text() == "not a directory"


def _evaluate_main():
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize(("kind", "message"), [("truncated", "truncated or not a zip"), ("corrupt", "corrupt")])
def test_evaluating_a_damaged_checkpoint_exits_2_naming_it(kind, message, finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    _damage(kind, run_dir)
    code = _evaluate_main()([str(run_dir), "--checkpoints", "last", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "step_0000000500.zip" in err and "--checkpoints" in err, err
    assert "Traceback" not in err


def test_resuming_with_a_replaced_config_is_refused_with_the_differing_keys(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    for _, path in list_checkpoints(run_dir / "checkpoints"):
        if path.name != "step_0000000300.zip":
            path.unlink()
    config = (run_dir / "config.yaml").read_text()
    other = config.replace("learning_rate: 0.0001", "learning_rate: 0.0003").replace("steps: 150", "steps: 160")
    assert other.count("0.0003") == 1 and other.count("steps: 160") == 2  # another preset, the same shapes
    (run_dir / "config.yaml").write_text(other)
    before = _digest(run_dir)
    code = _train_main()(["--resume", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "agent.learning_rate: 0.0001 in the checkpoint, 0.0003 now" in err and "sequence.segments" in err
    assert _digest(run_dir) == before


BENCH_CASES = [
    ("bench_distillation", ["--steps", "0"], "argument --steps: must be >= 1"),
    ("bench_distillation", ["--updates", "-1"], "argument --updates: must be >= 1"),
    ("bench_envs", ["--seconds", "-1"], "argument --seconds: must be > 0"),
    ("bench_envs", ["--threads", "-2"], "argument --threads: must be >= 0"),
    ("bench_replay", ["--transitions", "0"], "argument --transitions: must be >= 1"),
    ("bench_replay", ["--batches", "-3"], "argument --batches: must be >= 5"),
    ("bench_speed", ["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    ("bench_retention", [TINY, "--reps", "0"], "argument --reps: must be >= 1"),
    ("bench_retention", [TINY, "--out", "/proc/cl_rl_table"], "--out '/proc/cl_rl_table' cannot be written"),
    ("sweep", [str(REPO / "configs" / "sweeps" / "example.yaml"), "--refresh", "-1"], "--refresh: must be > 0"),
    ("train", [TINY, "run.device=tpu"], "run.device must be auto, cpu, cuda or cuda:N"),
]


@pytest.mark.parametrize(("script", "args", "message"), BENCH_CASES)
def test_scripts_refuse_bad_options_with_exit_2(script, args, message, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(f"{script}_script", REPO / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        code = module.main([*args, *(["--run-dir", str(tmp_path / "r")] if script == "train" else [])])
    except SystemExit as exit_:  # argparse's usage error
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_a_sweep_into_a_file_exits_2(tmp_path, capsys):
    pytest.importorskip("ray")
    (tmp_path / "a_file").write_text("x")
    spec = importlib.util.spec_from_file_location("sweep_script", REPO / "scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([str(REPO / "configs" / "sweeps" / "example.yaml"), "--sweep-dir", str(tmp_path / "a_file")])
    err = capsys.readouterr().err
    assert code == 2 and "sweep directory" in err and "is a file" in err and "Traceback" not in err, err


def test_missing_config_file(tmp_path, capsys):
    assert _train_main()([str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "holds no checkpoint"),
        ("truncated", "truncated or not a zip"),
        ("corrupt", "corrupt"),
        ("format", "format 99"),
        ("shape", "changes the network shape"),
        ("fixed", "cannot change agent.learning_rate"),
        ("not_a_run", "not a run directory"),
        ("existing", "already holds files"),
    ],
)
def test_unusable_run_directory_or_checkpoint_exits_2_and_loses_nothing(kind, message, finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    _damage(kind, run_dir)
    before = _digest(run_dir)
    args = {
        "shape": ["--resume", str(run_dir), "agent.network=ewc"],
        "fixed": ["--resume", str(run_dir), "agent.learning_rate=0.5"],
        "not_a_run": ["--resume", str(tmp_path)],
        "existing": [TINY, "--run-dir", str(run_dir)],
    }.get(kind, ["--resume", str(run_dir)])
    with pytest.warns(UserWarning) if kind in ("truncated", "corrupt", "format") else _no_warning_check():
        code = _train_main()(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert _digest(run_dir) == before


class _no_warning_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    for step, path in checkpoints:
        if step > 300:
            path.unlink()
    newest = checkpoint_path_of(run_dir, 300)
    newest.write_bytes(newest.read_bytes()[:5000])  # killed while a non-atomic writer was writing it
    result = subprocess.run([*TRAIN, "--resume", str(run_dir)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "skipping checkpoint" in result.stderr and "step_0000000300.zip" in result.stderr
    assert checkpoint_problem(checkpoint_path_of(run_dir, 500), CHECKPOINT_FORMAT) is None


def checkpoint_path_of(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:010d}.zip"


# --- interruption ---------------------------------------------------------------------------------------------
def _wait_for(predicate, timeout: float = 300.0, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def _steps(run_dir: Path) -> list[int]:
    return [s for s, _ in list_checkpoints(run_dir / "checkpoints")]


@pytest.mark.slow
def test_sigint_checkpoints_flushes_and_exits_0_then_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [*TRAIN, TINY, *QUIET, "run.checkpoint_every=0", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert _wait_for(lambda: 200 in _steps(run_dir))  # the first segment end
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "SIGINT" in out and f"continue with:  {sys.executable} scripts/train.py --resume {run_dir}" in out
    stopped = max(_steps(run_dir))
    assert 200 < stopped < 500 or stopped == 200  # stopped within the second segment, or right at its start
    assert list((run_dir / "tb").glob("events.*"))
    resumed = subprocess.run([*TRAIN, "--resume", str(run_dir)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert max(_steps(run_dir)) == 500


@pytest.mark.slow
def test_sigkill_at_any_moment_loses_at_most_one_checkpoint_interval(tmp_path):
    """Kill -9 after a periodic checkpoint, and again while a checkpoint is being written; resume each time."""
    run_dir, every = tmp_path / "run", 50
    args = [*TRAIN, TINY, *QUIET, f"run.checkpoint_every={every}", "--run-dir", str(run_dir)]
    tmp_files = lambda: list((run_dir / "checkpoints").glob(".*.tmp")) if (run_dir / "checkpoints").is_dir() else []  # noqa: E731
    kills = []
    for attempt, command in enumerate([args, [*TRAIN, "--resume", str(run_dir)]]):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
        start = max(_steps(run_dir), default=0)
        if attempt == 0:  # right after the third checkpoint
            assert _wait_for(lambda: len(_steps(run_dir)) >= 3)
        else:  # in the middle of writing a checkpoint (a temporary file exists), else at the next checkpoint
            _wait_for(lambda s=start: bool(tmp_files()) or max(_steps(run_dir)) >= s + 2 * every, poll=0.0005)
        process.kill()
        process.wait(timeout=60)
        kills.append(max(_steps(run_dir)))
        for step, path in list_checkpoints(run_dir / "checkpoints"):
            assert checkpoint_problem(path, CHECKPOINT_FORMAT) is None, f"checkpoint {step} damaged by the kill"
    finished = subprocess.run([*TRAIN, "--resume", str(run_dir)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert finished.returncode == 0, finished.stderr
    steps = _steps(run_dir)
    assert steps[-1] == 500 and kills[0] >= 3 * every
    # Every interval is checkpointed, so a kill lost at most the steps since the newest checkpoint (< one interval).
    assert all(b - a <= every for a, b in itertools.pairwise(steps))


def test_atomic_write_killed_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    target = tmp_path / "step_0000000100.zip"
    target.write_bytes(b"previous checkpoint")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from agents.run.checkpoints import write_atomically\n"
            "def slow(path):\n    open(path, 'wb').write(b'half a new checkpoint'); print('writing', flush=True); "
            "time.sleep(60)\n"
            f"write_atomically(Path({str(target)!r}), slow)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout.readline().strip() == "writing"
    child.kill()
    child.wait(timeout=30)
    assert target.read_bytes() == b"previous checkpoint"
    assert list_checkpoints(tmp_path) == [(100, target)]  # the leftover temporary file is not a checkpoint
    with pytest.raises(RuntimeError):
        write_atomically(target, lambda p: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert target.read_bytes() == b"previous checkpoint" and len(list(tmp_path.iterdir())) == 2


# --- determinism and RNG state ----------------------------------------------------------------------------------
class _Record(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[int] = []
        self.losses: list[float] = []

    def _on_step(self) -> bool:
        self.actions.append(int(self.locals["actions"][0]))
        return True

    def _on_rollout_start(self) -> None:
        loss = self.model.logger.name_to_value.get("train/loss")
        if loss:
            self.losses.append(float(loss))


def _record_run(config) -> _Record:
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    record = _Record()
    model.learn(sequence.total_steps, callback=record)
    stream.close()
    return record


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_actions_and_losses(tiny_config):
    tiny_config.task.source = "fmn"
    tiny_config.method.name = "ewc"
    tiny_config.method.ewc.batches = 2
    first, second = _record_run(tiny_config), _record_run(tiny_config)
    assert len(first.losses) > 50 and first.losses == second.losses
    assert first.actions == second.actions


def test_rng_state_round_trip_replays_the_same_draws(tiny_config):
    sequence = tiny_config.sequence.build()
    stream, env = make_stream(tiny_config, sequence)
    space = env.action_space
    state = capture_rng_state(space)
    draws = (np.random.rand(3), torch.rand(3), [space.sample() for _ in range(5)])
    np.random.rand(7), torch.rand(7), space.sample()
    restore_rng_state(state, space)
    again = (np.random.rand(3), torch.rand(3), [space.sample() for _ in range(5)])
    stream.close()
    np.testing.assert_array_equal(draws[0], again[0])
    assert torch.equal(draws[1], again[1]) and draws[2] == again[2]


def test_the_run_identity_ignores_settings_added_or_removed_since_the_checkpoint(tiny_config, tmp_path):
    import json

    from agents.run.config import ConfigError, run_identity
    from agents.run.training import check_identity

    saved = json.loads(json.dumps(run_identity(tiny_config)))
    assert not any(k.startswith(("run.", "eval.", "log.")) for k in saved) and saved["agent.gamma"] == 0.99
    saved.pop("agent.n_step")  # a setting the code gained since the checkpoint
    saved["agent.retired"] = 3  # and one it lost
    check_identity(saved, tiny_config, tmp_path / "step_0000000100.zip")
    saved["agent.gamma"] = 0.5
    with pytest.raises(ConfigError, match=r"agent.gamma: 0.5 in the checkpoint, 0.99 now\. Put back the config"):
        check_identity(saved, tiny_config, tmp_path / "step_0000000100.zip")
