"""GEM/A-GEM projections, VCL's Gaussian maths and local reparameterisation; every new method on real games."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from agents.run.config import load_config
from agents.run.training import make_agent, make_stream
from agents.sb3.continual_dqn import ContinualDQN
from cl_rl.methods.base import ContinualMethod
from cl_rl.methods.gem import agem_project, gem_project
from cl_rl.methods.vcl import gaussian_kl, local_reparameterised
from tests.conftest import MINATAR_TINY_AGENT, REPO


def _closest_in_cone(g: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Brute force over active sets: the L2-closest x to g with G x ≥ 0 (KKT: x = g + Gᵀv, v ≥ 0, v ⊥ Gx)."""
    best, best_dist = None, np.inf
    for r in range(len(G) + 1):
        for active in itertools.combinations(range(len(G)), r):
            a = G[list(active)]
            v = np.linalg.solve(a @ a.T, -a @ g) if r else np.zeros(0)
            if r and (v < -1e-9).any():
                continue
            x = g + a.T @ v if r else g.copy()
            if (G @ x < -1e-7).any():
                continue
            if np.linalg.norm(x - g) < best_dist:
                best, best_dist = x, np.linalg.norm(x - g)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(8))
def test_gem_projection_meets_every_constraint_and_is_the_closest(seed):
    rng = np.random.default_rng(seed)
    k, p = int(rng.integers(1, 5)), 12
    G = rng.normal(size=(k, p))
    g = rng.normal(size=p) - 0.8 * G.sum(0)  # pointing against the memories: projections happen
    projected = gem_project(torch.tensor(g), torch.tensor(G), eps=0.0).numpy()
    assert (G @ projected >= -1e-6).all()
    np.testing.assert_allclose(projected, _closest_in_cone(g, G), atol=1e-6)
    for _ in range(200):  # no random feasible point is closer
        x = projected + rng.normal(scale=0.3, size=p)
        if (G @ x >= 0).all():
            assert np.linalg.norm(x - g) >= np.linalg.norm(projected - g) - 1e-9


def test_gem_projection_leaves_a_gradient_that_already_agrees():
    G = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    g = torch.tensor([0.5, 2.0, -3.0], dtype=torch.float64)
    torch.testing.assert_close(gem_project(g, G, eps=0.0), g)


def test_agem_projection_is_orthogonal_when_it_applies_and_identity_otherwise():
    torch.manual_seed(0)
    g_ref = torch.randn(50, dtype=torch.float64)
    g = -g_ref + 0.1 * torch.randn(50, dtype=torch.float64)
    projected = agem_project(g, g_ref)
    assert abs(float(torch.dot(projected, g_ref))) < 1e-10
    torch.testing.assert_close(projected - g, (projected - g).dot(g_ref) / g_ref.dot(g_ref) * g_ref)  # along g_ref
    agreeing = g_ref + 0.1 * torch.randn(50, dtype=torch.float64)
    assert torch.equal(agem_project(agreeing, g_ref), agreeing)


def test_gaussian_kl_closed_form_equals_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mu, sigma = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.3
    mu_p, sigma_p = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5
    q, p = torch.distributions.Normal(mu, sigma), torch.distributions.Normal(mu_p, sigma_p)
    x = q.sample((400_000,))
    monte_carlo = (q.log_prob(x) - p.log_prob(x)).sum(1).mean()
    closed = gaussian_kl(mu, sigma, mu_p, sigma_p)
    assert abs(float(closed - monte_carlo)) < 0.02 * float(closed) + 1e-3
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(q, p).sum())


