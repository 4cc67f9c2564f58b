"""Building blocks shared by the methods: MLP heads, frozen copies, EMA updates, momentum schedules and the
:class:`MomentumTargets` mixin."""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn


def mlp(dims: Sequence[int], batch_norm: bool = True, last_bn: bool = False) -> nn.Sequential:
    """Linear layers ``dims[0] → … → dims[-1]`` with [BatchNorm1d →] ReLU between them; ``last_bn`` adds a
    non-affine BatchNorm1d on the output (MoCo v3 projector, SimSiam projector)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients switched off (the start of a momentum/target network)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target ← momentum · target + (1 − momentum) · online, parameter by parameter (buffers such as
    BatchNorm statistics are the target's own)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o.detach(), 1.0 - momentum)


def cosine_momentum(base: float, step: int, total: int | None) -> float:
    """BYOL's schedule: ``1 − (1 − base) · (cos(π · step / total) + 1) / 2``, from ``base`` at step 0 to 1 at
    ``total``; ``base`` when the number of steps is unknown."""
    if not total:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step / total, 1.0)) + 1.0) / 2.0


class MomentumTargets:
    """Mixin (before :class:`~physiossl.methods.base.SSLMethod` in the bases) for momentum target networks.

    ``momentum_pairs`` names (online, target) submodules; :meth:`make_targets`, called in ``__init__`` once the
    online modules exist, creates every target as a frozen copy of its online module. After every optimiser step
    (:meth:`after_optimizer_step`) each target becomes an EMA of its online module with :meth:`current_momentum`:
    the config's ``momentum`` rising to 1 along a cosine over the training steps (:func:`cosine_momentum`, step
    counted from 0 at the first update), or fixed when ``momentum_cosine`` is False. The targets are submodules,
    so they are in the state dict and in checkpoints.
    """

    momentum_pairs: tuple[tuple[str, str], ...] = (("encoder", "target_encoder"), ("projector", "target_projector"))
    momentum_cosine: bool = True

    def make_targets(self) -> None:
        for online, target in self.momentum_pairs:
            setattr(self, target, frozen_copy(getattr(self, online)))

    def current_momentum(self) -> float:
        base = self.cfg["momentum"]
        return cosine_momentum(base, self.global_step, self.total_steps()) if self.momentum_cosine else base

    def update_targets(self) -> None:
        m = self.current_momentum()
        for online, target in self.momentum_pairs:
            ema_update(getattr(self, target), getattr(self, online), m)

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.update_targets()
