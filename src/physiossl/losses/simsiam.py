"""SimSiam's loss (Chen & He 2021): negative cosine similarity against a stop-gradient target."""

from __future__ import annotations

import torch

from ._common import check_pair, full_precision, row_cosine


@full_precision
def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-mean_i cos(p_i, stopgrad(z_i)); in [-1, 1].

    ``p`` (N, D) are the predictor outputs, ``z`` (N, D) the projections of the other view. ``z`` is detached here:
    the stop-gradient is part of SimSiam's loss (the symmetrised loss is 0.5 (D(p1, z2) + D(p2, z1)), by the caller).
    Computed in at least float32, outside autocast.
    """
    check_pair(p, z, "p and z")
    return -row_cosine(p, z.detach()).mean()
