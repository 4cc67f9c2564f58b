"""SimCLR (Chen et al. 2020): two augmented views, a projection head, NT-Xent."""

from __future__ import annotations

import torch
from torch import nn

from ..augment.ecg import build_views
from ..losses.nt_xent import nt_xent
from . import register
from .base import SSLMethod


@register("simclr")
class SimCLR(SSLMethod):
    def __init__(self, encoder: str, cfg: dict, in_channels: int = 12):
        super().__init__(encoder, cfg, in_channels)
        dim, hidden = self.encoder.out_dim, cfg["proj_hidden"]
        self.projector = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cfg["proj_dim"]))
        self.views = build_views(cfg["augment"])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(self.views(x)))
        z2 = self.projector(self.encoder(self.views(x)))
        return nt_xent(z1, z2, self.cfg["temperature"])
