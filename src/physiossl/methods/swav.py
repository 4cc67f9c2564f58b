"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn cluster assignments, with multi-crop and a queue."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.swav import sinkhorn, swav_loss
from . import register
from ._common import mlp
from .base import SSLMethod

log = logging.getLogger(__name__)


def random_crop(x: torch.Tensor, length: int) -> torch.Tensor:
    """A random window of ``length`` samples of every sample of a (B, C, T) batch (its own start each)."""
    b, c, t = x.shape
    start = torch.randint(0, t - length + 1, (b,), device=x.device)
    index = start[:, None] + torch.arange(length, device=x.device)
    return x.gather(2, index[:, None, :].expand(b, c, length))


@register("swav")
class SwAV(SSLMethod):
    """Views: 2 full-length augmented views plus ``n_small_crops`` random windows of ``small_crop_fraction`` of
    the length, each cut from its own augmented view and kept at that length (the encoders pool over time).
    Every view goes through encoder and projector (out_dim → ``proj_hidden`` → ``proj_dim``, Linear → BN →
    ReLU → Linear), is L2-normalised and scored against ``n_prototypes`` unit-norm prototypes. The codes of
    the two full views come from Sinkhorn-Knopp (``sinkhorn_epsilon``, ``sinkhorn_iterations``, over the global
    batch under DDP) and each is predicted from every other view (softmax with ``temperature``).

    The prototypes are renormalised after every optimiser step, and their gradients dropped during the first
    ``freeze_prototypes_epochs`` epochs. From epoch ``queue_start_epoch`` on, after every optimiser step, the
    embeddings of the two full views (of all the step's micro-batches) enter a queue of ``queue_length`` per view,
    newest first (one per process, not gathered, as in SwAV); once full, its scores are appended to the batch's
    before Sinkhorn, so small batches still get balanced codes (``queue_length`` 0: no queue). A queue shorter
    than the batch is well defined: it then holds the first ``queue_length`` embeddings of the latest batch
    (SwAV itself rounds ``queue_length`` down to a multiple of the global batch, which disables such a queue).
    The queue goes into checkpoints; a resume with more than one process starts with an empty queue, since only
    rank 0's queue was saved.

    Defaults from the ECG SSL paper: projector 512 → 2048 → 128, 3000 prototypes, ε 0.05, 3 iterations,
    τ 0.1, queue from epoch 15; views RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4). From SwAV
    itself: queue length 3840, prototypes frozen for the first epoch. Multi-crop: 4 small crops of half the
    length (SwAV used 6 crops of 96/224 of the image side).
    """

    schema = {"properties": {
        "proj_hidden": {"type": "integer", "minimum": 1, "default": 2048},
        "proj_dim": {"type": "integer", "minimum": 1, "default": 128},
        "n_prototypes": {"type": "integer", "minimum": 2, "default": 3000},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
        "sinkhorn_epsilon": {"type": "number", "exclusiveMinimum": 0, "default": 0.05},
        "sinkhorn_iterations": {"type": "integer", "minimum": 1, "default": 3},
        "n_small_crops": {"type": "integer", "minimum": 0, "default": 4},
        "small_crop_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5},
        "freeze_prototypes_epochs": {"type": "integer", "minimum": 0, "default": 1},
        "queue_length": {"type": "integer", "minimum": 0, "default": 3840},
        "queue_start_epoch": {"type": "integer", "minimum": 0, "default": 15},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.cfg
        self.projector = mlp([self.encoder.out_dim, c["proj_hidden"], c["proj_dim"]])
        self.prototypes = nn.Linear(c["proj_dim"], c["n_prototypes"], bias=False)
        self.normalize_prototypes()
        # A plain tensor, not a buffer: each process keeps its own queue (DDP would overwrite buffers with rank 0's).
        self.queue = torch.zeros(2, c["queue_length"], c["proj_dim"])
        self.queue_filled = 0
        self._assigned: list[torch.Tensor] = []

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def use_queue(self) -> bool:
        return self.queue.shape[1] > 0 and self.queue_filled >= self.queue.shape[1]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        c = self.cfg
        crops = [torch.cat([self.views(x), self.views(x)])]
        if c["n_small_crops"]:
            length = min(max(1, round(c["small_crop_fraction"] * t)), t)
            crops.append(torch.cat([random_crop(self.views(x), length) for _ in range(c["n_small_crops"])]))
        z = torch.cat([F.normalize(self.projector(self.encoder(v)), dim=1) for v in crops])
        scores = self.prototypes(z).split(b)
        codes = []
        with torch.no_grad():
            if self.queue.device != x.device:
                self.queue = self.queue.to(x.device)
            for i in range(2):
                s = scores[i].detach()
                if self.use_queue():
                    s = torch.cat([s, self.prototypes(self.queue[i].to(s.dtype))])
                codes.append(sinkhorn(s, c["sinkhorn_epsilon"], c["sinkhorn_iterations"],
                                      gather_distributed=self.gather_distributed)[:b])
        if self.training:
            self._assigned.append(z[: 2 * b].detach().view(2, b, -1))
        return swav_loss(list(scores), codes, c["temperature"])

    def on_after_backward(self) -> None:
        if self.current_epoch < self.cfg["freeze_prototypes_epochs"]:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.normalize_prototypes()
        assigned, self._assigned = self._assigned[::-1], []
        length = self.queue.shape[1]
        if not assigned or length == 0 or self.current_epoch < self.cfg["queue_start_epoch"]:
            return
        new = torch.cat(assigned, dim=1)[:, :length].to(self.queue)
        n = new.shape[1]
        self.queue = torch.cat([new, self.queue[:, : length - n]], dim=1)
        self.queue_filled = min(self.queue_filled + n, length)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["swav_queue"] = {"queue": self.queue.cpu(), "filled": self.queue_filled}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("swav_queue")
        if state is None or state["queue"].shape != self.queue.shape:
            return
        if self.gather_distributed:
            log.info("SwAV: resuming with %d processes, the per-process queues start empty (only rank 0's was "
                     "saved)", self._trainer.world_size)
            self.queue_filled = 0
        else:
            self.queue, self.queue_filled = state["queue"], int(state["filled"])
