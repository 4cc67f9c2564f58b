"""Autoregressive predictive coding (Chung et al. 2019): predict the input ``shift`` steps ahead, L1 loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import full_precision


@full_precision
def apc_loss(prediction: torch.Tensor, target: torch.Tensor, shift: int) -> torch.Tensor:
    """mean over b, t < T - shift, f of |prediction[b, t, f] - target[b, t + shift, f]|.

    ``prediction`` (B, T, F) is made at step t from the causal context x_1..x_t; ``target`` (B, T, F) is the input
    sequence; 1 <= shift < T. The mean is over all elements of the valid steps (``nn.L1Loss`` of the reference code).
    Computed in at least float32, outside autocast.
    """
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(f"expected prediction and target of the same (B, T, F) shape, "
                         f"got {tuple(prediction.shape)} and {tuple(target.shape)}")
    t = prediction.shape[1]
    if not 1 <= shift < t:
        raise ValueError(f"shift must be in [1, {t - 1}], got {shift}")
    return F.l1_loss(prediction[:, : t - shift], target[:, shift:])
