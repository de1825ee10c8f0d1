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


def _screens(seed: int, n: int) -> list[np.ndarray]:
    """A synthetic game: one random screen, a few pixels changing each frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(84, 84), dtype=np.uint8)
    frames = []
    for _ in range(n):
        frame = base.copy()
        mask = rng.random((84, 84)) < 0.02
        frame[mask] = rng.integers(0, 256, size=int(mask.sum()))
        frames.append(frame)
    return frames


@pytest.mark.parametrize("cut", [True, False])
def test_a_cut_episode_s_undecided_window_decides_nothing(cut):
    """A resumed run cuts the episode its checkpoint fell in (``cut_episode``): the two frames the checkpoint caught of
    an odd episode start must not decide, and the fresh episode of the same game keeps the task."""
    from cl_rl.task_inference import FlatFMN, FMNSettings

    game, odd = _screens(1, 100), _screens(9, 2)  # odd: an episode start unlike the game's usual one
    fmn = FlatFMN(FMNSettings(update_every=1))
    assert fmn.settings.early_after > len(odd)  # a window needs more frames than the checkpoint caught
    for i, frame in enumerate(game[:60]):
        fmn.observe(frame, episode_start=i % 30 == 0)
    for i, frame in enumerate(odd):
        fmn.observe(frame, episode_start=i == 0)
    assert fmn._deciding and fmn._n_frames == 2  # the checkpoint falls here
    if cut:
        fmn.cut_episode()
    ids = [fmn.observe(frame, episode_start=i == 0) for i, frame in enumerate(game[60:])]
    if cut:
        assert fmn.n_tasks == 1 and set(ids) == {0}
    else:  # the two frames decided at the fresh episode's start: a spurious task (as resumes did before the cut)
        assert fmn.n_tasks == 2 and ids[0] == 1


def test_sources_without_windows_ignore_a_cut():
    source = OracleTaskSource()
    source.observe(np.zeros(1), "Pong")
    source.cut_episode()
    assert source.observe(np.zeros(1), "Breakout") == 1
