"""MoCo v3 (Chen, Xie & He 2021): a predictor on the query branch, a momentum encoder, in-batch negatives."""

from __future__ import annotations

import torch

from ..losses.infonce import infonce
from . import register
from ._common import MomentumTargets, mlp
from .base import SSLMethod


@register("moco_v3")
class MoCoV3(MomentumTargets, SSLMethod):
    """Queries: encoder → projector (out_dim → ``proj_hidden`` → ``proj_dim``, Linear → BN → ReLU → Linear → BN
    without affine) → predictor (``proj_dim`` → ``pred_hidden`` → ``proj_dim``); keys: momentum copies of encoder
    and projector, updated after every optimiser step with a momentum rising from ``momentum`` to 1 along a
    cosine. Loss: InfoNCE with ``temperature`` against the keys of the whole (global, under DDP) batch,
    symmetrised over the two views and scaled by 2τ as in the paper: 2τ · (ctr(q1, k2) + ctr(q2, k1)).

    Defaults from MoCo v3's ResNet-50 recipe: τ 1.0, momentum 0.99 → 1 (cosine), MLPs with 4096 hidden units
    and 256-d output. Views: RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4).
    """

    momentum_pairs = (("encoder", "momentum_encoder"), ("projector", "momentum_projector"))
    schema = {"properties": {
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.99},
        "proj_hidden": {"type": "integer", "minimum": 1, "default": 4096},
        "proj_dim": {"type": "integer", "minimum": 1, "default": 256},
        "pred_hidden": {"type": "integer", "minimum": 1, "default": 4096},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.cfg
        self.projector = mlp([self.encoder.out_dim, c["proj_hidden"], c["proj_dim"]], last_bn=True)
        self.predictor = mlp([c["proj_dim"], c["pred_hidden"], c["proj_dim"]])
        self.make_targets()

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        v1, v2 = self.views(x), self.views(x)
        q1 = self.predictor(self.projector(self.encoder(v1)))
        q2 = self.predictor(self.projector(self.encoder(v2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_encoder(v1))
            k2 = self.momentum_projector(self.momentum_encoder(v2))
        tau, gather = self.cfg["temperature"], self.gather_distributed
        loss = infonce(q1, k2, tau, gather_distributed=gather) + infonce(q2, k1, tau, gather_distributed=gather)
        return 2 * tau * loss

