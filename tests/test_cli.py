"""The cl-rl command (agents/cli.py) and the messages of scripts/train.py that a new user meets first."""

from __future__ import annotations

import pytest

from agents.cli import COMMANDS, main
from tests.conftest import REPO


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


def test_an_unknown_command_exits_2_naming_it(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_train_help_names_both_game_families_and_the_first_run(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "MinAtar" in out and "Atari" in out and "configs/first_run.yaml" in out


@pytest.mark.parametrize("directory", ["configs", "configs/"])
def test_a_directory_as_config_gets_its_own_message(capsys, directory, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["train", directory]) == 2
    err = capsys.readouterr().err
    assert "is a directory, not a config file" in err and "first_run.yaml" in err and "Traceback" not in err


def test_evaluate_of_a_missing_run_exits_2(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
