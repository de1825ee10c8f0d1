"""Continual-learning machinery as plain torch/numpy: no SB3, no ALE, no `envs/` imports.

One concept per module: task-specific gains/biases (`task_modulation`), per-task exploration (`exploration`),
where the current task id comes from (`task_source`), and the hook through which consolidation penalties enter the
loss (`regularizer`).
"""

from cl_rl.exploration import PerTaskEpsilon
from cl_rl.regularizer import Regularizer, total_penalty
from cl_rl.task_modulation import TaskAffine, add_task, set_task, shared_parameters, task_affine_layers
from cl_rl.task_source import OracleTaskSource, TaskSource

__all__ = [
    "OracleTaskSource",
    "PerTaskEpsilon",
    "Regularizer",
    "TaskAffine",
    "TaskSource",
    "add_task",
    "set_task",
    "shared_parameters",
    "task_affine_layers",
    "total_penalty",
]
