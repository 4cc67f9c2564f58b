"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of two views' embeddings the identity."""

from __future__ import annotations

import torch

from ..losses.barlow_twins import barlow_twins_loss
from . import register
from ._common import mlp
from .base import SSLMethod


@register("barlow_twins")
class BarlowTwins(SSLMethod):
    """Two views through encoder and a 3-layer projector (out_dim → ``proj_hidden`` → ``proj_hidden`` →
    ``proj_dim``, BN and ReLU after the first two layers); the loss pushes the batch cross-correlation of the
    standardised embeddings to the identity, off-diagonal terms weighted by ``lambda_offdiag`` (computed over
    the global batch under DDP).

    Defaults: projector 2048-2048-2048, as solo-learn uses for 512-d backbones (ResNet-18), since xresnet1d50/101
    give 512-d embeddings; λ 5e-3 from Barlow Twins (the ECG SSL paper did not run it). Barlow Twins' own
    8192-8192-8192 is its ImageNet setting for ResNet-50's 2048-d embeddings (``proj_hidden: 8192, proj_dim:
    8192``): on a 512-d encoder its 138 M projector parameters (9.5 M at 2048), their optimiser state and the
    8192 × 8192 cross-correlation cost far more than the encoder (on CPU at batch 64 a training step took about 9×
    as long as with the 2048-wide projector). Views: RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4).
    """

    schema = {"properties": {
        "proj_hidden": {"type": "integer", "minimum": 1, "default": 2048},
        "proj_dim": {"type": "integer", "minimum": 1, "default": 2048},
        "lambda_offdiag": {"type": "number", "minimum": 0, "default": 5.0e-3},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.cfg
        self.projector = mlp([self.encoder.out_dim, c["proj_hidden"], c["proj_hidden"], c["proj_dim"]])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(self.views(x)))
        z2 = self.projector(self.encoder(self.views(x)))
        return barlow_twins_loss(z1, z2, self.cfg["lambda_offdiag"], gather_distributed=self.gather_distributed)
