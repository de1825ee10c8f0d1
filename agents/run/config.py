"""Run configuration: YAML files and ``key.sub=value`` overrides, validated into dataclasses.

Every field has a type and a one-line meaning; a misspelled key, a wrong type or an out-of-range value is a
``ConfigError`` that names the key, the value and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from agents.sb3.networks import NETWORK_FAMILY
from cl_rl.frame_replay import FrameReplay
from cl_rl.methods import NONE, REGISTRY, parse_method_names
from cl_rl.task_inference import FMNSettings
from envs.game_env import EnvSettings, observation_shape
from envs.games import canonical_game
from envs.sequence import GameSequence, Segment, random_sequence
from envs.vector import check_vec_settings


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the fix."""


@dataclass
class RunConfig:
    name: str = "run"  # prefix of the run directory's name
    seed: int = 0  # seeds torch, numpy, the action-space sampler and the environments
    device: str = "auto"  # torch device: auto | cpu | cuda
    checkpoint_every: int = 10_000  # agent steps between periodic checkpoints (0: only at segment ends)
    keep_checkpoints: int = 0  # newest periodic checkpoints kept (0: keep all); segment-end ones are always kept
    save_replay: bool = False  # also save the replay buffers with each checkpoint (large)
    progress_bar: bool = True  # show a progress bar over the whole sequence
    # torch intra-op CPU threads (0: torch's default, one per core). 1 because on this project's 2-core machine two
    # threads gain 29% on an idle machine's Nature-CNN step (nothing on MinAtar) but cost 1.5–42× whenever other
    # jobs share the cores: torch's threads wait on each other's turn (docs/SPEED.md, "Torch threads";
    # scripts/bench_threads.py). Raise it on a many-core machine of your own or for a wider network.
    threads: int = 1

    def __post_init__(self) -> None:
        check_device(self.device, "run.device")
        _at_least("run.checkpoint_every", self.checkpoint_every, 0)
        _at_least("run.keep_checkpoints", self.keep_checkpoints, 0)
        _at_least("run.threads", self.threads, 0)


@dataclass
class RandomSequenceConfig:
    """A seeded random order of games drawn from a pool, each visited several times (the EWC paper's protocol)."""

    pool: list[str] = field(default_factory=list)  # games to draw from
    n_games: int = 10  # how many games of the pool are used
    visits_per_game: int = 3  # segments per game
    steps_per_segment: int = 5_000_000  # agent steps per segment (5M agent steps = 20M frames, as in the paper)
    seed: int = 0  # seed of the draw and of the order


@dataclass
class SequenceConfig:
    segments: list[dict] = field(default_factory=list)  # explicit [{game: Pong, steps: 5000}, ...]
    random: RandomSequenceConfig | None = None  # or a random sequence (exactly one of the two)

    def build(self) -> GameSequence:
        if bool(self.segments) == (self.random is not None):
            raise ConfigError("sequence: give exactly one of 'sequence.segments' (a list) or 'sequence.random'")
        if self.random is not None:
            r = self.random
            try:
                return random_sequence(r.pool, r.n_games, r.visits_per_game, r.steps_per_segment, r.seed)
            except ValueError as err:
                raise ConfigError(f"sequence.random: {err}") from err
        segments = []
        for i, seg in enumerate(self.segments):
            if not isinstance(seg, dict) or set(seg) != {"game", "steps"}:
                raise ConfigError(f"sequence.segments[{i}] must be a mapping with keys 'game' and 'steps', got {seg!r}")
            if not isinstance(seg["steps"], int) or isinstance(seg["steps"], bool) or seg["steps"] <= 0:
                raise ConfigError(f"sequence.segments[{i}].steps must be a positive integer, got {seg['steps']!r}")
            try:
                segments.append(Segment(canonical_game(str(seg["game"])), seg["steps"]))
            except ValueError as err:
                raise ConfigError(f"sequence.segments[{i}].game: {err}") from err
        try:
            return GameSequence(tuple(segments))
        except ValueError as err:  # games of both families
            raise ConfigError(f"sequence.segments: {err}") from err


