import numpy as np
import pytest

from cl_rl.exploration import PerTaskEpsilon, TemporallyExtendedExploration


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


# --- ez-greedy (cl_rl.exploration.TemporallyExtendedExploration) ------------------------------------------------------


def _counter():
    """An action sampler whose every draw is a new action id, so that each run of one id is one hold."""
    state = {"n": 0}

    def sample() -> int:
        state["n"] += 1
        return state["n"]

    return sample


def _never_greedy(envs):
    raise AssertionError(f"greedy asked for envs {envs} while every env explores")


def test_ez_greedy_holds_each_exploratory_action_for_a_zeta_distributed_duration():
    np.random.seed(0)
    ez = TemporallyExtendedExploration(mu=2.0)
    sample = _counter()
    actions = [int(ez.choose(1.0, 1, sample, _never_greedy)[0]) for _ in range(40_000)]
    runs = np.diff(np.flatnonzero(np.diff(actions, prepend=-1, append=-1)))  # lengths of the runs of one action
    runs = runs[:-1]  # the last hold may be cut off by the end of the loop
    # zeta(2): P(n) = n^-2 / ζ(2), ζ(2) = π²/6; within 3 standard errors of the runs' frequencies
    for n in (1, 2, 3):
        p = 6 / np.pi**2 / n**2
        assert np.mean(runs == n) == pytest.approx(p, abs=3 * np.sqrt(p * (1 - p) / len(runs)))
    assert runs.max() > 100  # heavy tail: the repeats that carry a random walk far


def test_ez_greedy_asks_the_greedy_policy_only_for_the_envs_not_exploring():
    np.random.seed(1)
    ez = TemporallyExtendedExploration(mu=1.5)
    asked: list[list[int]] = []
    mixed = False

    def greedy(envs):
        asked.append(list(envs))
        return np.full(len(envs), -7)

    for _ in range(200):
        asked.clear()
        holding = ez.left > 0 if len(ez.left) else np.zeros(4, bool)
        held = ez.action.copy() if len(ez.action) else np.zeros(4, int)
        actions = ez.choose(0.3, 4, _counter(), greedy)
        # a held action is taken again; an env asked for a greedy action takes it
        assert np.all(actions[holding] == held[holding])
        if asked:
            assert np.all(actions[asked[0]] == -7) and not holding[asked[0]].any()
            mixed = mixed or 0 < len(asked[0]) < 4
    assert mixed  # some steps mix exploring and greedy envs
    ez.choose(0.0, 4, _counter(), greedy)
    ez.end_holds()
    asked.clear()
    assert np.all(ez.choose(0.0, 4, _counter(), greedy) == -7) and asked == [[0, 1, 2, 3]]


def test_ez_greedy_hold_ends_with_the_episode():
    np.random.seed(2)
    ez = TemporallyExtendedExploration(mu=1.01, max_duration=1_000)  # holds almost never end by themselves
    ez.choose(1.0, 2, _counter(), _never_greedy)
    assert np.all(ez.left > 0)
    ez.end_holds(np.array([1]))
    assert ez.left[0] > 0 and ez.left[1] == 0
    with pytest.raises(ValueError, match="mu must be > 1"):
        TemporallyExtendedExploration(mu=1.0)


def test_ez_greedy_reaches_freeways_reward_where_a_random_walk_does_not():
    """Random play in MinAtar Freeway: uniform actions almost never cross; held ones do (Dabney et al. 2021, Fig. 1)."""
    from envs.minatar import MinAtarSettings, make_minatar_env

    def crossings(ez: TemporallyExtendedExploration | None) -> float:
        np.random.seed(0)
        env = make_minatar_env("MinAtar/Freeway", MinAtarSettings(), seed=0)
        total = 0.0
        for episode in range(3):
            env.reset(seed=episode)
            done = False
            while not done:
                if ez is None:
                    action = int(env.action_space.sample())
                else:
                    action = int(ez.choose(1.0, 1, env.action_space.sample, _never_greedy)[0])
                _, reward, terminated, truncated, _ = env.step(action)
                total, done = total + reward, terminated or truncated
            if ez is not None:
                ez.end_holds()
        return total / 3

    assert crossings(TemporallyExtendedExploration(2.0)) >= 1.0 > crossings(None) + 0.5


