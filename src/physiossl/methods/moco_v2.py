"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of past keys as negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import _distributed
from ..losses.infonce import infonce
from . import register
from ._common import MomentumTargets, mlp
from .base import SSLMethod


def shuffled_chunks(n: int, splits: int, device: torch.device | None = None) -> list[torch.Tensor]:
    """Sample indices of the ``splits`` key chunks of a batch of ``n`` whose queries go through the network in the
    contiguous chunks ``arange(n).tensor_split(splits)``: the query chunks, each shuffled, in random order, dealt
    out round-robin. The chunks hold ``n // splits`` or ``n // splits + 1`` samples; for ``splits ≥ 2`` and
    ``n ≥ 2 · splits`` every key chunk holds samples of at least two query chunks, so no key shares its BatchNorm
    batch with the samples its query shares one with."""
    blocks = torch.arange(n, device=device).tensor_split(splits)
    order = torch.cat([blocks[b][torch.randperm(len(blocks[b]), device=device)]
                       for b in torch.randperm(splits).tolist()])
    return [order[j::splits] for j in range(splits)]


@register("moco_v2")
class MoCoV2(MomentumTargets, SSLMethod):
    """Queries: encoder → projector (out_dim → ``proj_hidden`` → ``proj_dim``, Linear → ReLU → Linear, no BN as
    in MoCo v2) of one view; keys: the key encoder and projector, exponential moving averages of the query
    networks with fixed ``momentum``, of the other view. InfoNCE with ``temperature`` against the positive key
    and the ``queue_size`` normalised keys of the queue (the queue's only negatives). After every optimiser step
    the key networks are updated and the step's keys (of all its micro-batches, gathered over all processes
    under DDP) replace the oldest entries of the queue; queue and pointer are buffers, so in checkpoints.

    Split shuffling BN, MoCo's single-device remedy for BatchNorm "cheating" (a key and its query normalised
    with statistics of the same samples): the queries go through the network in ``bn_splits`` contiguous chunks,
    the keys in ``bn_splits`` chunks of a permuted batch (:func:`shuffled_chunks`), then put back in order, so
    each chunk gets its own BN statistics and every key's chunk differs from its query's. The chunks hold
    ``B // k`` or ``B // k + 1`` samples; ``k`` drops below ``bn_splits`` to ``B // 2`` when the batch has
    fewer than ``2 · bn_splits`` samples, so BN never sees a chunk of one. ``bn_splits`` 1: whole-batch BN, no
    shuffling. Under DDP this per-process split shuffle of the local batch replaces MoCo's cross-GPU shuffle.

    Defaults from MoCo v2: τ 0.2, momentum 0.999, projector hidden = encoder width (512) → 128; 4 BN splits. The
    queue holds 16384 keys (MoCo: 65536), less than one epoch of the 54,566-record ECG pool, so a record's own
    older key is rarely among its negatives. Views: RandomResizedCrop (scale 0.5–1) + TimeOut (0.2–0.4).
    """

    momentum_pairs = (("encoder", "key_encoder"), ("projector", "key_projector"))
    momentum_cosine = False
    schema = {"properties": {
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.2},
        "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.999},
        "queue_size": {"type": "integer", "minimum": 1, "default": 16384},
        "proj_hidden": {"type": "integer", "minimum": 1, "default": 512},
        "proj_dim": {"type": "integer", "minimum": 1, "default": 128},
        "bn_splits": {"type": "integer", "minimum": 1, "default": 4},
    }, "required": []}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.cfg
        self.projector = mlp([self.encoder.out_dim, c["proj_hidden"], c["proj_dim"]], batch_norm=False)
        self.make_targets()
        self.register_buffer("queue", F.normalize(torch.randn(c["queue_size"], c["proj_dim"]), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._keys: list[torch.Tensor] = []

    def bn_splits(self, n: int) -> int:
        """The number of BN chunks for a batch of ``n``: ``bn_splits``, at most ``n // 2``, at least 1."""
        return max(1, min(self.cfg["bn_splits"], n // 2))

    def keys(self, v: torch.Tensor, splits: int) -> torch.Tensor:
        """Key projections of the views ``v``, computed in the shuffled chunks, in the order of ``v``."""
        if splits == 1:
            return self.key_projector(self.key_encoder(v))
        chunks = shuffled_chunks(v.shape[0], splits, v.device)
        k = torch.cat([self.key_projector(self.key_encoder(v[i])) for i in chunks])
        return torch.empty_like(k).index_copy_(0, torch.cat(chunks), k)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        splits = self.bn_splits(x.shape[0])
        q = torch.cat([self.projector(self.encoder(v)) for v in self.views(x).tensor_split(splits)])
        with torch.no_grad():
            k = F.normalize(self.keys(self.views(x), splits), dim=1)
        if self.training:
            self._keys.append(k)
        return infonce(q, k, self.cfg["temperature"], queue=self.queue)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[-size:]
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[index] = keys.to(self.queue)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        if self._keys:
            keys, self._keys = torch.cat(self._keys), []
            self.enqueue(_distributed.gather(keys) if self.gather_distributed else keys)