@dataclass
class AgentConfig:
    # Atari: Nature CNN, or the EWC paper's conv 32/64/128 + fc 1024; MinAtar: the MinAtar paper's conv 16 + fc 128
    network: Literal["nature", "ewc", "minatar"] = "nature"
    gains: Literal["element", "channel"] = "element"  # shape of the per-task gains/biases of conv layers
    # LayerNorm before every hidden activation (Lyle et al. 2024: keeps plasticity; agents/sb3/networks.py)
    layer_norm: bool = False
    double_dqn: bool = True  # Double-DQN target (van Hasselt et al. 2016), as the EWC paper's agent
    learning_rate: float = 1e-4  # Adam step size
    gamma: float = 0.99  # discount
    batch_size: int = 32  # minibatch size of each update
    buffer_size: int = 50_000  # transitions per task's replay buffer (the EWC paper: 50k per task)
    learning_starts: int = 50_000  # transitions a task's buffer holds before it is trained (per task)
    train_freq: int = 4  # agent steps (transitions, all envs together) between updates
    gradient_steps: int = 1  # updates every train_freq agent steps: the replay ratio is gradient_steps / train_freq
    # envs playing the sequence's current game side by side, all switching together; segment lengths, checkpoint_every
    # and eval.every count agent steps of all envs (multiples of n_envs), the replay ratio stays per transition
    # (agents/sb3/vector_schedule.py) and task inference watches env 0 only (ContinualDQN._observe_task)
    n_envs: int = 1
    # how the n_envs envs are stepped: 'python' runs each env's Python chain in SB3's DummyVecEnv (ALE and MinAtar);
    # 'cpp' runs the ALE games in ale-py's C++ AtariVectorEnv (envs/vector_sequence.py: faster emulation, but other
    # no-op start draws and seeding, no NOOP after a life loss; docs/SPEED.md "Several envs per task")
    vector: Literal["python", "cpp"] = "python"
    target_update_interval: int = 10_000  # agent steps between target-network syncs
    exploration_initial_eps: float = 1.0  # ε at a task's first step
    exploration_final_eps: float = 0.01  # ε after annealing
    exploration_steps: int = 1_000_000  # agent steps of annealing, counted per task
    # 'epsilon': ε-greedy (DQN); 'ez_greedy': each exploratory action held for n ~ zeta(ez_mu) steps (Dabney et al.
    # 2021), which reaches rewards a random walk does not (MinAtar Freeway); cl_rl/exploration.py
    exploration: Literal["epsilon", "ez_greedy"] = "epsilon"
    ez_mu: float = 2.0  # zeta exponent of ez-greedy's durations (the paper's 2; must be > 1)
    max_grad_norm: float = 10.0  # gradient clipping
    # replay storage: 'frames' stores each frame once (~7 KB per 84×84 transition); 'sb3' is SB3's ReplayBuffer (56 KB;
    # 2 KB per MinAtar transition, whose grids are not frame stacks: MinAtar needs 'sb3')
    replay: Literal["frames", "sb3"] = "frames"
    replay_memory_gb: float = 0.0  # budget for all tasks' buffers together, GiB (0: none); oldest tasks freed first
    # n-step TD targets (Sutton 1988; Rainbow's n = 3): rewards summed over n steps, bootstrapped with γ^n, cut at an
    # episode's end or a switch; SB3's NStepReplayBuffer, so 'sb3' replay only; 1: the one-step DQN target
    n_step: int = 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "buffer_size", "train_freq", "gradient_steps", "target_update_interval", "n_envs"):
            _at_least(f"agent.{name}", getattr(self, name), 1)
        _at_least("agent.learning_starts", self.learning_starts, 0)
        _at_least("agent.n_step", self.n_step, 1)
        if self.n_step > 1 and self.replay != "sb3":
            raise ConfigError(
                f"agent.n_step={self.n_step} needs agent.replay: sb3 (SB3's NStepReplayBuffer); the frame replay "
                "('frames') keeps one-step transitions only: set agent.replay=sb3 or agent.n_step=1"
            )
        _at_least("agent.exploration_steps", self.exploration_steps, 0)
        for name in ("exploration_initial_eps", "exploration_final_eps", "gamma"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"agent.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.ez_mu <= 1.0:
            raise ConfigError(f"agent.ez_mu must be > 1 (the zeta distribution's exponent), got {self.ez_mu}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ConfigError("agent.learning_rate and agent.max_grad_norm must be > 0")
        if self.replay_memory_gb < 0:
            raise ConfigError(f"agent.replay_memory_gb must be >= 0 (0: no budget), got {self.replay_memory_gb}")
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"agent.batch_size ({self.batch_size}) is larger than agent.buffer_size ({self.buffer_size}): "
                "lower the batch or enlarge the buffer"
            )


def _method_config_class() -> type:
    """``method:``: the name of the method(s) and one settings section per registered method (cl_rl/methods)."""

    def check(self: Any) -> None:
        parse_method_names(self.name)

    fields: list[tuple[str, type, Any]] = [("name", str, field(default=NONE))]
    fields += [(name, spec.settings, field(default_factory=spec.settings)) for name, spec in REGISTRY.items()]
    cls = dataclasses.make_dataclass("MethodConfig", fields, namespace={"__post_init__": check})
    cls.__module__ = __name__  # so that pickle finds it as agents.run.config.MethodConfig
    cls.__doc__ = (
        "The continual-learning method: `name` is none (fine-tuning), a registered method or several joined by '+'; "
        "each method's settings are in the section of its name (defaults: its dataclass in cl_rl/methods)."
    )
    return cls


MethodConfig: Any = _method_config_class()  # built at import from the method registry: mypy cannot see its fields


@dataclass
class TaskConfig:
    """Where the current task id comes from (cl_rl/task_source.py, cl_rl/task_inference.py)."""

    # fmn: inferred from the frames alone (the EWC paper's flat forget-me-not); oracle: the true game's label
    source: Literal["fmn", "oracle"] = "fmn"
    fmn: FMNSettings = field(default_factory=FMNSettings)  # settings of the inference (paper's values by default)


@dataclass
class EvalConfig:
    """Scores on every game while training (agents/evaluation/periodic_evaluation.py), training untouched."""

    enabled: bool = True  # evaluate at every segment end (and every `every` agent steps)
    every: int = 0  # agent steps between evaluations besides the segment ends (0: segment ends only)
    episodes: int = 3  # full episodes per game per evaluation
    epsilon: float = 0.05  # ε of the evaluation policy (0.05 as in Mnih et al. 2015 and the EWC paper)
    # task id: 'configured' asks a copy of the agent's own task source (task.source), so that retention includes
    # recognising the game; 'oracle' uses the true game
    task_source: Literal["configured", "oracle"] = "configured"
    seed: int = 0  # seed of the evaluation envs and ε draws (separate from training's streams)

    def __post_init__(self) -> None:
        _at_least("eval.every", self.every, 0)
        _at_least("eval.episodes", self.episodes, 1)
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"eval.epsilon must lie in [0, 1], got {self.epsilon}")


