"""Continual-learning methods, each one module reached through one port (``base.AgentPort``) and one registry line.

``REGISTRY`` maps a method's name to its settings dataclass (every default lives there) and its factory
``(name, settings, agent) -> ContinualMethod``. A run selects methods by name; several combine with ``+``
(``vcl+generative_replay``, ``ewc+lwf``), their loss terms adding up and their hooks called in the order given.
Adding a method: write ``cl_rl/methods/<method>.py`` with a settings dataclass and a ``ContinualMethod`` subclass,
then add its line below.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cl_rl.methods.base import AgentPort, ContinualMethod, Stats, Transitions
from cl_rl.methods.cchain import CChain, CChainConfig
from cl_rl.methods.distillation import Distillation, GenerativeReplayConfig, LwFConfig
from cl_rl.methods.gem import GEMConfig, GradientEpisodicMemory
from cl_rl.methods.l2_init import L2Init, L2InitConfig
from cl_rl.methods.quadratic import EWCConfig, MASConfig, OnlineEWCConfig, QuadraticMethod
from cl_rl.methods.redo import ReDo, ReDoConfig
from cl_rl.methods.rehearsal import Rehearsal, RehearsalConfig
from cl_rl.methods.reset_optimizer import ResetOptimizer, ResetOptimizerConfig
from cl_rl.methods.shrink_perturb import ShrinkPerturb, ShrinkPerturbConfig
from cl_rl.methods.vcl import VariationalContinualLearning, VCLConfig

Factory = Callable[[str, Any, AgentPort], ContinualMethod]


@dataclass(frozen=True)
class MethodSpec:
    settings: type  # a dataclass whose defaults are the method's defaults
    factory: Factory
    summary: str


REGISTRY: dict[str, MethodSpec] = {
    "ewc": MethodSpec(EWCConfig, QuadraticMethod, "EWC, one anchor per earlier task (Kirkpatrick et al. 2017)"),
    "online_ewc": MethodSpec(OnlineEWCConfig, QuadraticMethod, "online EWC (Schwarz et al. 2018)"),
    "mas": MethodSpec(MASConfig, QuadraticMethod, "Memory Aware Synapses (Aljundi et al. 2018)"),
    "generative_replay": MethodSpec(GenerativeReplayConfig, Distillation, "generated states, Q distilled (RePR)"),
    "lwf": MethodSpec(LwFConfig, Distillation, "Learning without Forgetting (Li & Hoiem 2017)"),
    "gem": MethodSpec(GEMConfig, GradientEpisodicMemory, "Gradient Episodic Memory (Lopez-Paz & Ranzato 2017)"),
    "agem": MethodSpec(GEMConfig, GradientEpisodicMemory, "Averaged GEM (Chaudhry et al. 2019)"),
    "rehearsal": MethodSpec(RehearsalConfig, Rehearsal, "TD rehearsal of earlier tasks' memories (CLEAR-style)"),
    "vcl": MethodSpec(VCLConfig, VariationalContinualLearning, "Variational Continual Learning (Nguyen et al. 2018)"),
    # Plasticity interventions (docs/PLASTICITY.md), alone or with a method above: ewc+redo
    "redo": MethodSpec(ReDoConfig, ReDo, "recycle dormant units (ReDo, Sokar et al. 2023)"),
    "shrink_perturb": MethodSpec(ShrinkPerturbConfig, ShrinkPerturb, "Shrink & Perturb at switches (Ash & Adams 2020)"),
    "l2_init": MethodSpec(L2InitConfig, L2Init, "L2 towards the initial weights (Kumar et al. 2023)"),
    "reset_optimizer": MethodSpec(
        ResetOptimizerConfig, ResetOptimizer, "optimiser reset at switches (Asadi et al. 2023)"
    ),
    "cchain": MethodSpec(CChainConfig, CChain, "churn reduction (C-CHAIN, Tang et al. 2025)"),
}
NONE = "none"  # plain fine-tuning: no method


def parse_method_names(spec: str) -> list[str]:
    """``'ewc+lwf'`` → ``['ewc', 'lwf']``; ``'none'`` → ``[]``. Raises ``ValueError`` naming the unknown name."""
    names = [part.strip() for part in spec.split("+") if part.strip()]
    if names == [NONE]:
        return []
    for name in names:
        if name not in REGISTRY:
            close = difflib.get_close_matches(name, list(REGISTRY), n=2)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(
                f"unknown method {name!r}: {hint}known methods: {NONE}, {', '.join(REGISTRY)} (combine with '+')"
            )
    if not names or len(set(names)) != len(names):
        raise ValueError(f"method name {spec!r} must name each method once, e.g. 'ewc' or 'vcl+generative_replay'")
    return names


def build_methods(spec: str, settings: Mapping[str, Any], agent: AgentPort) -> list[ContinualMethod]:
    """The methods of ``spec`` (``'ewc'``, ``'vcl+generative_replay'``, ``'none'``), each with its settings."""
    methods = []
    for name in parse_method_names(spec):
        entry = REGISTRY[name]
        config = settings.get(name) or entry.settings()
        methods.append(entry.factory(name, config, agent))
    return methods


__all__ = [
    "NONE",
    "REGISTRY",
    "AgentPort",
    "ContinualMethod",
    "MethodSpec",
    "Stats",
    "Transitions",
    "build_methods",
    "parse_method_names",
]
