"""Task-specific biases and multiplicative gains at every layer.

Kirkpatrick et al. (PNAS 2017), Atari experiments: besides the shared weights, the DQN had task-specific biases and
per-element multiplicative gains at each layer. A layer's pre-activation h becomes

    h_k = g_k ⊙ h + b_k      (g_k initialised to 1, b_k to 0)

for the current task k, so a task met for the first time starts from the shared network unchanged.

Each task owns *separate* ``nn.Parameter`` objects (not rows of one big tensor): an optimiser such as Adam skips
parameters whose gradient is ``None``, so training task A can never move task B's gains and biases through stale
momentum. Consolidation penalties (EWC, MAS) act on the shared parameters only: see ``shared_parameters``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class TaskAffine(nn.Module):
    """Per-task affine map ``x * gain[k] + bias[k]`` with ``k`` the active task.

    ``shape`` is the shape the gain and bias broadcast against, without the batch axis: ``(C, H, W)`` for per-element
    gains on a convolutional map, ``(C, 1, 1)`` for per-channel ones, ``(N,)`` for a fully connected layer.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.gains = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.active = -1
        # Tracks the module's device and dtype so that tasks added after `.to(device)` land there too.
        self.register_buffer("_probe", torch.zeros(()), persistent=False)

    @property
    def n_tasks(self) -> int:
        return len(self.gains)

    def add_task(self) -> list[nn.Parameter]:
        """Create fresh (gain = 1, bias = 0) parameters for a new task; returns them for the optimiser."""
        like: torch.Tensor = self._probe  # type: ignore[assignment]  # a buffer: follows .to(device)
        gain = nn.Parameter(torch.ones(self.shape, device=like.device, dtype=like.dtype))
        bias = nn.Parameter(torch.zeros(self.shape, device=like.device, dtype=like.dtype))
        self.gains.append(gain)
        self.biases.append(bias)
        return [gain, bias]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not 0 <= self.active < len(self.gains):  # not self.n_tasks: a property call per layer and forward
            raise RuntimeError(f"TaskAffine has {self.n_tasks} task(s) but the active task is {self.active}")
        return torch.addcmul(self.biases[self.active], x, self.gains[self.active])

    def extra_repr(self) -> str:
        return f"shape={self.shape}, n_tasks={self.n_tasks}, active={self.active}"


def task_affine_layers(module: nn.Module) -> list[TaskAffine]:
    """All ``TaskAffine`` layers of ``module`` in registration order."""
    return [m for m in module.modules() if isinstance(m, TaskAffine)]


def add_task(module: nn.Module) -> list[nn.Parameter]:
    """Give every ``TaskAffine`` layer of ``module`` parameters for one more task; returns the new parameters."""
    return [p for layer in task_affine_layers(module) for p in layer.add_task()]


def set_task(module: nn.Module, task: int) -> None:
    """Select the task whose gains and biases every ``TaskAffine`` layer of ``module`` applies."""
    for layer in task_affine_layers(module):
        if not 0 <= task < layer.n_tasks:
            raise ValueError(f"task {task} does not exist (the network has {layer.n_tasks} task(s)); add it first")
        layer.active = task


def active_task(module: nn.Module) -> int:
    """The task whose gains and biases ``module`` applies now (-1 before any task was set)."""
    layers = task_affine_layers(module)
    return layers[0].active if layers else -1


@contextmanager
def using_task(task: int, *modules: nn.Module) -> Iterator[None]:
    """Inside the block every module applies ``task``'s gains and biases; each one's active task is restored after.

    The one way to "run as task k, then go back" (evaluation, consolidation, distillation, gradient memories).
    """
    previous = [active_task(m) for m in modules]
    for m in modules:
        set_task(m, task)
    try:
        yield
    finally:
        for m, active in zip(modules, previous, strict=True):
            if active >= 0:
                set_task(m, active)


def task_parameters(module: nn.Module, task: int) -> list[nn.Parameter]:
    """The gains and biases that belong to ``task`` alone."""
    return [p for layer in task_affine_layers(module) for p in (layer.gains[task], layer.biases[task])]


def shared_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Named parameters shared by all tasks (everything but the per-task gains and biases)."""
    specific = {id(p) for layer in task_affine_layers(module) for p in layer.parameters()}
    for name, param in module.named_parameters():
        if id(param) not in specific:
            yield name, param
