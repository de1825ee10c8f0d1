import pytest

from cl_rl.exploration import PerTaskEpsilon


def test_each_task_anneals_from_scratch_and_resumes_on_revisit():
    eps = PerTaskEpsilon(initial=1.0, final=0.1, anneal_steps=100)
    eps.tick(0, 50)
    assert eps.value(0) == pytest.approx(0.55)
    assert eps.value(1) == 1.0  # a task never met starts at the initial value
    eps.tick(1, 100)
    assert eps.value(1) == pytest.approx(0.1)
    eps.tick(0, 25)  # revisit: task 0 resumes at 50 steps, not at 0 and not at the global 150
    assert eps.value(0) == pytest.approx(1.0 - 0.9 * 75 / 100)
    eps.tick(0, 1000)
    assert eps.value(0) == pytest.approx(0.1)


def test_state_dict_round_trip():
    eps = PerTaskEpsilon(0.9, 0.05, 10)
    eps.tick(2, 3)
    other = PerTaskEpsilon()
    other.load_state_dict(eps.state_dict())
    assert other.value(2) == eps.value(2) and other.steps == {2: 3}


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="lie in"):
        PerTaskEpsilon(1.5, 0.1, 10)
