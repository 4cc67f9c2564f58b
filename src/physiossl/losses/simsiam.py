"""SimSiam's loss (Chen & He 2021): negative cosine similarity against a stop-gradient target."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-mean_i cos(p_i, stopgrad(z_i)); in [-1, 1].

    ``p`` (N, D) are the predictor outputs, ``z`` (N, D) the projections of the other view. ``z`` is detached here:
    the stop-gradient is part of SimSiam's loss (the symmetrised loss is 0.5 (D(p1, z2) + D(p2, z1)), by the caller).
    """
    if p.shape != z.shape or p.ndim != 2:
        raise ValueError(f"expected p and z of the same (N, D) shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    dtype = torch.promote_types(p.dtype, torch.float32)
    cos = (F.normalize(p.to(dtype), dim=1) * F.normalize(z.detach().to(dtype), dim=1)).sum(dim=1)
    return -cos.mean()
