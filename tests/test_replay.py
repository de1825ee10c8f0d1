import numpy as np
import pytest
from gymnasium import spaces

from agents.sb3.replay import PerTaskReplayBuffer


def _buffer() -> PerTaskReplayBuffer:
    return PerTaskReplayBuffer(50, spaces.Box(0, 255, (2, 3), np.uint8), spaces.Discrete(18), device="cpu")


def _add(buf: PerTaskReplayBuffer, value: int) -> None:
    obs = np.full((1, 2, 3), value, np.uint8)
    buf.add(obs, obs, np.array([[value % 18]]), np.array([1.0]), np.array([False]), [{}])


def test_transitions_go_to_the_active_task_and_are_sampled_from_it():
    buf = _buffer()
    buf.add_task()
    buf.add_task()
    buf.set_task(0)
    for v in range(5):
        _add(buf, 10 + v)
    buf.set_task(1)
    for v in range(3):
        _add(buf, 100 + v)
    assert buf.sizes() == [5, 3] and buf.size() == 3
    sample = buf.sample(32)
    assert set(np.unique(sample.observations.numpy())) <= {100, 101, 102}
    sample = buf.sample(32, task=0)
    assert set(np.unique(sample.observations.numpy())) <= {10, 11, 12, 13, 14}
    buf.set_task(0)
    assert buf.size() == 5 and buf.pos == 5


def test_missing_task_is_an_error():
    buf = _buffer()
    with pytest.raises(ValueError, match="add_task"):
        buf.set_task(0)
    assert buf.size() == 0
