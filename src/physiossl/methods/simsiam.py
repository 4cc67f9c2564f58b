"""SimSiam (Chen & He 2021): a predictor and a stop-gradient, no negatives and no momentum encoder."""

from __future__ import annotations

import torch

from ..losses.simsiam import simsiam_loss
from . import register
from ._common import mlp
from .base import SSLMethod


@register("simsiam")
class SimSiam(SSLMethod):
    """Two views through encoder and a 3-layer projector (out_dim → ``proj_dim`` → ``proj_dim`` → ``proj_dim``,
    BN after every layer, ReLU after the first two), then a bottleneck predictor (``proj_dim`` → ``pred_hidden``
    → ``proj_dim``); loss ½ (D(p1, z2) + D(p2, z1)) with D the negative cosine against the stop-gradient
    projection of the other view.

    Defaults from SimSiam: projector 2048-d, predictor bottleneck 512 (the ECG SSL paper did not run it).
    Views: RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4).
    """

    schema = {"properties": {
        "proj_dim": {"type": "integer", "minimum": 1, "default": 2048},
        "pred_hidden": {"type": "integer", "minimum": 1, "default": 512},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        d = self.cfg["proj_dim"]
        self.projector = mlp([self.encoder.out_dim, d, d, d], last_bn=True)
        self.predictor = mlp([d, self.cfg["pred_hidden"], d])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(self.views(x)))
        z2 = self.projector(self.encoder(self.views(x)))
        return 0.5 * (simsiam_loss(self.predictor(z1), z2) + simsiam_loss(self.predictor(z2), z1))
