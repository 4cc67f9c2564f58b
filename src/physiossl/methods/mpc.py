"""Masked predictive coding: hide spans of frames of the input and reconstruct their raw samples."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..losses.masked_prediction import masked_prediction_loss
from . import register
from .base import SSLMethod


@register("mpc")
class MPC(SSLMethod):
    """The input (after the views) is cut into frames of ``encoder.stride`` samples, one per output step of
    ``encoder.features``; a fraction ``mask_ratio`` of each sample's frames, in spans of ``span`` frames at random
    positions, is zeroed in all leads. A 1×1 convolution maps the features of the masked input (feature_dim →
    in_channels × stride per step) to the raw samples of each frame; the first floor(T / stride) output steps
    are aligned with the frames (trailing samples that fill no frame are never masked nor predicted). The loss
    is the mean squared error over the masked frames only. With a convolutional encoder (xresnet1d) the
    prediction of a frame uses context on both sides; with ``cpc`` (causal LSTM, stride 1) only the past.

    Defaults: mask_ratio 0.3, span 1 frame (0.32 s with xresnet1d at 100 Hz; raise it for the stride-1 ``cpc``
    encoder, e.g. 10 samples, or single masked samples are interpolated from their neighbours). Views: none
    needed (``augment: []``); any augmentation is applied before masking.
    """

    schema = {"properties": {
        "mask_ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.3},
        "span": {"type": "integer", "minimum": 1, "default": 1},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = nn.Conv1d(self.encoder.feature_dim, self.in_channels * self.encoder.stride, 1)

    def frame_mask(self, batch: int, n_frames: int, device: torch.device) -> torch.Tensor:
        """(batch, n_frames) bool: round(mask_ratio · n_spans) (at least 1) of the ceil(n_frames / span) spans of
        every row, shifted by a random offset (wrapping around)."""
        span = min(self.cfg["span"], n_frames)
        n_spans = math.ceil(n_frames / span)
        k = max(1, round(self.cfg["mask_ratio"] * n_spans))
        chosen = torch.rand(batch, n_spans, device=device).argsort(dim=1)[:, :k]
        spans = torch.zeros(batch, n_spans, dtype=torch.bool, device=device).scatter_(1, chosen, True)
        mask = spans.repeat_interleave(span, dim=1)[:, :n_frames]
        offset = torch.randint(0, span, (batch, 1), device=device)
        return mask.gather(1, (torch.arange(n_frames, device=device) - offset) % n_frames)

    def masked_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input with the masked frames zeroed, and the (B, N) frame mask."""
        b, _, t = x.shape
        stride = self.encoder.stride
        n = t // stride
        if n < 1:
            raise ValueError(f"input of {t} samples is shorter than one frame ({stride} samples)")
        mask = self.frame_mask(b, n, x.device)
        keep = torch.ones(b, t, dtype=torch.bool, device=x.device)
        keep[:, : n * stride] = ~mask.repeat_interleave(stride, dim=1)
        return x * keep[:, None, :].to(x.dtype), mask

    def predict(self, masked: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(B, in_channels × stride, N): the predicted samples of every frame, channel c · stride + j for sample j."""
        return self.head(self.encoder.features(masked))[..., :n_frames]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        x = self.views(x)
        b, c, t = x.shape
        stride = self.encoder.stride
        masked, mask = self.masked_input(x)
        n = mask.shape[1]
        target = x[..., : n * stride].reshape(b, c, n, stride).transpose(2, 3).reshape(b, c * stride, n)
        return masked_prediction_loss(self.predict(masked, n), target, mask)
