"""CPC (van den Oord et al. 2018) as in the ECG SSL paper: predict future encoded steps from the LSTM context."""

from __future__ import annotations

import torch
from torch import nn

from ..losses.cpc import cpc_loss
from . import register
from .base import SSLMethod


@register("cpc")
class CPC(SSLMethod):
    """The ``cpc`` encoder maps every sample to z_t and its causal LSTM to the context c_t; ``steps`` linear maps
    W_k (hidden → hidden, no bias) predict z_{t+k} = W_k c_t for k = 1..steps, scored by dot product against the
    true z_{t+k} and ``n_negatives`` other steps (``negatives``: "same_sequence" draws them from the same
    record, "batch" from the whole batch, "all" uses every other step of the record) in an InfoNCE loss.

    Defaults from the ECG SSL paper: 12 steps, 128 negatives from the same sequence, encoder 4 × 512 units and a
    2-layer LSTM with 512 units, 10 s input (``crop_s: 10``), no augmentation (``augment: []``).
    """

    encoders = ("cpc",)
    schema = {"properties": {
        "steps": {"type": "integer", "minimum": 1, "default": 12},
        "n_negatives": {"type": "integer", "minimum": 1, "default": 128},
        "negatives": {"enum": ["same_sequence", "batch", "all"], "default": "same_sequence"},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        hidden = self.encoder.hidden
        self.predictors = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(self.cfg["steps"]))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder.encode(self.views(x))
        c = self.encoder.context(z)
        predictions = torch.stack([w(c) for w in self.predictors])
        return cpc_loss(predictions, z, self.cfg["n_negatives"], self.cfg["negatives"])
