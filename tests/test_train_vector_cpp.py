"""Training with agent.vector=cpp (ale-py's C++ vector env, envs/vector_sequence.py, wired in make_stream): the
envs switch together, every transition in the right task's replay, checkpoints, TensorBoard, resume, and the config
errors. configs/tiny.yaml (Pong → Breakout → Pong, 500 agent steps) with 2 envs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.run.checkpoints import list_checkpoints
from agents.run.config import ConfigError, load_config
from agents.run.training import make_stream, resume, train
from envs.sequence import ParallelSequence
from envs.vector_sequence import AtariSequenceVecEnv
from tests.conftest import REPO
from tests.test_train_script import _scalars
from tests.test_train_vector import Recorder

pytestmark = pytest.mark.slow
N_ENVS = 2
CPP = ["agent.vector=cpp", f"agent.n_envs={N_ENVS}", "run.checkpoint_every=100"]


@pytest.fixture(scope="module")
def cpp_run(tmp_path_factory) -> tuple[Path, Recorder, object]:
    run_dir = tmp_path_factory.mktemp("runs") / "cpp"
    recorder = Recorder()
    result = train(load_config(REPO / "configs" / "tiny.yaml", CPP), run_dir, callbacks=[recorder])
    return run_dir, recorder, result


def test_make_stream_builds_the_configured_vector():
    for vector, kind in (("python", ParallelSequence), ("cpp", AtariSequenceVecEnv)):
        config = load_config(REPO / "configs" / "tiny.yaml", [f"agent.vector={vector}", "agent.n_envs=2"])
        stream, env = make_stream(config, config.sequence.build())
        assert isinstance(stream, kind) and env.num_envs == 2 and stream.n_envs == 2
        assert env.observation_space.shape == (4, 84, 84) and env.action_space.n == 18
        stream.close()
    assert load_config(REPO / "configs" / "tiny.yaml").agent.vector == "python"  # the default is unchanged


def test_the_envs_switch_games_together_at_the_segment_ends(cpp_run):
    _, recorder, result = cpp_run
    assert result.model.num_timesteps == 500 and result.model.n_envs == N_ENVS
    assert all(row == [row[0]] * N_ENVS for row in recorder.games)
    assert [row[0] for row in recorder.games] == ["Pong"] * 100 + ["Breakout"] * 75 + ["Pong"] * 75
    assert [i for i, row in enumerate(recorder.ends) if all(row)] == [99, 174, 249]
    assert not any(any(row) and not all(row) for row in recorder.ends)
    # oracle task ids: Pong is task 0 in both visits, Breakout task 1; every env's transitions in the current task's
    # buffer, the last vector step's too
    assert result.model.task_switches == 2 and result.model.current_task == 0
    assert result.model.replay_buffer.sizes() == [200 + 150, 150]


def test_the_run_trains_evaluates_logs_and_checkpoints(cpp_run):
    run_dir, _, result = cpp_run
    assert result.model._n_updates > 0 and result.interrupted is None
    scalars = _scalars(run_dir)
    for tag in ("train/loss", "task/switches", "game/Pong/score", "sequence/segment", "eval/mean_hns"):
        assert tag in scalars, tag
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [100, 200, 300, 350, 400, 500]
    assert "vector: cpp" in (run_dir / "config.yaml").read_text()


def test_a_cpp_run_resumes_from_a_checkpoint(cpp_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cpp_run[0], run_dir)
    for step, path in list_checkpoints(run_dir / "checkpoints"):
        if step > 300:
            path.unlink()  # as if killed at step 300, in Breakout
    recorder = Recorder()
    result = resume(run_dir, callbacks=[recorder])
    assert result.start_step == 300 and result.model.num_timesteps == 500
    assert [row[0] for row in recorder.games] == ["Breakout"] * 25 + ["Pong"] * 75
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [100, 200, 300, 350, 400, 500]


def test_settings_the_cpp_env_cannot_honour_are_config_errors():
    tiny = REPO / "configs" / "tiny.yaml"
    with pytest.raises(ConfigError, match=r"agent.vector='cpp' .* no MinAtar games .* set agent.vector: python"):
        load_config(REPO / "configs" / "minatar.yaml", ["agent.vector=cpp"])
    with pytest.raises(ConfigError, match=r"agent.vector='cpp' cannot honour .*max_episode_frames.* agent.vector"):
        load_config(tiny, ["agent.vector=cpp", "env.max_episode_frames=3000000000"])
    with pytest.raises(ConfigError, match=r"agent.vector must be one of 'python', 'cpp'"):
        load_config(tiny, ["agent.vector=gpu"])
    script, minatar = str(REPO / "scripts" / "train.py"), str(REPO / "configs" / "minatar.yaml")
    done = subprocess.run(
        [sys.executable, script, minatar, "agent.vector=cpp"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no MinAtar games" in done.stderr and "set agent.vector: python" in done.stderr
