"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of past keys as negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import _distributed
from ..losses.infonce import infonce
from . import register
from ._common import ema_update, frozen_copy, mlp
from .base import SSLMethod


@register("moco_v2")
class MoCoV2(SSLMethod):
    """Queries: encoder → projector (out_dim → ``proj_hidden`` → ``proj_dim``, Linear → ReLU → Linear, no BN as
    in MoCo v2) of one view; keys: the key encoder and projector, exponential moving averages of the query
    networks with fixed ``momentum``, of the other view. InfoNCE with ``temperature`` against the positive key
    and the ``queue_size`` normalised keys of the queue (the queue's only negatives). After every optimiser step
    the key networks are updated and the batch's keys, gathered over all processes under DDP, replace the
    oldest entries of the queue. Shuffling BN (permuting the key batch across GPUs) is not implemented: the key
    encoder's BatchNorm sees the same per-process batch composition as the query encoder.

    Defaults from MoCo v2: τ 0.2, momentum 0.999, projector hidden = encoder width (512) → 128. The queue holds
    16384 keys (MoCo: 65536), less than one epoch of the 54,566-record ECG pool, so a record's own older key is
    rarely among its negatives. Views: RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4).
    """

    schema = {"properties": {
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.2},
        "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.999},
        "queue_size": {"type": "integer", "minimum": 1, "default": 16384},
        "proj_hidden": {"type": "integer", "minimum": 1, "default": 512},
        "proj_dim": {"type": "integer", "minimum": 1, "default": 128},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.cfg
        self.projector = mlp([self.encoder.out_dim, c["proj_hidden"], c["proj_dim"]], batch_norm=False)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(c["queue_size"], c["proj_dim"]), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._keys: torch.Tensor | None = None

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        q = self.projector(self.encoder(self.views(x)))
        with torch.no_grad():
            k = F.normalize(self.key_projector(self.key_encoder(self.views(x))), dim=1)
        self._keys = k
        return infonce(q, k, self.cfg["temperature"], queue=self.queue)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[-size:]
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[index] = keys.to(self.queue)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        ema_update(self.key_encoder, self.encoder, self.cfg["momentum"])
        ema_update(self.key_projector, self.projector, self.cfg["momentum"])
        if self._keys is not None:
            self.enqueue(_distributed.gather(self._keys) if self.gather_distributed else self._keys)
            self._keys = None
