"""Autoregressive predictive coding (Chung et al. 2019): predict the input a fixed time ahead from the past."""

from __future__ import annotations

import torch
from torch import nn

from ..losses.autoregressive import apc_loss
from . import register
from .base import SSLMethod


@register("apc")
class APC(SSLMethod):
    """The ``cpc`` encoder (per-sample encoder and a causal LSTM) gives the context c_t of x_1..x_t; a linear head
    predicts all leads of the input sample x_{t+shift} from c_t; L1 loss over the valid steps.

    Default shift: 10 samples = 0.1 s at 100 Hz. APC's best shift (3 frames of 10 ms) was chosen for speech
    features; an ECG at 100 Hz changes little within 30 ms, so 3 samples ahead is nearly linear extrapolation,
    while 0.1 s (about one QRS duration) needs a model of the waveform. Scale it with the sampling rate.
    Views: none (``augment: []``); a 10 s input (``crop_s: 10``) as for CPC.
    """

    encoders = ("cpc",)
    schema = {"properties": {
        "shift": {"type": "integer", "minimum": 1, "default": 10},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = nn.Linear(self.encoder.hidden, self.in_channels)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        x = self.views(x)
        c = self.encoder.context(self.encoder.encode(x))
        return apc_loss(self.head(c), x.transpose(1, 2), self.cfg["shift"])
