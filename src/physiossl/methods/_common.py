"""Building blocks shared by the methods: MLP heads, frozen copies, EMA updates and momentum schedules."""

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
