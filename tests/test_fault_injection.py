"""Faults on a real run: kill -9 at random moments and resume, a second writer, a disk that fills up.

The run: MinAtar Breakout → SpaceInvaders → Breakout, 250 agent steps each, tasks inferred from the frames
(``task.source=fmn``), EWC, ez-greedy exploration and 3-step targets, a checkpoint every 50 steps with its replay
buffers. Killed with SIGKILL three times at random moments and resumed each time, it must end as the same run never
stopped: the same tasks, the same switches at the same steps (± the detection delay), the same segment ends, the same
number of updates, ε timers and replay contents, and TensorBoard curves without duplicate or missing steps.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.run.checkpoints import checkpoint_problem, list_checkpoints, load_checkpoint
from agents.run.lock import LOCK_NAME, RunDirLocked, directory_lock
from agents.sb3.continual_dqn import CHECKPOINT_FORMAT
from tests.conftest import REPO

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]
SEGMENT, EVERY = 250, 50
ENDS = [SEGMENT, 2 * SEGMENT, 3 * SEGMENT]
DETECTION_DELAY = 8  # agent steps: a grid window of 8 frames, one per step (cl_rl/task_inference.py)
SEED = int(os.environ.get("FAULT_SEED", "27"))  # the kill moments; FAULT_SEED=<n> draws others
CONFIG = {
    "run": {"name": "fault", "seed": 0, "checkpoint_every": EVERY, "save_replay": True, "progress_bar": False},
    "sequence": {
        "segments": [
            {"game": game, "steps": SEGMENT}
            for game in ("MinAtar/Breakout", "MinAtar/SpaceInvaders", "MinAtar/Breakout")
        ]
    },
    "env": {"minatar": {"max_episode_steps": 100}},
    "task": {"source": "fmn"},
    "method": {"name": "ewc", "ewc": {"batches": 2}},
    "agent": {
        "network": "minatar",
        "replay": "sb3",
        "double_dqn": False,
        "buffer_size": 1000,
        "learning_starts": 64,
        "exploration_steps": 200,
        "exploration": "ez_greedy",
        "n_step": 3,
        "train_freq": 4,
        "target_update_interval": 100,
    },
    "eval": {"enabled": False},
}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}  # every line reaches the log before a kill


def _config_file(directory: Path) -> Path:
    path = directory / "fault.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def _steps(run_dir: Path) -> list[int]:
    return [step for step, _ in list_checkpoints(run_dir / "checkpoints")]


def _state(path: Path) -> tuple:
    """What a checkpoint says of the run's course, read from SB3's data without loading the model."""
    data = json.loads(zipfile.ZipFile(path).read("data"))
    return tuple(data[k] for k in ("current_task", "n_tasks_created", "task_switches", "_n_updates"))


def _states(run_dir: Path) -> dict[int, tuple]:
    return {step: _state(path) for step, path in list_checkpoints(run_dir / "checkpoints")}


LINE = re.compile(r"^\[step (\d+)\] (start|switch): game (\S+) \(segment (\d+)/\d+\), task (\d+)")


def _course(logs: list[tuple[str, int | None]]) -> list[tuple[int, str, int]]:
    """(step, game, task) at each start and switch line of a chain of processes' logs; a process's lines after the
    step its successor resumed from are dropped (the successor plays those steps again)."""
    course: list[tuple[int, str, int]] = []
    for text, until in logs:
        for line in text.splitlines():
            m = LINE.match(line)
            if m and (until is None or int(m.group(1)) <= until):
                step, game, task = int(m.group(1)), m.group(3), int(m.group(5))
                if not course or course[-1][1:] != (game, task):
                    course.append((step, game, task))
    return course


def _task_switches(course: list[tuple[int, str, int]]) -> list[tuple[int, int]]:
    tasks = [(step, task) for step, _, task in course]
    return [tasks[0]] + [(s, t) for (s, t), (_, before) in zip(tasks[1:], tasks[:-1], strict=True) if t != before]


def _game_switches(course: list[tuple[int, str, int]]) -> list[int]:
    games = [(step, game) for step, game, _ in course]
    return [s for (s, g), (_, before) in zip(games[1:], games[:-1], strict=True) if g != before]


def _scalar_steps(run_dir: Path, tag: str) -> list[int]:
    """The steps of ``tag`` as TensorBoard shows the run (all event files, a resumed writer's purge applied)."""
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [e.step for e in accumulator.Scalars(tag)]


def _last_value(run_dir: Path, tag: str) -> float:
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator.Scalars(tag)[-1].value


def _wait_for(predicate, timeout: float = 300.0, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The uninterrupted run, and the same run killed with SIGKILL three times at random moments and resumed."""
    root = tmp_path_factory.mktemp("fault")
    config = _config_file(root)
    whole = subprocess.run(
        [*TRAIN, str(config), "--run-dir", str(root / "whole")], capture_output=True, text=True, cwd=REPO, env=ENV
    )
    assert whole.returncode == 0, whole.stderr
    rng = random.Random(SEED)
    killed, logs, kills, refused = root / "killed", [], [], None
    targets = sorted(rng.sample(range(EVERY, 3 * SEGMENT - 2 * EVERY, EVERY), 3))  # checkpoints to pass first
    command = [*TRAIN, str(config), "--run-dir", str(killed)]
    for target in targets:
        log = root / f"process_{len(logs)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=ENV)
            assert _wait_for(lambda t=target, p=process: max(_steps(killed), default=0) >= t or p.poll() is not None)
            if refused is None:  # a second writer (this process) while the first runs
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    code = _script_main("train")(["--resume", str(killed)])
                refused = (code, err.getvalue(), process.pid)
            time.sleep(rng.uniform(0.0, 0.4))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        resumed_from = max(_steps(killed))
        kills.append((target, resumed_from))
        logs.append((log.read_text(), resumed_from))
        command = [*TRAIN, "--resume", str(killed)]
    last = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=ENV)
    assert last.returncode == 0, last.stdout + last.stderr
    logs.append((last.stdout, None))
    return {
        "whole": root / "whole",
        "killed": killed,
        "whole_course": _course([(whole.stdout, None)]),
        "killed_course": _course(logs),
        "kills": kills,
        "refused": refused,
        "last": last,
    }


def test_the_kills_fell_inside_the_run(runs):
    resumed_from = [step for _, step in runs["kills"]]
    assert len(resumed_from) == 3 and all(0 < s < 3 * SEGMENT for s in resumed_from), runs["kills"]
    # the killed processes left their lock behind; the next one took it over and said whose it was
    assert "taking over the lock" in runs["last"].stderr and "is gone" in runs["last"].stderr
    assert not (runs["killed"] / LOCK_NAME).exists()  # released at the clean end


def _shifts(runs) -> list[int]:
    """How many steps later (or earlier) than in the run never stopped each task switch of the resumed run came."""
    before, after = _task_switches(runs["whole_course"]), _task_switches(runs["killed_course"])
    assert [t for _, t in before] == [t for _, t in after] == [0, 1, 0], (before, after)  # Breakout's task comes back
    return [b - a for (a, _), (b, _) in zip(before, after, strict=True)]


def test_the_same_tasks_switch_at_the_same_steps_and_segments_end_alike(runs):
    assert _game_switches(runs["whole_course"]) == _game_switches(runs["killed_course"]) == ENDS[:-1]
    # A resumed process plays fresh episodes, so an episode of the new game that ends inside its decision window can
    # make the decision a few steps earlier or later than in the run never stopped: never by more than the delay.
    assert all(abs(shift) <= DETECTION_DELAY for shift in _shifts(runs)), _shifts(runs)


def test_a_killed_and_resumed_run_ends_as_the_run_never_stopped(runs):
    whole, killed = _states(runs["whole"]), _states(runs["killed"])
    assert set(ENDS) <= set(killed) and max(killed) == max(whole) == ENDS[-1]  # every segment end checkpointed
    common = sorted(set(whole) & set(killed))
    # the task, the tasks created and the switches made at every checkpoint step that both runs wrote
    assert [killed[s][:3] for s in common] == [whole[s][:3] for s in common]
    # updates: the same, but for a new task's replay start moved by its switch's shift (one update per train_freq)
    slack = sum(-(-abs(shift) // CONFIG["agent"]["train_freq"]) for shift in _shifts(runs))
    assert all(abs(killed[s][3] - whole[s][3]) <= slack for s in common), (slack, whole, killed)
    assert whole[ENDS[-1]][3] > 100  # updates were made (the comparison can fail)
    for path in (runs["whole"], runs["killed"]):
        for _, checkpoint in list_checkpoints(path / "checkpoints"):
            assert checkpoint_problem(checkpoint, CHECKPOINT_FORMAT) is None, f"{checkpoint} damaged"


def test_epsilon_timers_and_replay_contents_line_up(runs):
    final = [runs[k] / "checkpoints" / f"step_{ENDS[-1]:010d}.zip" for k in ("whole", "killed")]
    models = [load_checkpoint(path) for path in final]
    for model, path in zip(models, final, strict=True):
        model.load_replay_buffer(path.with_name(path.stem + "_replay.pkl"))
    slack = sum(abs(shift) for shift in _shifts(runs))  # steps played under another task than in the whole run
    for task in (0, 1):
        assert abs(models[0].epsilon.steps[task] - models[1].epsilon.steps[task]) <= slack
        assert abs(models[0].replay_buffer.sizes()[task] - models[1].replay_buffer.sizes()[task]) <= slack
    for model in models:  # every step ticked one task's timer and stored one transition
        assert sum(model.epsilon.steps.values()) == sum(model.replay_buffer.sizes()) == ENDS[-1]


def test_tensorboard_curves_go_on_without_duplicates_or_gaps(runs):
    for tag in ("train/loss", "sequence/segment", "task/true_switches"):
        steps = _scalar_steps(runs["killed"], tag)
        assert steps == sorted(set(steps)), f"{tag}: a step logged twice or out of order"
    # every segment end is logged once, by whichever process played it
    ends = [s for s in _scalar_steps(runs["killed"], "task/true_switches") if s in ENDS]
    assert ends == ENDS
    # the task-inference scores are counted over the whole run, across the kills (saved with the checkpoints)
    for tag in ("task/true_switches", "task/detected_switches", "task/spurious_switches"):
        assert _last_value(runs["killed"], tag) == _last_value(runs["whole"], tag), tag
    assert _last_value(runs["whole"], "task/true_switches") == 2
    # episodes end within 100 steps (env.minatar.max_episode_steps), and each end dumps the logger: no longer gap
    for path in (runs["whole"], runs["killed"]):
        steps = _scalar_steps(path, "sequence/segment")
        assert max(b - a for a, b in itertools.pairwise(steps)) <= (100 if path == runs["whole"] else 200)


def test_a_second_writer_is_refused_while_the_first_runs(runs):
    code, err, holder = runs["refused"]
    assert code == 2 and f"is being written by process {holder}" in err and "Traceback" not in err, err


# --- one writer per directory ---------------------------------------------------------------------------------
def test_the_lock_is_exclusive_released_on_any_exit_and_names_its_holder(tmp_path):
    with directory_lock(tmp_path / "run") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirLocked, match=f"process {os.getpid()}"), directory_lock(tmp_path / "run"):
            pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with pytest.raises(KeyError), directory_lock(tmp_path / "run"):
        raise KeyError("an error inside")
    with directory_lock(tmp_path / "run"):  # free again
        pass


def test_a_sigkilled_holder_leaves_a_lock_the_next_writer_takes_over(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from agents.run.lock import directory_lock\n"
            f"with directory_lock(Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirLocked, match=f"process {holder.pid}"), directory_lock(tmp_path):
        pass
    holder.kill()
    holder.wait(timeout=30)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid  # left behind by the kill
    with directory_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def _script_main(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_retention_table_and_sweeps_refuse_a_directory_another_process_writes(tmp_path, capsys):
    table = tmp_path / "table"
    with directory_lock(table):
        code = _script_main("bench_retention")(
            [str(REPO / "configs" / "tiny.yaml"), "--methods", "finetune", "--seeds", "1", "--out", str(table)]
        )
        err = capsys.readouterr().err
        assert code == 2 and "table directory" in err and f"process {os.getpid()}" in err, err
        assert not (table / "runs").exists()  # nothing trained
    pytest.importorskip("ray")
    sweep_dir = tmp_path / "sweep"
    with directory_lock(sweep_dir):
        code = _script_main("sweep")([str(REPO / "configs" / "sweeps" / "example.yaml"), "--sweep-dir", str(sweep_dir)])
        err = capsys.readouterr().err
        assert code == 2 and "sweep directory" in err and f"process {os.getpid()}" in err, err


# --- a checkpoint write that fails ------------------------------------------------------------------------------
DISK_FULL = """
import resource, signal, sys
from pathlib import Path
from stable_baselines3.common.callbacks import BaseCallback
from agents.run.config import load_config
from agents.run.training import train

class DiskFull(BaseCallback):  # from step {full} on, no file may grow past {limit} bytes: a real EFBIG from the kernel
    def _on_step(self):
        if self.num_timesteps == {full}:
            resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        return True

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with an error instead of killing the process
overrides = ["run.save_replay=false", *(f"sequence.segments.{{i}}.steps=100" for i in range(3))]
result = train(load_config({config!r}, overrides), Path({run_dir!r}), callbacks=[DiskFull()])
print("finished", result.model.num_timesteps, "failed", len(result.failed_checkpoints), "last", result.last_checkpoint)
"""


def test_a_checkpoint_write_that_fails_keeps_the_previous_one_and_says_so(tmp_path):
    run_dir, full = tmp_path / "run", 120  # checkpoints at 50 and 100 are written; from 150 on the disk is full
    code = DISK_FULL.format(full=full, limit=300_000, config=str(_config_file(tmp_path)), run_dir=str(run_dir))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={**ENV, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr
    previous = run_dir / "checkpoints" / "step_0000000100.zip"
    assert f"finished 300 failed 4 last {previous}" in result.stdout  # 150, 200, 250 and 300 failed
    assert "step_0000000150.zip could not be written ([Errno 27] File too large)" in result.stderr
    assert f"the previous checkpoint {previous} is intact" in result.stderr
    assert _steps(run_dir) == [50, 100] and not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert checkpoint_problem(previous, CHECKPOINT_FORMAT) is None
    resumed = subprocess.run([*TRAIN, "--resume", str(run_dir)], capture_output=True, text=True, cwd=REPO, env=ENV)
    assert resumed.returncode == 0 and "at agent step 100 of 300" in resumed.stdout, resumed.stderr
