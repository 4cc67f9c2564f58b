"""InfoNCE with a momentum-encoder key, in the forms of MoCo v2 (queue of negatives) and MoCo v3 (in-batch keys)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _distributed as _dist
from ._common import check_pair, full_precision


@full_precision
def infonce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2, queue: torch.Tensor | None = None,
            gather_distributed: bool = False) -> torch.Tensor:
    """Mean cross entropy of identifying each query's key; ``q`` and ``k`` (N, D) are L2-normalised here.

    MoCo v2 (``queue`` (K, D) given, also normalised here): logits_i = [q_i·k_i, q_i·queue_1, ..., q_i·queue_K] / tau
    with target 0; the negatives come only from the queue (the other keys of the batch are not used). The queue
    is not detached here: it is the caller's buffer of past keys. ``gather_distributed`` has no effect in this form
    (enqueuing the gathered keys is the caller's job).

    MoCo v3 (``queue`` None): logits = q @ k_all^T / tau where k_all are the keys of the global batch (gathered
    over the ranks, differentiably, when ``gather_distributed``), and the target of local query i is its own key at
    global index rank * N + i. No 2·tau factor is applied (MoCo v3 scales the loss by 2·tau itself).

    The loss is the mean over the local queries, so with equal local batch sizes the mean over ranks (and the
    DDP-averaged gradient) equals the single-process value on the global batch. Computed in at least float32,
    outside autocast.
    """
    check_pair(q, k, "q and k")
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    n = q.shape[0]
    if queue is not None:
        if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
            raise ValueError(f"expected a (K, {q.shape[1]}) queue, got {tuple(queue.shape)}")
        positive = (q * k).sum(dim=1, keepdim=True)
        negative = q @ F.normalize(queue, dim=1).T
        logits = torch.cat([positive, negative], dim=1) / temperature
        targets = torch.zeros(n, dtype=torch.long, device=q.device)
    else:
        distributed = gather_distributed and _dist.is_distributed()
        k_all = _dist.gather(k) if distributed else k
        logits = q @ k_all.T / temperature
        targets = torch.arange(n, device=q.device) + (_dist.rank() * n if distributed else 0)
    return F.cross_entropy(logits, targets)
