import numpy as np
import pytest

from cl_rl.task_source import OracleTaskSource, TaskSource


def test_oracle_numbers_games_in_order_of_first_appearance():
    source = OracleTaskSource()
    frame = np.zeros((4, 84, 84), np.uint8)
    ids = [source.observe(frame, g) for g in ["Pong", "Pong", "Breakout", "Pong", "Freeway", "Breakout"]]
    assert ids == [0, 0, 1, 0, 2, 1]
    assert source.n_tasks == 3 and source.label_of(2) == "Freeway"
    assert isinstance(source, TaskSource)
    restored = OracleTaskSource()
    restored.load_state_dict(source.state_dict())
    assert restored.observe(frame, "Freeway") == 2


def test_oracle_needs_the_label():
    with pytest.raises(ValueError, match="true game label"):
        OracleTaskSource().observe(np.zeros(1), None)
