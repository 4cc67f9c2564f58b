"""Periodicity-variant views for SimPer: each clip played back at several speeds.

Playing a clip at speed s multiplies every frequency in it by s (a period of P samples becomes P / s samples),
so the views of one clip at different speeds have known relative frequencies; SimPer's soft targets come from
the speed gaps. The periodicity-invariant augmentations (amplitude scaling, noise, baseline wander, lead
dropout, ...) leave the frequency of interest unchanged and are applied on top of these views by the method,
with the transforms of :mod:`physiossl.augment.ecg`; transforms that warp time (random resized crop, dynamic
time warp) change that frequency and do not belong among them.

Conventions as in :mod:`physiossl.augment.ecg`: batches of shape (B, C, T), randomness from torch's global RNG
on the batch's device, no Python loop over the batch. Resampling is linear interpolation without an
anti-aliasing filter: at speed s > 1, content above fs / (2 s) of the input aliases in the output.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .ops import real, resample


def speed_resample(x: torch.Tensor, speeds: torch.Tensor | float, out_len: int,
                   start: torch.Tensor | float | None = None) -> torch.Tensor:
    """Each sample of ``x`` (B, C, T) played at its speed ``speeds`` (B,) (s > 0; a float applies to all),
    ``out_len`` samples long: (B, C, out_len).

    Output sample k is the input at the fractional position start + s k, k = 0..out_len - 1, by linear
    interpolation (the same for all leads), so a sinusoid of frequency f becomes one of frequency s f at the
    same sampling rate. ``start`` (B,) or a float, in input samples: by default uniform in
    [0, T - 1 - s (out_len - 1)] per sample, so the window lies inside the signal; where it does not fit
    (s (out_len - 1) > T - 1) the start is 0 and the positions past the end are clamped to T - 1, i.e. the last
    input sample is held. Positions from a given ``start`` are clamped to [0, T - 1] likewise.
    """
    b, _, t = x.shape
    if out_len < 1:
        raise ValueError(f"out_len must be positive, got {out_len}")
    dtype = real(x)
    speeds = torch.as_tensor(speeds, device=x.device, dtype=dtype).expand(b)
    if start is None:
        room = (t - 1 - speeds * (out_len - 1)).clamp_min(0)
        start = torch.rand(b, device=x.device, dtype=dtype) * room
    else:
        start = torch.as_tensor(start, device=x.device, dtype=dtype).expand(b)
    steps = torch.arange(out_len, device=x.device, dtype=dtype)
    return resample(x, (start[:, None] + speeds[:, None] * steps[None, :]).clamp(0, t - 1))


def sample_speeds(batch: int, m: int, low: float = 0.5, high: float = 2.0, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """(batch, m) speeds drawn independently and uniformly in [low, high], sorted ascending within each row."""
    if not 0 < low <= high:
        raise ValueError(f"speeds need 0 < low <= high, got low={low}, high={high}")
    u = torch.rand(batch, m, device=device, dtype=dtype)
    return low + (high - low) * u.sort(dim=1).values


class SpeedViews(nn.Module):
    """Every clip of a (B, C, T) batch at ``m`` speeds drawn by :func:`sample_speeds` in ``speed_range``, each view
    cropped from its own random start by :func:`speed_resample`.

    ``forward(x)`` returns ``(views, speeds)``: views (B·m, C, out_len) and their speeds (B·m,), the m views of a
    clip adjacent in ascending speed order (row b·m + j is clip b at its j-th speed), so ``views.view(B, m, C,
    out_len)`` and ``speeds.view(B, m)`` regroup them by clip. Choose ``out_len <= (T - 1) / high + 1`` for every
    view to lie inside its clip.
    """

    def __init__(self, m: int, out_len: int, speed_range: Sequence[float] = (0.5, 2.0)):
        super().__init__()
        if m < 1 or out_len < 1:
            raise ValueError(f"m and out_len must be positive, got m={m}, out_len={out_len}")
        self.m = int(m)
        self.out_len = int(out_len)
        self.speed_range = (float(speed_range[0]), float(speed_range[1]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        speeds = sample_speeds(x.shape[0], self.m, *self.speed_range, device=x.device, dtype=real(x)).reshape(-1)
        return speed_resample(x.repeat_interleave(self.m, dim=0), speeds, self.out_len), speeds

    def extra_repr(self) -> str:
        return f"m={self.m}, out_len={self.out_len}, speed_range={self.speed_range}"
