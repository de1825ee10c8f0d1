"""The end-of-run summary: verdicts from hand-made retention matrices, its text, and a real tiny MinAtar run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation.run_summary import format_summary, segment_end_scores, summarise_run, verdicts
from agents.run.config import load_config
from agents.run.training import train
from envs.scores import random_score
from envs.sequence import GameSequence, Segment
from tests.conftest import MINATAR_TINY_AGENT, REPO

SI, BO = "MinAtar/SpaceInvaders", "MinAtar/Breakout"
SEQUENCE = GameSequence((Segment(SI, 100), Segment(BO, 100), Segment(SI, 100)))
RANDOM = [2.5, 0.5]


def _verdict(matrix: list[list[float]]) -> dict[str, str]:
    return {v.game: v.verdict for v in verdicts(SEQUENCE, np.array(matrix), RANDOM)}


def test_a_game_near_random_after_the_next_one_is_forgotten_and_its_revisit_relearns_it():
    # SpaceInvaders: 16.5 (gain 14) → 4.0 (1.5 of it left, 11 %) → 17.0; Breakout: 3.0 → 2.9 (96 % kept).
    matrix = [[16.5, 0.4], [4.0, 3.0], [17.0, 2.9]]
    assert _verdict(matrix) == {SI: "forgotten", BO: "kept"}
    (si, bo) = verdicts(SEQUENCE, np.array(matrix), RANDOM)
    assert si.kept == pytest.approx(1.5 / 14) and si.worst_segment == 1 and si.best == 16.5 and si.end == 17.0
    assert bo.kept == pytest.approx(2.4 / 2.5)
    text = format_summary(SEQUENCE, np.array(matrix), RANDOM, Path("run/scores.png"))
    assert "SpaceInvaders: 16.5 after its own segment (random 2.50), FORGOTTEN: 11% of its gain left after " in text
    assert "segment 2 (Breakout); relearnt on its revisit; 17.0 at the end" in text
    assert "Breakout: 3.00 after its own segment (random 0.50), KEPT: at least 96% " in text
    assert text.endswith("plot of every game's score over the run: run/scores.png")


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        ([[12.5, 0.4], [10.0, 3.0], [12.0, 2.0]], {SI: "kept", BO: "trained last"}),  # 75 % of SI's gain: kept
        ([[12.5, 0.4], [8.0, 3.0], [12.0, 2.0]], {SI: "partly forgotten", BO: "trained last"}),  # 55 %
        ([[12.5, 0.4], [7.0, 3.0], [12.0, 2.0]], {SI: "forgotten", BO: "trained last"}),  # 45 %
        ([[2.0, 0.4], [2.5, 0.3], [2.4, 0.5]], {SI: "not learnt", BO: "not learnt"}),  # never above random
    ],
)
def test_verdict_thresholds(matrix, expected):
    # Breakout is trained in the middle, but with SpaceInvaders' revisit last: "trained last" needs the last
    # segment; here Breakout has a later segment end, so only a second sequence gives it that verdict.
    sequence = GameSequence((Segment(SI, 100), Segment(BO, 100)))
    got = {v.game: v.verdict for v in verdicts(sequence, np.array(matrix)[:2], RANDOM)}
    assert got == expected


def test_the_matrix_marks_the_trained_game_and_shows_random_play():
    text = format_summary(SEQUENCE, np.array([[16.5, 0.4], [4.0, 3.0], [17.0, 2.9]]), RANDOM)
    rows = text.splitlines()
    assert rows[1].split() == ["after", "segment", "SpaceInvaders", "Breakout"]
    assert rows[2].split() == ["1", "SpaceInvaders", "16.5*", "0.40"]
    assert rows[3].split() == ["2", "Breakout", "4.00", "3.00*"]
    assert rows[5].split() == ["random", "play", "2.50", "0.50"]


def test_segment_end_scores_pick_the_segment_ends_and_leave_gaps_as_nan():
    logged = {50: [1.0, 1.0], 100: [5.0, 0.5], 200: [3.0, 2.0]}
    matrix = segment_end_scores(SEQUENCE, logged)
    np.testing.assert_array_equal(matrix[:2], [[5.0, 0.5], [3.0, 2.0]])
    assert np.isnan(matrix[2]).all()


def test_summary_of_a_real_minatar_run_reads_its_logged_evaluations(tmp_path, capsys):
    overrides = [
        *MINATAR_TINY_AGENT,
        f"sequence.segments=[{{game: {SI}, steps: 150}}, {{game: {BO}, steps: 150}}, {{game: {SI}, steps: 150}}]",
        "eval.episodes=1",
        "eval.every=75",
    ]
    config = load_config(REPO / "configs" / "first_run.yaml", overrides)
    train(config, tmp_path / "run")
    start = capsys.readouterr().out.splitlines()[:3]  # the run's first lines: games, method, task source, device
    assert start[0] == f"first_run: {SI} → {BO} → {SI}, 450 agent steps"
    assert start[1].startswith("  method: rehearsal, ")
    assert start[2] == "  task ids: inferred from the observations (fmn); device: cpu, 1 torch thread(s)"
    text = summarise_run(tmp_path / "run")
    assert "1 evaluation episodes per game and segment end" in text
    lines = text.splitlines()
    assert [line.split(":")[0].strip() for line in lines if line.startswith(("  SpaceInvaders:", "  Breakout:"))] == [
        "SpaceInvaders",
        "Breakout",
    ]
    # The matrix rows are the scores training logged at the segment ends, read here straight from the event file.
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    logged = {g: {e.step: e.value for e in events.Scalars(f"eval/{g}/score")} for g in (SI, BO)}
    for i, (end, game) in enumerate([(150, SI), (300, BO), (450, SI)]):
        row = lines[3 + i].split()
        assert row[:2] == [str(i + 1), game.split("/")[1]]
        assert [float(v.rstrip("*")) for v in row[2:]] == pytest.approx([logged[SI][end], logged[BO][end]], abs=0.01)
    assert lines[6].split() == ["random", "play", f"{random_score(SI):.2f}", f"{random_score(BO):.2f}"]
    width, height = Image.open(tmp_path / "run" / "scores.png").size
    assert width > 300 and height > 200
