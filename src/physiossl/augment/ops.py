"""Tensor operations the augmentations share (ECG, audio and SimPer's speed views)."""

from __future__ import annotations

import torch


def real(x: torch.Tensor) -> torch.dtype:
    """The dtype random parameters and positions are computed in (float64 for float64 input, else float32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def uniform(lo: float, hi: float, shape: tuple[int, ...], x: torch.Tensor, dtype: torch.dtype | None = None):
    return lo + (hi - lo) * torch.rand(shape, device=x.device, dtype=dtype or real(x))


def resample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of x (B, C, T) at fractional sample positions ``pos`` (B, T') in [0, T - 1]."""
    b, c, t = x.shape
    n = pos.shape[1]
    left = pos.floor().long().clamp(0, t - 1)
    right = (left + 1).clamp(max=t - 1)
    frac = (pos - left).to(x.dtype)[:, None, :]
    gather = lambda idx: x.gather(2, idx[:, None, :].expand(b, c, n))  # noqa: E731
    return gather(left) * (1 - frac) + gather(right) * frac


def inside(start: torch.Tensor, length: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T) boolean mask of the samples n with start <= n < start + length."""
    steps = torch.arange(t, device=start.device)[None, :]
    return (steps >= start[:, None]) & (steps < (start + length)[:, None])
