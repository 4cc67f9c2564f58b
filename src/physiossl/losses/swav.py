"""SwAV (Caron et al. 2020): Sinkhorn-Knopp codes and the swapped-prediction loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _distributed as _dist
from ._common import full_precision


@torch.no_grad()
@full_precision
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
             gather_distributed: bool = False) -> torch.Tensor:
    """Soft codes Q (B, K) of the prototype scores (B, K), as in the SwAV paper (Algorithm 1, distributed form).

    Q = exp(scores / epsilon)^T (K, B), normalised to total mass 1; then ``iterations`` times: scale every
    prototype (row of Q) to mass 1/K, summed over the global batch (all-reduced over the ranks when
    ``gather_distributed``), and every sample (column) to mass 1/B_global. The returned codes are B_global · Q^T:
    each row sums to 1, and the prototypes are used about equally (column sums of the global codes -> B_global/K
    as the iterations grow). The global maximum score is subtracted before the exponential (a constant factor that
    the first normalisation removes) and the iterations run in float64, so large scores / small epsilon do not
    overflow; a prototype whose scores all lie more than ~700·epsilon below the maximum would underflow (cosine
    scores with epsilon >= 0.003 never do). No gradient; runs outside autocast and returns the dtype of ``scores``
    promoted to at least float32.
    """
    if scores.ndim != 2:
        raise ValueError(f"expected (B, K) scores, got {tuple(scores.shape)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    distributed = gather_distributed and _dist.is_distributed()
    reduce = _dist.all_reduce_sum if distributed else (lambda x: x)
    s = scores.detach().to(torch.float64)
    top = _dist.all_reduce_max(s.max()) if distributed else s.max()
    q = torch.exp((s - top) / epsilon).T
    n_prototypes = q.shape[0]
    batch = reduce(torch.tensor(float(q.shape[1]), dtype=q.dtype, device=q.device))
    q = q / reduce(q.sum())
    for _ in range(iterations):
        q = q / reduce(q.sum(dim=1, keepdim=True)) / n_prototypes
        q = q / q.sum(dim=0, keepdim=True) / batch
    return (q * batch).T.to(scores.dtype)


@full_precision
def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """Swapped prediction: mean over the pairs (i, v), i < len(codes), v != i, of
    -mean_b sum_k codes[i][b, k] · log softmax_k(scores[v][b] / temperature).

    ``scores[v]`` (B, K) are the prototype scores of every crop v (the global crops first, then any small crops);
    ``codes[i]`` (B, K) are the Sinkhorn codes of the first len(codes) crops (those used for assignment); they are
    targets and are detached. The loss averages over the actual number of pairs, len(codes) · (len(scores) - 1):
    one reference implementation divided by 6 while summing 5 terms. The batch mean is local, so with equal local
    batch sizes (and codes from ``sinkhorn(..., gather_distributed=True)``) the mean over ranks equals the
    single-process loss on the global batch. Computed in at least float32, outside autocast.
    """
    if not codes or len(scores) < 2 or len(codes) > len(scores):
        raise ValueError(f"need 1 <= len(codes) <= len(scores) and len(scores) >= 2, got {len(codes)}, {len(scores)}")
    log_p = [F.log_softmax(s / temperature, dim=1) for s in scores]
    terms = [-(q.detach().to(log_p[v].dtype) * log_p[v]).sum(dim=1).mean()
             for i, q in enumerate(codes) for v in range(len(scores)) if v != i]
    return torch.stack(terms).mean()
