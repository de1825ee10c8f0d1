"""Q-networks with task-specific gains and biases after every layer.

Three convolutional torsos: two over 4×84×84 stacked Atari frames, one over 10×10×10 MinAtar grids:
- ``nature``: Mnih et al. (Nature 2015): conv 32·8×8/4, 64·4×4/2, 64·3×3/1, fully connected 512.
- ``ewc``: the EWC paper's Atari network (Kirkpatrick et al. 2017, supplementary): conv 32/64/128 with the same
  kernels and strides, fully connected 1024.
- ``minatar``: the MinAtar paper's DQN (Young & Tian 2019): conv 16·3×3/1 (10×10 → 8×8), fully connected 128.
Every layer's pre-activation, the Q-value layer included, passes through a ``TaskAffine`` (see
``cl_rl.task_modulation``). ``layer_norm=True`` (``agent.layer_norm``) normalises each hidden layer's pre-activation
over its features before that, conv → LayerNorm → TaskAffine → ReLU (Lyle et al. 2024, "Disentangling the causes of
plasticity loss": layer normalisation keeps the network trainable across changing targets); the norm has no affine
parameters of its own, since the task's gains and biases follow it. They slot into SB3's ``QNetwork`` so that
``predict``, ``save`` and ``load`` work unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import QNetwork
from torch import nn
from torch.nn.modules import module as torch_module

from cl_rl.task_modulation import TaskAffine

NetworkName = Literal["nature", "ewc", "minatar"]
GainShape = Literal["element", "channel"]

# (out_channels, kernel, stride) per conv layer, then the width of the fully connected layer.
ARCHITECTURES: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    "nature": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
    "ewc": (((32, 8, 4), (64, 4, 2), (128, 3, 1)), 1024),
    "minatar": (((16, 3, 1),), 128),
}
# The game family (envs.games.game_family) whose observations each torso is sized for.
NETWORK_FAMILY: dict[str, str] = {"nature": "ale", "ewc": "ale", "minatar": "minatar"}


class TaskModulatedCNN(BaseFeaturesExtractor):
    """Convolutional torso with a ``TaskAffine`` after each layer (before its ReLU).

    ``gains='element'`` gives one gain and bias per element of each feature map (the EWC paper's "per-element
    gains"); ``'channel'`` shares them across a map's spatial positions (fewer parameters per task).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        network: NetworkName = "nature",
        gains: GainShape = "element",
        layer_norm: bool = False,
    ):
        if network not in ARCHITECTURES:
            raise ValueError(f"unknown network {network!r}; choose one of {sorted(ARCHITECTURES)}")
        if gains not in ("element", "channel"):
            raise ValueError(f"gains must be 'element' or 'channel', got {gains!r}")
        convs, fc_width = ARCHITECTURES[network]
        super().__init__(observation_space, features_dim=fc_width)
        layers: list[nn.Module] = []
        shape = tuple(observation_space.shape)
        in_channels = shape[0]
        probe = torch.zeros(1, *shape)
        for out_channels, kernel, stride in convs:
            conv = nn.Conv2d(in_channels, out_channels, kernel, stride)
            probe = conv(probe)
            affine_shape = tuple(probe.shape[1:]) if gains == "element" else (out_channels, 1, 1)
            norm = [nn.LayerNorm(tuple(probe.shape[1:]), elementwise_affine=False)] if layer_norm else []
            layers += [conv, *norm, TaskAffine(affine_shape), nn.ReLU()]
            in_channels = out_channels
        norm = [nn.LayerNorm(fc_width, elementwise_affine=False)] if layer_norm else []
        layers += [nn.Flatten(), nn.Linear(probe[0].numel(), fc_width), *norm, TaskAffine((fc_width,)), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


class TaskModulatedQNetwork(QNetwork):
    """SB3 ``QNetwork`` whose output layer also carries per-task gains and biases.

    Its forward pass computes what ``QNetwork.forward`` does (``preprocess_obs``, the torso, the Q layer) with the same
    operators in the same order, so the same bits, but without the per-call work around them: ``preprocess_obs``
    re-checks the observation space (``is_image_space``: numpy bound checks) at every call, and every layer goes
    through ``nn.Module.__call__``. With a network as small as MinAtar's that work costs as much as the operators
    (docs/SPEED.md). The lean path calls each layer's ``forward`` directly, which is what ``__call__`` does when no
    hook is registered; while any module (or torch globally) has a hook, e.g. VCL's sampled weights, or a module was
    compiled, the network takes SB3's path.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        n_actions = int(self.action_space.n)
        self.q_net = nn.Sequential(nn.Linear(self.features_dim, n_actions), TaskAffine((n_actions,)))
        # preprocess_obs's decision for this (fixed) observation space, taken once.
        self.scale_images = self.normalize_images and is_image_space(self.observation_space)
        torso = self.features_extractor.net if isinstance(self.features_extractor, TaskModulatedCNN) else None
        self.lean_layers = None if torso is None else (*torso, *self.q_net)
        self.watched_modules = tuple(self.modules())[1:]  # its own hooks run in its own __call__

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.lean_layers is None or not isinstance(obs, torch.Tensor) or self.hooked():
            return super().forward(obs)
        x = obs.float()
        if self.scale_images:
            x = x / 255.0
        for layer in self.lean_layers:
            x = layer.forward(x)
        return x

    def hooked(self) -> bool:
        """Whether ``nn.Module.__call__`` would do more than call ``forward`` for any of the layers."""
        if (
            torch._C._get_tracing_state()
            or torch_module._global_forward_hooks
            or torch_module._global_forward_pre_hooks
            or torch_module._global_backward_hooks
            or torch_module._global_backward_pre_hooks
        ):
            return True
        return any(
            m._forward_hooks
            or m._forward_pre_hooks
            or m._backward_hooks
            or m._backward_pre_hooks
            or m._compiled_call_impl is not None
            for m in self.watched_modules
        )
