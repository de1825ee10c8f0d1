"""The rehearsal probe (scripts/probe_rehearsal.py) on a real MinAtar game, at a tiny budget."""

from __future__ import annotations

import pytest

from scripts.probe_rehearsal import main, probe


def test_zero_updates_leave_the_score_and_the_script_prints_a_row_per_seed(capsys):
    before, _, after = probe("MinAtar/Breakout", steps=1100, updates=0, seed=0)
    assert after == before  # same episodes, same network
    assert main(["--steps", "1100", "--updates", "20", "--seeds", "0"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == "0" and len(row) == 4 and float(row[1]) == pytest.approx(before, abs=0.005)


def test_an_unknown_game_exits_2_with_the_configs_message(capsys):
    assert main(["--game", "MinAtar/Nope", "--seeds", "0"]) == 2
    assert "Nope" in capsys.readouterr().err
