"""An evaluation that does not recognise a game it trained says so: on its line, in TensorBoard, never silently."""

from __future__ import annotations

from stable_baselines3.common.logger import configure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation.periodic_evaluation import (
    PeriodicEvaluationCallback,
    evaluation_line,
    first_starts,
    unrecognised,
)
from agents.evaluation.play import GameEvaluation
from agents.run.config import load_config
from agents.run.training import TENSORBOARD_DIR, train
from tests.conftest import REPO

B, S, F = "MinAtar/Breakout", "MinAtar/SpaceInvaders", "MinAtar/Freeway"


def test_the_line_names_unrecognised_new_and_shared_tasks():
    results = [
        GameEvaluation(B, (2.0,), task=0, known_tasks=2),
        GameEvaluation(S, (5.0,), task=2, known_tasks=2),  # trained, played with a task the agent does not have
        GameEvaluation(F, (0.0,), task=0, known_tasks=2),  # shares Breakout's task
    ]
    line = evaluation_line(300, results, trained=[B, S])
    assert line == (
        "[step 300] evaluation: MinAtar/Breakout 2.0 (task 0, also MinAtar/Freeway), "
        "MinAtar/SpaceInvaders 5.0 (task 2: not recognised), MinAtar/Freeway 0.0 (task 0, also MinAtar/Breakout)"
    )
    assert unrecognised(results, trained=[B, S]) == [S]
    # not trained yet: a new task is the zero-shot play of a game the agent meets for the first time
    assert "MinAtar/SpaceInvaders 5.0 (task 2: new)" in evaluation_line(300, results, trained=[B])
    assert unrecognised(results, trained=[B]) == []


def test_first_starts_are_each_games_first_segment_start():
    config = load_config(REPO / "configs" / "minatar_table.yaml")
    assert first_starts(config.sequence.build()) == {B: 0, S: 10_000, F: 20_000}


def _scalars(run_dir, tag: str) -> list[float]:
    accumulator = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [e.value for e in accumulator.Scalars(tag)] if tag in accumulator.Tags()["scalars"] else []


def test_a_real_run_reports_recognition_and_an_unrecognised_trained_game(tmp_path, capsys):
    overrides = [
        "sequence.segments.0.steps=400",
        "sequence.segments.1.steps=300",
        "eval.every=0",
        "eval.episodes=2",
        "agent.learning_starts=100",
        "run.progress_bar=false",
    ]
    config = load_config(REPO / "configs" / "minatar_table.yaml", overrides)
    config.sequence.segments = config.sequence.segments[:2]  # Breakout, then SpaceInvaders
    result = train(config, tmp_path / "run")
    lines = [line for line in capsys.readouterr().out.splitlines() if "evaluation:" in line]
    # SpaceInvaders before its own training: a new task is its zero-shot play, not a failure; after it, both known.
    assert "MinAtar/SpaceInvaders" in lines[0] and "(task 1: new)" in lines[0]
    assert not any("not recognised" in line for line in lines), lines
    assert _scalars(tmp_path / "run", "eval/unrecognised") == [0.0, 0.0]
    assert _scalars(tmp_path / "run", f"eval/{B}/task_known") == [1.0, 1.0]

    # Freeway, which the agent never played, declared trained from step 0: the evaluation plays it with a task the
    # agent does not have, and must say so rather than report its score as the agent's.
    model = result.model
    model.set_logger(configure(str(tmp_path / "eval_tb"), ["tensorboard"]))
    callback = PeriodicEvaluationCallback([B, F], config.env, [], episodes=1, trained_from={B: 0, F: 0})
    callback.init_callback(model)
    callback.num_timesteps = model.num_timesteps  # as SB3's on_step sets it
    results = callback.evaluate()
    model.logger.close()
    line = capsys.readouterr().out
    assert [r.task < r.known_tasks for r in results] == [True, False]
    assert "MinAtar/Freeway" in line and "not recognised" in line
    accumulator = EventAccumulator(str(tmp_path / "eval_tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [e.value for e in accumulator.Scalars("eval/unrecognised")] == [1.0]
    assert [e.value for e in accumulator.Scalars(f"eval/{F}/task_known")] == [0.0]
