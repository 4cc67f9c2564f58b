"""Barlow Twins (Zbontar et al. 2021): redundancy reduction through the cross-correlation of the two views."""

from __future__ import annotations

import torch

from . import _distributed as _dist
from ._common import check_pair, full_precision


@full_precision
def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 5e-3,
                      gather_distributed: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambda_offdiag · sum_{i != j} C_ij^2, with C = z1n^T z2n / N (D, D).

    Each feature of each view (N, D) is standardised over the batch with the population variance, as the
    affine-free BatchNorm of the reference implementation: zn = (z - mean) / sqrt(var + eps), var = mean((z - mean)^2).
    So C is the cross-correlation matrix (C_ii = 1 for identical views, up to eps). The loss is invariant to a
    positive affine rescaling of any feature of either view (exactly when eps = 0).

    ``gather_distributed``: z1 and z2 are gathered (differentiably) over the ranks and every rank computes the loss
    of the global batch, which is what it returns; the mean over ranks and the DDP-averaged gradient then equal the
    single-process loss and gradient on the global batch (see ``_distributed``). Computed in at least float32,
    outside autocast.
    """
    check_pair(z1, z2, "z1 and z2")
    if gather_distributed and _dist.is_distributed():
        z1, z2 = _dist.gather(z1), _dist.gather(z2)

    def standardise(z: torch.Tensor) -> torch.Tensor:
        centred = z - z.mean(dim=0)
        return centred / torch.sqrt(centred.pow(2).mean(dim=0) + eps)

    c = standardise(z1).T @ standardise(z2) / z1.shape[0]
    diagonal = torch.diagonal(c)
    on = (1.0 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + lambda_offdiag * off
