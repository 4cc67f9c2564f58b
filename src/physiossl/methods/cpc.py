"""CPC (van den Oord et al. 2018) as in the ECG SSL paper: predict future encoded steps from the LSTM context."""

from __future__ import annotations

import torch
from torch import nn

from ..losses.cpc import cpc_loss
from . import register
from .base import SSLMethod


@register("cpc")
class CPC(SSLMethod):
    """The ``cpc`` encoder maps every sample to z_t and its causal LSTM to the context c_t; linear maps W_k
    (hidden → hidden, no bias) predict z_{t+k} = W_k c_t, scored by dot product against the true z_{t+k} and
    ``n_negatives`` other steps (``negatives``: "same_sequence" draws them from the same record, "batch" from the
    whole batch, "all" uses every other step of the record) in an InfoNCE loss (:func:`physiossl.losses.cpc_loss`,
    which says how the negatives are drawn).

    ``steps_predicted``: "all" (van den Oord et al.) predicts every step k = 1..``steps`` with a map of its own
    and averages the loss over all of them; "last" predicts only step k = ``steps`` with a single map, as the
    ECG SSL paper's code does (its ``steps_predicted`` = 12 is that offset, with one projection of the LSTM
    output). Each map is applied only to the contexts c_t that have a target, t < T - k (none when k >= T).

    Defaults from the ECG SSL paper: 12 steps, 128 negatives from the same sequence, encoder 4 × 512 units and a
    2-layer LSTM with 512 units, 10 s input (``crop_s: 10``), no augmentation (``augment: []``); every step 1..12
    predicted (``steps_predicted: all``, as published, where the paper's code predicts the 12th alone).
    """

    encoders = ("cpc",)
    schema = {"properties": {
        "steps": {"type": "integer", "minimum": 1, "default": 12},
        "steps_predicted": {"enum": ["all", "last"], "default": "all"},
        "n_negatives": {"type": "integer", "minimum": 1, "default": 128},
        "negatives": {"enum": ["same_sequence", "batch", "all"], "default": "same_sequence"},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        hidden, steps = self.encoder.hidden, self.cfg["steps"]
        self.offsets = list(range(1, steps + 1)) if self.cfg["steps_predicted"] == "all" else [steps]
        self.predictors = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in self.offsets)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder.encode(self.views(x))
        c = self.encoder.context(z)
        t = z.shape[1]
        predictions = [w(c[:, :max(t - k, 0)]) for w, k in zip(self.predictors, self.offsets)]
        return cpc_loss(predictions, z, self.cfg["n_negatives"], self.cfg["negatives"], offsets=self.offsets)
