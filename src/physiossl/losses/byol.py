"""BYOL's regression loss (Grill et al. 2020): normalised mean squared error between prediction and target."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ||p_i/||p_i|| - z_i/||z_i|| ||^2 = 2 - 2 cos(p_i, z_i); in [0, 4].

    ``p`` (N, D) are the online predictions, ``z`` (N, D) the targets. Nothing is detached here: the caller passes
    targets from the EMA network computed without gradient (and symmetrises over the two views itself).
    """
    if p.shape != z.shape or p.ndim != 2:
        raise ValueError(f"expected p and z of the same (N, D) shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    dtype = torch.promote_types(p.dtype, torch.float32)
    cos = (F.normalize(p.to(dtype), dim=1) * F.normalize(z.to(dtype), dim=1)).sum(dim=1)
    return (2.0 - 2.0 * cos).mean()
