"""NT-Xent (normalised temperature-scaled cross entropy), the SimCLR loss, in its textbook form.

For 2N embeddings of N positive pairs, each anchor's positive is scored against all 2N - 1 other
embeddings: the self-similarity is excluded from the denominator (masked out, not subtracted as a
constant as in one reference implementation, which equals the textbook loss only at temperature 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _distributed as _dist
from ._common import check_pair, full_precision


@full_precision
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
            gather_distributed: bool = False) -> torch.Tensor:
    """Mean NT-Xent over both directions; ``z1[i]`` and ``z2[i]`` are the two views of sample ``i``.

    With s_ik = cos(z_i, z_k) over the 2N embeddings z = [z1; z2] and pos(i) = i ± N,

        L = 1/(2N) sum_i -log( exp(s_i,pos(i) / tau) / sum_{k != i} exp(s_ik / tau) ).

    ``gather_distributed``: in a process group of W ranks holding n pairs each (equal n), the local 2n anchors are
    scored against the 2nW embeddings of all ranks (negatives are global) and the loss is the mean over the local
    anchors; the mean over ranks of the per-rank losses, and the DDP-averaged gradient, equal the single-process
    loss and gradient on the global batch [z1 of rank 0, rank 1, ...]. Computed in at least float32, outside
    autocast.
    """
    check_pair(z1, z2, "z1 and z2")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    if gather_distributed and _dist.is_distributed():
        r, w = _dist.rank(), _dist.world_size()
        candidates = torch.cat([_dist.gather(z[:n]), _dist.gather(z[n:])], dim=0)
    else:
        r, w, candidates = 0, 1, z
    big_n = n * w
    logits = z @ candidates.T / temperature
    local = torch.arange(n, device=z.device) + r * n
    self_idx = torch.cat([local, local + big_n])
    targets = torch.cat([local + big_n, local])
    rows = torch.arange(2 * n, device=z.device)
    logits = logits.index_put((rows, self_idx), logits.new_tensor(float("-inf")))
    return F.cross_entropy(logits, targets)