@dataclass
class LogConfig:
    """What a run logs besides SB3's own scalars (agents/run/plasticity.py)."""

    # agent steps between the plasticity diagnostics (plasticity/…: dormant units, feature ranks, norms, churn; 0:
    # only at task switches); 1,000 costs about 0.5 % of a MinAtar run (docs/PLASTICITY.md, scripts/bench_speed.py)
    plasticity_every: int = 1_000
    probe_size: int = 256  # states of each task's replay memory in its fixed probe batch
    dormant_tau: float = 0.025  # a unit is τ-dormant when its normalised mean activation is <= τ (Sokar et al. 2023)

    def __post_init__(self) -> None:
        _at_least("log.plasticity_every", self.plasticity_every, 0)
        _at_least("log.probe_size", self.probe_size, 2)
        if self.dormant_tau < 0:
            raise ConfigError(f"log.dormant_tau must be >= 0, got {self.dormant_tau}")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvSettings = field(default_factory=EnvSettings)  # ALE preprocessing; env.minatar: MinAtar games' settings
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)  # type: ignore[valid-type]
    task: TaskConfig = field(default_factory=TaskConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- loading -------------------------------------------------------------------------------------------------
def load_config(path: str | Path, overrides: list[str] = ()) -> Config:  # type: ignore[assignment]
    """Read a YAML config, apply ``key.sub=value`` overrides, validate. Raises ``ConfigError``."""
    path = Path(path)
    if path.is_dir():
        found = ", ".join(sorted(p.name for p in path.glob("*.yaml"))) or "none"
        raise ConfigError(
            f"{str(path)!r} is a directory, not a config file; pass one YAML file in it (found: {found}), "
            "e.g. configs/first_run.yaml"
        )
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass a YAML file such as configs/first_run.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> Config:
    old = [key for key in ("consolidation", "distill") if key in data]
    if old:
        raise ConfigError(
            f"config section(s) {', '.join(map(repr, old))} were replaced by 'method': write method.name: ewc (or "
            "online_ewc, mas, generative_replay, lwf, ..., several joined by '+') and each method's settings under "
            "method.<name>, e.g. method.ewc.lam: 400 (see docs/METHODS.md)"
        )
    config = _build(Config, data, "")
    sequence = config.sequence.build()  # validates games and steps now rather than at the first switch
    _check_game_family(config, sequence)
    _check_replay_budget(config)
    _check_n_envs(config, sequence)
    _check_vector(config, sequence)
    return config


def _check_vector(config: Config, sequence: GameSequence) -> None:
    """agent.vector=cpp needs ALE games and env settings that ale-py's C++ AtariVectorEnv can take."""
    if config.agent.vector != "cpp":
        return
    if sequence.family != "ale":
        raise ConfigError(
            f"agent.vector='cpp' steps ale-py's C++ AtariVectorEnv, which has no MinAtar games (the sequence plays "
            f"{', '.join(sequence.games)}): set agent.vector: python"
        )
    try:
        check_vec_settings(config.env, config.agent.n_envs)
    except ValueError as err:
        raise ConfigError(
            f"agent.vector='cpp' cannot honour the env settings: {err}. Or keep them with agent.vector: python"
        ) from err


def _check_n_envs(config: Config, sequence: GameSequence) -> None:
    """Step counts must be multiples of agent.n_envs: the envs step together, n_envs agent steps at a time."""
    n = config.agent.n_envs
    if n == 1:
        return
    counts = [(f"sequence segment {i} ({s.game}) steps", s.steps) for i, s in enumerate(sequence.segments)]
    counts += [("run.checkpoint_every", config.run.checkpoint_every), ("eval.every", config.eval.every)]
    for name, value in counts:
        if value % n:
            low = value - value % n
            raise ConfigError(
                f"{name}={value} is not a multiple of agent.n_envs={n}: the {n} envs take {n} agent steps at a time "
                f"and switch games together; use {low or n} or {low + n}, or change agent.n_envs"
            )


def _check_game_family(config: Config, sequence: GameSequence) -> None:
    """Refuse the settings that cannot play the sequence's family of games (ALE frames or MinAtar grids)."""
    family, a = sequence.family, config.agent
    if NETWORK_FAMILY[a.network] != family:
        fits = sorted(name for name, f in NETWORK_FAMILY.items() if f == family)
        shape = "x".join(map(str, observation_shape(family, config.env)))
        raise ConfigError(
            f"agent.network={a.network!r} is sized for {NETWORK_FAMILY[a.network]} games, but the sequence plays "
            f"{family} games ({sequence.games[0]}, ... with {shape} observations): set agent.network to "
            f"{' or '.join(map(repr, fits))}"
        )
    if family != "minatar":
        return
    if a.replay == "frames":
        raise ConfigError(
            "agent.replay='frames' stores stacks of single frames, but a MinAtar observation is one 10×10 grid of 10 "
            "object channels (no frame stack): set agent.replay: sb3 for MinAtar games"
        )


def replay_bytes_per_task(config: Config) -> int:
    """Bytes one task's replay buffer allocates with this config's observation shape and buffer size."""
    a = config.agent
    shape = observation_shape(config.sequence.build().family, config.env)
    if a.replay == "frames":
        return FrameReplay.bytes_needed(a.buffer_size, shape)
    obs_bytes = shape[0] * shape[1] * shape[2]  # uint8
    return a.buffer_size * (2 * obs_bytes + 8 + 4 + 4 + 4)  # obs, next_obs, action, reward, done, timeout


def _check_replay_budget(config: Config) -> None:
    budget = config.agent.replay_memory_gb * 2**30
    need = replay_bytes_per_task(config)
    if budget and need > budget:
        raise ConfigError(
            f"agent.replay_memory_gb={config.agent.replay_memory_gb} is smaller than one task's replay buffer "
            f"({need / 2**30:.2f} GiB for agent.buffer_size={config.agent.buffer_size}): raise the budget, lower "
            "agent.buffer_size, or set agent.replay_memory_gb=0 for no budget"
        )


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override (``sequence.segments.0.steps=500`` indexes a list); YAML-parsed value."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form key.sub=value (for example agent.batch_size=64)")
    *parents, leaf = key.strip().split(".")
    node: Any = data
    for part in parents:
        if isinstance(node, list):
            node = node[_list_index(node, part, override)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {err}") from err
    if isinstance(node, list):
        node[_list_index(node, leaf, override)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ConfigError(f"override {override!r}: {parents[-1]!r} is not a section")


def _list_index(items: list, part: str, override: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"override {override!r}: {part!r} is not an index of a list of {len(items)} item(s)")
    return int(part)


def flatten_settings(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys (``agent.learning_rate``) with scalar values (others as text)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_settings(value, name + "."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def settings_in_use(config: Config) -> dict[str, Any]:
    """The flattened settings that decide what a run trains: those of the methods it does not use and, with oracle
    task ids, those of the task inference are left out, so a new default there does not make a finished run stale."""
    used = set(parse_method_names(config.method.name))
    unused = tuple(f"method.{name}." for name in REGISTRY if name not in used)
    if config.task.source == "oracle":
        unused += ("task.fmn.",)
    return {k: v for k, v in flatten_settings(config.to_dict()).items() if not k.startswith(unused)}


RESUME_MAY_CHANGE = ("run.", "eval.", "log.")  # sections a resume may change: how a run is driven, not what it is


def run_identity(config: Config) -> dict[str, Any]:
    """The settings that define what a run is (``settings_in_use`` without the ``RESUME_MAY_CHANGE`` sections): saved
    in each checkpoint, and compared with the config a run is resumed with."""
    return {k: v for k, v in settings_in_use(config).items() if not k.startswith(RESUME_MAY_CHANGE)}


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where or 'config'}: {err}") from err


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, where)  # a hint is a class, not an instance
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r} ({type(value).__name__})")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r} ({type(value).__name__})")
        return value
    raise AssertionError(f"config field {where} has an unsupported type {hint!r}")


def check_device(device: str, name: str) -> None:
    """``ConfigError`` unless ``device`` is ``auto`` or a torch device (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    if device == "auto":
        return
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{name} must be auto, cpu, cuda or cuda:N (a torch device), got {device!r}") from None


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
