import itertools

import numpy as np
import pytest

from cl_rl.task_metrics import SwitchDetector, TaskAgreement, adjusted_rand_index


def _ari_by_pairs(true, pred) -> float:
    """ARI from its definition over all pairs of items (Hubert & Arabie 1985), no contingency table."""
    pairs = list(itertools.combinations(range(len(true)), 2))
    same_true = np.array([true[i] == true[j] for i, j in pairs])
    same_pred = np.array([pred[i] == pred[j] for i, j in pairs])
    index = float((same_true & same_pred).sum())
    expected = same_true.sum() * same_pred.sum() / len(pairs)
    maximum = (same_true.sum() + same_pred.sum()) / 2
    return (index - expected) / (maximum - expected)


def test_ari_of_identical_partitions_is_one_up_to_renaming():
    assert adjusted_rand_index(["Pong"] * 5 + ["Breakout"] * 3, [7] * 5 + [2] * 3) == pytest.approx(1.0)


def test_ari_known_value_and_pair_definition():
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)  # pairs: index 1, E = 2·1/6, max 1.5
    rng = np.random.default_rng(0)
    for _ in range(5):
        true, pred = rng.integers(3, size=40).tolist(), rng.integers(4, size=40).tolist()
        assert adjusted_rand_index(true, pred) == pytest.approx(_ari_by_pairs(true, pred))


def test_online_agreement_matches_batch():
    true = ["A"] * 50 + ["B"] * 50 + ["A"] * 30
    pred = [0] * 55 + [1] * 45 + [1] * 3 + [0] * 27
    online = TaskAgreement()
    for t, p in zip(true, pred, strict=True):
        online.update(t, p)
    assert online.ari() == pytest.approx(_ari_by_pairs(true, pred))
    assert 0.5 < online.ari() < 1.0


def test_switch_detector_delays_and_spurious():
    true = ["A"] * 10 + ["B"] * 10 + ["A"] * 10
    pred = [0] * 13 + [1] * 7 + [1] * 2 + [0] * 3 + [2] + [0] * 4
    detector = SwitchDetector()
    for t, p in zip(true, pred, strict=True):
        detector.update(t, p)
    assert detector.switches == 2 and detector.delays == [3, 2]
    assert detector.spurious == 2  # the change to 2 and back to 0 follow no true switch
