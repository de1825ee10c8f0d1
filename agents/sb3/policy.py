"""SB3 DQN policy over a task-modulated Q-network, with task bookkeeping on both online and target nets."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from agents.sb3.networks import TaskModulatedCNN, TaskModulatedQNetwork
from cl_rl.task_modulation import add_task, set_task, task_affine_layers, using_task


class ContinualDQNPolicy(DQNPolicy):
    """``DQNPolicy`` whose networks have per-task gains and biases (``network``: 'nature' or 'ewc' for 4×84×84 Atari
    frames, 'minatar' for 10×10×10 MinAtar grids; ``layer_norm``: LayerNorm before each hidden activation; see
    ``agents.sb3.networks``).

    A new task gets fresh gains/biases in the online and target networks; the online ones join the optimiser as a
    parameter group of their own, so the optimiser's state lines up again after ``load`` re-creates the same tasks.
    """

    def __init__(
        self, *args: Any, network: str = "nature", gains: str = "element", layer_norm: bool = False, **kwargs: Any
    ) -> None:
        kwargs.setdefault("features_extractor_class", TaskModulatedCNN)
        kwargs.setdefault("features_extractor_kwargs", {"network": network, "gains": gains, "layer_norm": layer_norm})
        kwargs.setdefault("net_arch", [])
        self.network, self.gains, self.layer_norm = network, gains, layer_norm
        super().__init__(*args, **kwargs)
        self.mode_matters = any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) for m in self.modules())

    def set_training_mode(self, mode: bool) -> None:
        """Record the mode without walking every module: these networks have no batch norm or dropout, so train and
        eval mode compute the same thing, and SB3 sets the mode twice per agent step when it trains every step
        (``collect_rollouts`` and ``train``), which cost ~8% of a MinAtar step (docs/SPEED.md)."""
        if getattr(self, "mode_matters", True):
            super().set_training_mode(mode)
        self.training = mode

    def make_q_net(self) -> TaskModulatedQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return TaskModulatedQNetwork(**net_args).to(self.device)

    @property
    def n_tasks(self) -> int:
        return task_affine_layers(self.q_net)[0].n_tasks

    def add_task(self) -> int:
        """Create gains/biases for one more task in both networks; returns the new task's id."""
        new_params = add_task(self.q_net)
        add_task(self.q_net_target)
        self.optimizer.add_param_group({"params": new_params})
        return self.n_tasks - 1

    def set_task(self, task: int) -> None:
        """Make ``task``'s gains and biases the active ones in the online and target networks."""
        set_task(self.q_net, task)
        set_task(self.q_net_target, task)

    def using_task(self, task: int) -> AbstractContextManager[None]:
        """Apply ``task``'s gains and biases in both networks inside the block, then restore the active task."""
        return using_task(task, self.q_net, self.q_net_target)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(network=self.network, gains=self.gains, layer_norm=self.layer_norm)
        return data
