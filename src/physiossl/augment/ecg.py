"""ECG augmentations as batched torch operations (one call transforms a whole (B, C, T) batch on its device)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class RandomResizedCrop(nn.Module):
    """Crop a random fraction ``scale`` of each sample's length and stretch it back to the full length
    (linear interpolation), independently per sample."""

    def __init__(self, scale: Sequence[float] = (0.5, 1.0)):
        super().__init__()
        self.scale = (float(scale[0]), float(scale[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        lo, hi = self.scale
        size = (lo + (hi - lo) * torch.rand(b, device=x.device)) * (t - 1)
        start = torch.rand(b, device=x.device) * ((t - 1) - size)
        pos = start[:, None] + size[:, None] * torch.linspace(0, 1, t, device=x.device)[None, :]
        left = pos.floor().long().clamp(0, t - 1)
        right = (left + 1).clamp(max=t - 1)
        frac = (pos - left).to(x.dtype)[:, None, :]
        gather = lambda idx: x.gather(2, idx[:, None, :].expand(b, c, t))  # noqa: E731
        return gather(left) * (1 - frac) + gather(right) * frac


class TimeOut(nn.Module):
    """Zero a random contiguous span covering a fraction ``area`` of each sample (all leads)."""

    def __init__(self, area: Sequence[float] = (0.2, 0.4)):
        super().__init__()
        self.area = (float(area[0]), float(area[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        lo, hi = self.area
        length = ((lo + (hi - lo) * torch.rand(b, device=x.device)) * t).long()
        start = (torch.rand(b, device=x.device) * (t - length + 1)).long()
        steps = torch.arange(t, device=x.device)[None, :]
        keep = (steps < start[:, None]) | (steps >= (start + length)[:, None])
        return x * keep[:, None, :].to(x.dtype)


def build_views(augment: dict) -> nn.Sequential:
    """The view-generating pipeline of a method config (``rrc_scale``, ``timeout``)."""
    return nn.Sequential(RandomResizedCrop(augment["rrc_scale"]), TimeOut(augment["timeout"]))
