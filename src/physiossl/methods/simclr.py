"""SimCLR (Chen et al. 2020): two augmented views, a projection head, NT-Xent."""

from __future__ import annotations

import torch

from ..losses.nt_xent import nt_xent
from . import register
from ._common import mlp
from .base import SSLMethod


@register("simclr")
class SimCLR(SSLMethod):
    """Two views of every sample through encoder and projector (Linear → BN → ReLU → Linear,
    out_dim → ``proj_hidden`` → ``proj_dim``), NT-Xent with ``temperature`` over the (global) batch.

    Defaults from the ECG SSL paper: projector 512 → 512 → 16, τ = 0.5 (Adam lr ≈ 2.3e-3, warm-up then cosine);
    views RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4).
    """

    schema = {"properties": {
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.5},
        "proj_hidden": {"type": "integer", "minimum": 1, "default": 512},
        "proj_dim": {"type": "integer", "minimum": 1, "default": 16},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.projector = mlp([self.encoder.out_dim, self.cfg["proj_hidden"], self.cfg["proj_dim"]])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(self.views(x)))
        z2 = self.projector(self.encoder(self.views(x)))
        return nt_xent(z1, z2, self.cfg["temperature"], gather_distributed=self.gather_distributed)
