"""The task-conditioned VAE and generative replay of cl_rl/generative.py, on real ALE frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_rl.generative import GenerativeReplay, TaskConditionedVAE
from envs.atari import AtariSettings, make_atari_env


def _frames(game: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` stacked observations of random play, float in [0, 255] as the agent's replay buffer returns them."""
    env = make_atari_env(game, AtariSettings(), seed=seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(n):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append(obs)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.as_tensor(np.stack(out)).float()


def _sampler(frames: dict[int, torch.Tensor], calls: list[int] | None = None):
    def real_states(task: int, n: int) -> torch.Tensor:
        if calls is not None:
            calls.append(task)
        return frames[task][torch.randint(0, len(frames[task]), (n,))]

    return real_states


def _eval_loss(vae: TaskConditionedVAE, states: torch.Tensor, task: int) -> float:
    torch.manual_seed(123)  # same reparameterisation noise for each evaluation
    with torch.no_grad():
        return float(vae.loss(states, torch.full((len(states),), task)).total)


def test_shapes_range_and_a_task_id_beyond_max_tasks():
    vae = TaskConditionedVAE(max_tasks=3, latent_dim=8, channels=4)
    samples = vae.sample(task=2, n=5)
    assert samples.shape == (5, 4, 84, 84) and samples.min() >= 0 and samples.max() <= 255
    loss = vae.loss(torch.randint(0, 256, (6, 4, 84, 84)).float(), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.isclose(loss.total, loss.reconstruction + loss.kl) and loss.kl >= 0
    with pytest.raises(ValueError, match="max_tasks"):
        vae.sample(task=3, n=1)


def test_the_generator_loss_falls_on_real_frames():
    torch.manual_seed(0)
    frames = _frames("Pong", 64)
    replay = GenerativeReplay(TaskConditionedVAE(latent_dim=8, channels=8), lr=1e-3, batch_size=16)
    before = _eval_loss(replay.generator, frames, task=0)
    losses = replay.train_steps(0, _sampler({0: frames}), steps=30)
    after = _eval_loss(replay.generator, frames, task=0)
    assert len(losses) == 30 and all(torch.isfinite(loss.total) for loss in losses)
    assert after < 0.95 * before
    # Beyond the per-task mean image it starts from, the steps keep lowering the loss.
    assert float(torch.stack([loss.total for loss in losses[-5:]]).mean()) < float(losses[0].total)


def test_batches_mix_real_states_of_the_current_task_with_the_frozen_teachers_samples():
    torch.manual_seed(0)
    frames = {k: torch.full((8, 4, 84, 84), 60.0 * (k + 1)) for k in range(3)}
    replay = GenerativeReplay(TaskConditionedVAE(max_tasks=4, latent_dim=4, channels=4), batch_size=30)
    calls: list[int] = []
    with pytest.raises(ValueError, match="not known"):
        replay.sample(0, 1)
    replay.train_steps(0, _sampler(frames, calls), steps=1)
    replay.consolidate(0)
    replay.train_steps(1, _sampler(frames, calls), steps=1)
    replay.consolidate(1)
    teacher = {n: p.clone() for n, p in replay.teacher.named_parameters()}
    states, tasks = replay.mixed_batch(2, _sampler(frames, calls))
    assert calls == [0, 1, 2]  # only the current task's real states are ever read
    assert tasks.tolist() == [2] * 10 + [0] * 10 + [1] * 10 and states.shape == (30, 4, 84, 84)
    replay.train_steps(2, _sampler(frames, calls), steps=2)
    assert all(not p.requires_grad for p in replay.teacher.parameters())
    assert all(torch.equal(p, teacher[n]) for n, p in replay.teacher.named_parameters())


def test_state_dict_round_trip_restores_generator_and_teacher():
    torch.manual_seed(0)
    frames = {0: torch.full((4, 4, 84, 84), 100.0)}
    replay = GenerativeReplay(TaskConditionedVAE(max_tasks=2, latent_dim=4, channels=4), batch_size=4)
    replay.train_steps(0, _sampler(frames), steps=2)
    replay.consolidate(0)
    other = GenerativeReplay(TaskConditionedVAE(max_tasks=2, latent_dim=4, channels=4), batch_size=4)
    other.load_state_dict(replay.state_dict())
    assert other.known_tasks == [0] and other.seen_tasks == [0]
    torch.manual_seed(1)
    a = replay.sample(0, 3)
    torch.manual_seed(1)
    assert torch.equal(a, other.sample(0, 3))


@pytest.mark.slow
def test_after_pong_then_breakout_each_task_ids_samples_look_like_its_game():
    """Pong, then Breakout with replay of the frozen generator's Pong: a nearest-mean-frame classifier built on real
    frames recognises the game of most samples of each task id."""
    torch.manual_seed(0)
    frames = {0: _frames("Pong", 300), 1: _frames("Breakout", 300)}
    replay = GenerativeReplay(TaskConditionedVAE(), lr=1e-3, batch_size=32)
    replay.train_steps(0, _sampler(frames), steps=150)
    replay.consolidate(0)
    replay.train_steps(1, _sampler(frames), steps=150)  # Pong only through the teacher's samples
    replay.consolidate(1)
    means = torch.stack([frames[0].mean(0), frames[1].mean(0)]).flatten(1)
    for task in (0, 1):
        samples = replay.sample(task, 100).flatten(1)
        predicted = torch.cdist(samples, means).argmin(1)
        assert (predicted == task).float().mean() > 0.8, f"task {task}"


def test_small_grids_get_a_perceptron_vae_that_learns_them():
    """MinAtar-sized binary grids (values 0/255): the ELBO falls and samples have the observation's shape and range."""
    torch.manual_seed(0)
    shape = (10, 10, 10)
    prototypes = (torch.rand(4, *shape) < 0.2).float() * 255.0  # four screens: more to learn than their mean
    grids = prototypes[torch.arange(64) % 4]
    vae = TaskConditionedVAE(max_tasks=2, latent_dim=4, channels=4, obs_shape=shape)
    replay = GenerativeReplay(vae, lr=3e-3, batch_size=32)
    losses = replay.train_steps(0, lambda task, n: grids[torch.randint(64, (n,))], 150)
    assert float(losses[-1].total) < 0.5 * float(losses[0].total)
    replay.consolidate(0)
    samples = replay.sample(0, 5)
    assert samples.shape == (5, *shape) and float(samples.min()) >= 0.0 and float(samples.max()) <= 255.0
