"""Sequential consistency loss for sound-based sleep staging (Asleep): the epoch-to-epoch similarity structure of
a sequence should not depend on the augmentation.

For each sequence of N_s consecutive epochs, the N_s × N_s cosine-similarity matrices of the epoch embeddings of
two augmented views are compared, pairs of temporally close epochs weighted more than distant ones. The source
describes W only as highest for close epochs and falling to ``w_min`` at the farthest pair (w_min = 0.5 for
N_s = 6); its exact shape is not public. The linear fall-off in |i - j| used here is this project's choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import full_precision


def consistency_weights(n_s: int, w_min: float = 0.5, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """The (n_s, n_s) weight matrix W_ij = 1 - (1 - w_min) |i - j| / (n_s - 1); all ones for n_s = 1.

    W is 1 on the diagonal and falls linearly to ``w_min`` at the farthest pair (i, j) = (0, n_s - 1).
    """
    if n_s < 1:
        raise ValueError(f"expected a sequence length n_s >= 1, got {n_s}")
    if not 0.0 <= w_min <= 1.0:
        raise ValueError(f"w_min must lie in [0, 1], got {w_min}")
    if n_s == 1:
        return torch.ones(1, 1, dtype=dtype, device=device)
    idx = torch.arange(n_s, device=device)
    gap = (idx[:, None] - idx[None, :]).abs().to(dtype)
    return 1.0 - (1.0 - w_min) * gap / (n_s - 1)


@full_precision
def sequential_consistency_loss(za: torch.Tensor, zb: torch.Tensor, w_min: float = 0.5) -> torch.Tensor:
    """Weighted squared difference of the within-sequence similarity matrices of two views, a scalar.

    ``za`` and ``zb`` (B, N_s, D) are the epoch embeddings of two augmentations of the same B sequences. With
    C^a_ij = cos(za_i, za_j) and C^b_ij = cos(zb_i, zb_j) for the epochs i, j of one sequence and W from
    :func:`consistency_weights`,

        L = 1/B sum_b  sum_ij W_ij (C^a_ij - C^b_ij)^2 / sum_ij W_ij.

    L is symmetric in (za, zb), zero for identical views and invariant to a positive rescaling of any epoch
    embedding. The exact shape of W is not public; the linear fall-off is this project's choice. Gradients flow
    into both views. Computed in at least float32, outside autocast.
    """
    if za.ndim != 3 or za.shape != zb.shape or za.shape[1] < 1 or za.shape[2] < 1:
        raise ValueError(f"expected za and zb of the same (B, N_s, D) shape with N_s, D >= 1, "
                         f"got {tuple(za.shape)} and {tuple(zb.shape)}")
    if not 0.0 <= w_min <= 1.0:
        raise ValueError(f"w_min must lie in [0, 1], got {w_min}")
    w = consistency_weights(za.shape[1], w_min, dtype=za.dtype, device=za.device)
    na, nb = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
    ca, cb = na @ na.transpose(1, 2), nb @ nb.transpose(1, 2)
    per_sequence = (w * (ca - cb).square()).sum(dim=(1, 2)) / w.sum()
    return per_sequence.mean()
