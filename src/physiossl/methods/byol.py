"""BYOL (Grill et al. 2020): an online network predicts the projection of an EMA target network."""

from __future__ import annotations

import torch

from ..losses.byol import byol_loss
from . import register
from ._common import MomentumTargets, mlp
from .base import SSLMethod


@register("byol")
class BYOL(MomentumTargets, SSLMethod):
    """Online encoder → projector (out_dim → ``proj_hidden`` → ``proj_dim``) → predictor (``proj_dim`` →
    ``pred_hidden`` → ``proj_dim``), both Linear → BN → ReLU → Linear; the target encoder and projector are
    exponential moving averages of the online ones, updated after every optimiser step with a momentum that
    rises from ``momentum`` to 1 along a cosine over the training steps. Loss: 2 − 2·cos between the online
    prediction of one view and the target projection of the other, summed over both directions (as in BYOL).

    Defaults from the ECG SSL paper: projector 512 → 512 → 16, predictor 16 → 512 → 16, momentum 0.996 → 1;
    views RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4).
    """

    schema = {"properties": {
        "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.996},
        "proj_hidden": {"type": "integer", "minimum": 1, "default": 512},
        "proj_dim": {"type": "integer", "minimum": 1, "default": 16},
        "pred_hidden": {"type": "integer", "minimum": 1, "default": 512},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.cfg
        self.projector = mlp([self.encoder.out_dim, c["proj_hidden"], c["proj_dim"]])
        self.predictor = mlp([c["proj_dim"], c["pred_hidden"], c["proj_dim"]])
        self.make_targets()

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        v1, v2 = self.views(x), self.views(x)
        p1 = self.predictor(self.projector(self.encoder(v1)))
        p2 = self.predictor(self.projector(self.encoder(v2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_encoder(v1))
            t2 = self.target_projector(self.target_encoder(v2))
        return byol_loss(p1, t2) + byol_loss(p2, t1)

