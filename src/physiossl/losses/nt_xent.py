"""NT-Xent (normalised temperature-scaled cross entropy), the SimCLR loss, in its textbook form.

For 2N embeddings of N positive pairs, each anchor's positive is scored against all 2N - 1 other
embeddings: the self-similarity is excluded from the denominator (masked out, not subtracted as a
constant as in one reference implementation, which equals the textbook loss only at temperature 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Mean NT-Xent over both directions; ``z1[i]`` and ``z2[i]`` are the two views of sample ``i``."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (N, D) tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)
