"""Masked-frame reconstruction: mean squared error on the frames hidden from the encoder."""

from __future__ import annotations

import torch

from ._common import full_precision


@full_precision
def masked_prediction_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked frames (b, n) and the features f of (prediction[b, f, n] - target[b, f, n])^2.

    ``prediction`` and ``target`` are (B, F, N) (F features per frame, N frames); ``mask`` (B, N) is True where the
    frame was masked in the input. Unmasked frames do not enter the loss (nor its gradient), whatever their values.
    Raises ValueError when no frame is masked. Computed in at least float32, outside autocast.
    """
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(f"expected prediction and target of the same (B, F, N) shape, "
                         f"got {tuple(prediction.shape)} and {tuple(target.shape)}")
    b, _, n = prediction.shape
    if mask.shape != (b, n):
        raise ValueError(f"expected a ({b}, {n}) mask, got {tuple(mask.shape)}")
    mask = mask.to(device=prediction.device, dtype=torch.bool)
    if not bool(mask.any()):
        raise ValueError("no frame is masked")
    selected_prediction = prediction.transpose(1, 2)[mask]  # (masked frames, F)
    selected_target = target.transpose(1, 2)[mask]
    return (selected_prediction - selected_target).pow(2).mean()
