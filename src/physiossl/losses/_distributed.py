"""Collectives for losses computed over the global batch of a data-parallel run.

Gradient convention. DDP averages parameter gradients over the ``W`` ranks. If rank ``r`` computes a loss
``L_r`` from its local embeddings ``x_r`` and from embeddings gathered from all ranks, the backward of
:func:`gather` sums the incoming gradients over ranks, so rank ``r`` holds ``g_r = sum_s dL_s/dx_r`` and the
DDP-averaged gradient is that of ``(1/W) sum_s L_s``. A loss therefore matches single-process training on the
global batch exactly when the mean over ranks of the per-rank losses equals the global loss: either a mean over
the local anchors (equal local batch sizes), or the global loss itself computed identically on every rank.
Equivalently ``g_r / W == dL_global/dx_r``. All ranks must pass tensors of the same shape to :func:`gather`.
The reductions :func:`all_reduce_sum` and :func:`all_reduce_max` are not differentiable.

Outside an initialised process group of more than one rank every helper is the identity (rank 0, world size 1).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when torch.distributed is available, initialised, and the world has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


class _Gather(torch.autograd.Function):
    """All-gather along dim 0; backward: the rank's slice of the gradient summed over all ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.n = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.n
        return grad[start:start + ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Differentiable all-gather: the ranks' tensors concatenated along dim 0 in rank order.

    The backward sends each rank the sum over ranks of the gradient of its slice (see the module docstring).
    Implemented with ``all_gather`` and an ``all_reduce`` in the backward, which every backend (gloo included)
    supports; ``torch.distributed.nn.functional.all_gather`` is deprecated from torch 2.13 on and its suggested
    replacement does not exist in the oldest supported torch.
    """
    return _Gather.apply(x) if is_distributed() else x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, returned as a new tensor (the input is left unchanged); not differentiable."""
    if not is_distributed():
        return x
    x = x.detach().contiguous().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks, returned as a new tensor; not differentiable."""
    if not is_distributed():
        return x
    x = x.detach().contiguous().clone()
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x