@pytest.mark.parametrize("layer", [nn.Linear(6, 3), nn.Conv2d(2, 3, 3)])
def test_local_reparameterisation_matches_sampling_the_weights(layer):
    """Same output mean and variance as drawing W ~ N(μ, σ²) per sample, estimated from many draws."""
    torch.manual_seed(0)
    x = torch.randn(1, 6) if isinstance(layer, nn.Linear) else torch.randn(1, 2, 4, 4)
    log_sw = torch.full_like(layer.weight, -1.0) + 0.3 * torch.randn_like(layer.weight)
    log_sb = torch.full_like(layer.bias, -1.5)
    n = 20_000
    with torch.no_grad():
        mean_out = layer(x)
        local = local_reparameterised(
            layer, x.expand(n, *x.shape[1:]), mean_out.expand(n, *mean_out.shape[1:]), log_sw, log_sb
        )
        w = layer.weight + log_sw.exp() * torch.randn(n, *layer.weight.shape)
        b = layer.bias + log_sb.exp() * torch.randn(n, *layer.bias.shape)
        if isinstance(layer, nn.Linear):
            sampled = torch.einsum("noi,i->no", w, x[0]) + b
        else:
            sampled = torch.stack(
                [torch.nn.functional.conv2d(x, w[i], b[i])[0] for i in range(2_000)]
            )  # fewer draws: one conv call each
    m = sampled.shape[0]
    torch.testing.assert_close(local.mean(0), sampled.mean(0), atol=6 * sampled.std(0).max() / m**0.5, rtol=0)
    torch.testing.assert_close(local.var(0), sampled.var(0), rtol=0.15, atol=1e-3)


# A few hundred steps of real MinAtar games: the methods' machinery at a small network's cost.
MINATAR_TINY = [
    "sequence.segments=[{game: MinAtar/Breakout, steps: 200}, {game: MinAtar/SpaceInvaders, steps: 150}, "
    "{game: MinAtar/Breakout, steps: 150}]",
    *MINATAR_TINY_AGENT,
]


@pytest.mark.parametrize("method", ["gem", "agem", "rehearsal", "vcl", "vcl+generative_replay"])
def test_each_method_trains_on_real_games_logs_and_round_trips_a_checkpoint(method, tmp_path):
    """MinAtar Breakout 200 → SpaceInvaders 150 → Breakout 150: the method acts from the first switch on, its
    statistics reach TensorBoard, and save/load brings its state back."""
    overrides = [
        *MINATAR_TINY,
        f"method.name={method}",
        "method.gem.batch_size=8",
        "method.agem.batch_size=8",
        "method.rehearsal.batch_size=8",
        "method.vcl.coreset_size=16",
        "method.vcl.coreset_batch=8",
        "method.generative_replay.batch_size=8",
        "method.generative_replay.generator.channels=4",
        "method.generative_replay.generator.latent_dim=4",
        "method.generative_replay.generator.steps_per_switch=3",
        "eval.enabled=false",
    ]
    config = load_config(REPO / "configs" / "minatar.yaml", overrides)
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard"]))
    model.learn(sequence.total_steps, log_interval=1)
    stream.close()
    acc = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {
        "gem": {"train/gem/projected", "train/gem/cos_before", "train/gem/cos_after", "train/gem/seconds_per_update"},
        "agem": {"train/agem/projected", "train/agem/cos_after"},
        "rehearsal": {"train/penalty/rehearsal/td"},
        "vcl": {"train/penalty/vcl/kl", "train/penalty/vcl/coreset", "consolidation/vcl/sigma_mean"},
        "vcl+generative_replay": {"train/penalty/vcl/kl", "train/penalty/generative_replay/distill"},
    }[method]
    assert expected <= tags, expected - tags
    if method in ("gem", "agem"):
        after = [e.value for e in acc.Scalars(f"train/{method}/cos_after")]
        assert min(after) >= -1e-4  # the update never points against an earlier task's gradient

    model.save(tmp_path / "model.zip")
    loaded = ContinualDQN.load(tmp_path / "model.zip")
    assert [m.name for m in loaded.methods] == [m.name for m in model.methods]
    for before, after in zip(model.methods, loaded.methods, strict=True):
        _assert_same_state(before.state_dict(), after.state_dict())


def test_vcl_learns_sigmas_and_acts_with_the_posterior_mean(tmp_path):
    config = load_config(REPO / "configs" / "tiny.yaml", ["method.name=vcl", "eval.enabled=false"])
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(None, [""]))
    model.learn(sequence.total_steps)
    stream.close()
    (vcl,) = model.methods
    sigmas = torch.cat([s.detach().flatten() for s in vcl.sigma_parameters()])
    assert not torch.allclose(sigmas, torch.full_like(sigmas, vcl.config.init_log_sigma))  # the log σ were trained
    obs = model.sample(0, 4).observations
    with torch.no_grad():
        assert torch.equal(model.q_net(obs), model.q_net(obs))  # no noise outside updates
    vcl._sampling = True
    noisy = [model.q_net(obs) for _ in range(2)]  # with grad: sampled outputs
    vcl._sampling = False
    assert not torch.equal(noisy[0], noisy[1])


