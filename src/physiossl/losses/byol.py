"""BYOL's regression loss (Grill et al. 2020): normalised mean squared error between prediction and target."""

from __future__ import annotations

import torch

from ._common import check_pair, full_precision, row_cosine


@full_precision
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ||p_i/||p_i|| - z_i/||z_i|| ||^2 = 2 - 2 cos(p_i, z_i); in [0, 4].

    ``p`` (N, D) are the online predictions, ``z`` (N, D) the targets. Nothing is detached here: the caller passes
    targets from the EMA network computed without gradient (and symmetrises over the two views itself).
    Computed in at least float32, outside autocast.
    """
    check_pair(p, z, "p and z")
    return (2.0 - 2.0 * row_cosine(p, z)).mean()