def test_the_agent_explores_with_held_actions_saves_its_holds_and_ends_them_at_a_switch(tmp_path):
    """ContinualDQN with ``agent.exploration: ez_greedy`` on MinAtar Freeway → Breakout, a few hundred steps."""
    from stable_baselines3.common.logger import configure

    from agents.run.config import load_config
    from agents.run.training import make_agent, make_stream
    from agents.sb3.continual_dqn import ContinualDQN
    from tests.conftest import REPO

    overrides = [
        "sequence.segments=[{game: MinAtar/Freeway, steps: 400}, {game: MinAtar/Breakout, steps: 100}]",
        "agent.exploration=ez_greedy",
        "agent.learning_starts=200",
        "agent.buffer_size=1000",
        "task.source=oracle",
    ]
    config = load_config(REPO / "configs" / "minatar_table.yaml", overrides)
    sequence = config.sequence.build()
    stream, env = make_stream(config, sequence)
    model = make_agent(config, env)
    model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard"]))
    model.learn(400)  # ends with the switch to Breakout
    assert model.ez is not None and model.current_task == 1
    actions = model.replay_buffer.buffer(0).actions[:400, 0, 0]
    # Uniform draws over 6 actions repeat the previous one 1/6 of the time; held ones far more often (ε = 1 while
    # the buffer warms up, ε annealing from 1 afterwards).
    assert np.mean(actions[1:] == actions[:-1]) > 0.4
    path = tmp_path / "model.zip"
    model.ez.left[:] = 5  # a hold under way when the checkpoint is taken
    model.save(path)
    loaded = ContinualDQN.load(path, env=env, device="cpu")
    assert loaded.ez is not None and loaded.ez.mu == 2.0
    assert np.array_equal(loaded.ez.left, model.ez.left) and np.array_equal(loaded.ez.action, model.ez.action)
    model.switch_task(0)
    assert np.all(model.ez.left == 0)
    stream.close()
    with pytest.raises(Exception, match="ez_mu must be > 1"):
        load_config(REPO / "configs" / "minatar_table.yaml", ["agent.ez_mu=1.0"])


def test_with_two_envs_each_episode_starts_a_new_hold_and_greedy_acts_on_its_own_envs_observation(tmp_path):
    """Holds of μ ≈ 1 last thousands of steps unless an episode's end (or a resumed run) ends them: 20-step episodes."""
    from stable_baselines3.common.logger import configure

    from agents.run.config import load_config
    from agents.run.training import make_agent, make_stream
    from tests.conftest import REPO

    overrides = [
        "sequence.segments=[{game: MinAtar/Breakout, steps: 400}]",
        "agent.exploration=ez_greedy",
        "agent.ez_mu=1.001",
        "agent.n_envs=2",
        "agent.learning_starts=400",  # ε = 1 throughout: every step explores
        "agent.buffer_size=1000",
        "env.minatar.max_episode_steps=20",
        "task.source=oracle",
    ]
    config = load_config(REPO / "configs" / "minatar_table.yaml", overrides)
    stream, env = make_stream(config, config.sequence.build())
    model = make_agent(config, env)
    model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard"]))
    model.learn(398)
    buffer = model.replay_buffer.buffer(0)
    actions, dones = buffer.actions[: buffer.pos, :, 0], buffer.dones[: buffer.pos]
    same = actions[1:] == actions[:-1]  # (row, env): the action of the row before is taken again
    starts = dones[:-1].astype(bool)  # rows that start an episode (the row before ended one)
    assert starts.sum() >= 20
    # A new hold at each episode's start: the same action again only by the uniform draw's chance (1/6) ...
    assert same[starts].mean() < 0.4
    # ... while within an episode the hold goes on (μ ≈ 1: durations of thousands of steps, mostly)
    assert same[~starts].mean() > 0.9
    # Greedy actions of a subset of envs come from those envs' own observations.
    obs = np.stack([buffer.observations[5, 0], buffer.observations[9, 1]])
    model._last_obs = obs
    assert model._greedy_of_envs(np.array([1]))[0] == model._greedy(obs[1:])[0]
    assert model._greedy_of_envs(np.array([0]))[0] == model._greedy(obs[:1])[0]
    # A resumed run starts fresh episodes: no hold carries into them.
    model.ez.left[:] = 3
    model._last_obs = None
    model._setup_learn(10, reset_num_timesteps=False)
    assert np.all(model.ez.left == 0)
    stream.close()