class _EpisodeCounter(ContinualMethod):
    """Counts the agent's calls of the acting hooks."""

    name = "counter"

    def __init__(self) -> None:
        self.episodes, self.acting_calls = 0, 0

    def on_episode_start(self, task: int) -> None:
        self.episodes += 1

    def acting(self):
        self.acting_calls += 1
        return super().acting()


def _vcl_agent(thompson: bool, tmp_path):
    """VCL on 300 steps of MinAtar Breakout, its episodes cut at 50 steps."""
    overrides = [
        "sequence.segments=[{game: MinAtar/Breakout, steps: 300}]",
        "env.minatar.max_episode_steps=50",
        "task.source=oracle",
        "agent.buffer_size=1000",
        "agent.learning_starts=64",
        "agent.exploration_steps=100",
        "eval.enabled=false",
        "method.name=vcl",
        f"method.vcl.thompson={thompson}",
    ]
    config = load_config(REPO / "configs" / "minatar_table.yaml", overrides)
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(None, [""]))
    counter = _EpisodeCounter()
    model.methods.append(counter)
    model.learn(sequence.total_steps)
    stream.close()
    return model, counter


def test_vcl_thompson_acts_with_one_sampled_theta_per_episode(tmp_path):
    """thompson=true: every greedy action of an episode comes from θ = μ + σ ⊙ ε with ε drawn at its start."""
    model, counter = _vcl_agent(True, tmp_path)
    # The agent calls the hooks: once per episode start (episodes last at most 50 steps) and around acting.
    assert counter.episodes >= 5 and counter.acting_calls > 100
    vcl = model.methods[0]
    obs = model.sample(0, 16).observations
    with torch.inference_mode():
        mean = model.q_net(obs)
        torch.manual_seed(0)
        vcl.on_episode_start(0)
        with vcl.acting():
            first, again = model.q_net(obs), model.q_net(obs)
        vcl.on_episode_start(0)
        with vcl.acting():
            second = model.q_net(obs)
        torch.manual_seed(0)
        vcl.on_episode_start(0)
        with vcl.acting():
            reseeded = model.q_net(obs)
        assert torch.equal(model.q_net(obs), mean)  # outside acting (targets, evaluation): the posterior mean
    assert torch.equal(first, again) and torch.equal(first, reseeded)  # one θ within an episode, seeded
    assert not torch.allclose(first, second) and not torch.allclose(first, mean)  # a new θ at the next episode
    # The same Q-values from a network whose weights are θ = μ + σ ⊙ ε with the ε of the last draw.
    torch.manual_seed(0)
    vcl.on_episode_start(0)
    theta_net = copy.deepcopy(model.q_net)
    layers = [m for m in theta_net.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        for layer, log_sigma, eps in zip(layers, vcl.log_sigma, vcl._episode_noise, strict=True):
            for key, s in log_sigma.items():
                getattr(layer, key).add_(s.exp() * eps[key])
        torch.testing.assert_close(theta_net(obs), reseeded, rtol=1e-5, atol=1e-6)
    # The agent's greedy action is the sampled θ's argmax.
    model.exploration_rate = 0.0
    assert np.array_equal(model._act(obs.cpu().numpy()), reseeded.argmax(1).cpu().numpy())
    model.save(tmp_path / "model.zip")
    loaded = ContinualDQN.load(tmp_path / "model.zip")
    assert loaded.methods[0].config.thompson
    _assert_same_state(vcl.state_dict(), loaded.methods[0].state_dict())


def test_vcl_without_thompson_acts_with_the_mean_and_draws_nothing(tmp_path):
    model, counter = _vcl_agent(False, tmp_path)
    assert counter.episodes >= 5
    vcl = model.methods[0]
    obs = model.sample(0, 16).observations
    rng = torch.get_rng_state()
    with torch.inference_mode():
        mean = model.q_net(obs)
        vcl.on_episode_start(0)
        with vcl.acting():
            acted = model.q_net(obs)
    assert torch.equal(acted, mean) and torch.equal(torch.get_rng_state(), rng)
    model.exploration_rate = 0.0
    assert np.array_equal(model._act(obs.cpu().numpy()), mean.argmax(1).cpu().numpy())


def _assert_same_state(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_state(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_state(x, y)
    else:
        assert a == b
