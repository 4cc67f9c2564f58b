"""The base of every SSL method: encoder, view pipeline, optimiser and schedule, logging, config schema.

A method subclasses :class:`SSLMethod`, adds its heads in ``__init__(self, **kwargs)`` after
``super().__init__(**kwargs)``, implements :meth:`SSLMethod.loss` and declares its config keys in ``schema``
(JSON schema ``properties`` with ``default`` values, and ``required``); ``encoders`` restricts the encoders it
works with (None: any). ``self.cfg`` is the method config with the schema's defaults filled in. Optional hooks:
:meth:`SSLMethod.check_config` (config checks beyond the JSON schema) and :meth:`SSLMethod.exported_heads`
(heads saved with the pretrained encoder).

With ``probe_classes`` the method also trains an :class:`OnlineProbe`: a linear head on the encoder's detached
embeddings, fitted to multi-label targets that come with the batch, so that the pretraining log shows whether the
features become linearly useful before any evaluation runs. The encoder and heads train exactly as without it.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from ..augment.ecg import build_augment
from ..models import build_encoder
from ..optim import adam


class ProbeAUROC(Metric):
    """Macro ROC AUC of the multi-label scores of an epoch (gathered over processes), over the classes that have both
    positives and negatives among its samples (the others have no AUC and are left out); NaN when none has."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.scores.append(scores.detach().float())
        self.labels.append(labels.detach().long())

    def compute(self) -> torch.Tensor:
        scores, labels = dim_zero_cat(self.scores), dim_zero_cat(self.labels)
        positives = labels.sum(dim=0)
        scored = (positives > 0) & (positives < labels.shape[0])
        if not scored.any():
            return torch.tensor(float("nan"), device=scores.device)
        return torch.stack([binary_auroc(scores[:, k], labels[:, k]) for k in scored.nonzero()[:, 0].tolist()]).mean()


@torch.no_grad()
def frozen_embedding(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``encoder(x)`` as the linear evaluation computes it, in float32: in eval mode (BatchNorm uses its running
    statistics and leaves them unchanged, no dropout) and without gradients; every submodule's mode is restored
    after, and nothing is drawn from a random number generator."""
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    try:
        return encoder(x).float()
    finally:
        for module, training in modes:
            module.training = training


class OnlineProbe(nn.Module):
    """A linear head ``in_dim`` → ``n_classes`` on an encoder's detached embeddings, trained with binary
    cross-entropy on multi-label targets during pretraining (solo-learn's online linear evaluation); ``auroc``
    collects the scores of an epoch. Its weights are drawn as ``nn.Linear`` draws them (uniform in ±1/√in_dim) but
    from a generator of their own seeded with ``seed``, so creating the probe draws nothing from torch's global
    generator."""

    def __init__(self, in_dim: int, n_classes: int, seed: int):
        super().__init__()
        self.head = torch.nn.utils.skip_init(nn.Linear, in_dim, n_classes)
        generator, bound = torch.Generator().manual_seed(seed), 1.0 / math.sqrt(in_dim)
        with torch.no_grad():
            for param in (self.head.weight, self.head.bias):
                nn.init.uniform_(param, -bound, bound, generator=generator)
        self.auroc = ProbeAUROC()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


class SSLMethod(L.LightningModule):
    """A method on encoder ``encoder`` (an ``ENCODERS`` name, built with ``in_channels`` leads and the constructor
    arguments ``encoder_args``), configured by ``cfg``, for signals sampled at ``fs`` Hz. Arguments are keyword-only
    and saved as Lightning hyperparameters.

    Keys every method takes (:data:`physiossl.methods.BASE_SCHEMA`): ``lr``, ``weight_decay`` (Adam),
    ``warmup_epochs`` (linear warm-up, then cosine decay to 0 over the remaining steps), ``augment`` (the view
    pipeline, see :func:`physiossl.augment.ecg.build_augment`; ``self.views``); optional ``encoder`` and
    ``encoder_args`` (read by the pretrain stage, which passes them to the constructor), ``crop_s`` and
    ``batch_size`` (override the pretrain stage's crop length and batch size).

    ``probe_classes`` > 0 adds an :class:`OnlineProbe` (``self.probe``, initialised from ``probe_seed``) with that
    many classes; the batches are then ``(x, y)`` with ``y`` (B, probe_classes) multi-hot targets, NaN rows for
    samples without labels (see :meth:`probe_loss`).
    """

    method_name = "base"
    schema: dict = {"properties": {}, "required": []}
    encoders: tuple[str, ...] | None = None

    def __init__(self, *, cfg: dict, encoder: str, in_channels: int = 12, fs: float = 100.0,
                 encoder_args: dict | None = None, probe_classes: int = 0, probe_seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        if self.encoders is not None and encoder not in self.encoders:
            raise ValueError(f"method {self.method_name!r} needs encoder {' or '.join(map(repr, self.encoders))}, "
                             f"got {encoder!r}")
        self.cfg = {**self.defaults(), **cfg}
        problems = self.check_config(self.cfg, f"pretrain.methods.{self.method_name}")
        if problems:
            raise ValueError(f"invalid {self.method_name} config:\n" + "\n".join(problems))
        self.in_channels, self.fs = in_channels, fs
        self.encoder = build_encoder(encoder, in_channels, **(encoder_args or {}))
        self.views = build_augment(self.cfg["augment"], fs, key=f"pretrain.methods.{self.method_name}.augment")
        self.probe = OnlineProbe(self.encoder.out_dim, probe_classes, probe_seed) if probe_classes else None

    @classmethod
    def defaults(cls) -> dict:
        return {k: v["default"] for k, v in cls.schema.get("properties", {}).items() if "default" in v}

    @classmethod
    def check_config(cls, cfg: dict, key: str) -> list[str]:
        """Problems of the method config ``cfg`` (with the schema's defaults filled in) beyond its JSON schema,
        each as ``config key '<key>.<path>': <message>``; empty when there are none (the default).

        Called by :func:`physiossl.methods.validate_method_config` and by the constructor (which raises a
        ValueError listing them). ``cfg`` may also break the schema (wrong types, missing keys): those are
        reported by the schema check, so an override checks only the values it can read.
        """
        return []

    def exported_heads(self) -> dict[str, nn.Module]:
        """Heads besides the encoder that downstream use needs, by name (default none). The pretrain stage
        saves each one's ``state_dict()`` in the checkpoint's ``heads`` mapping."""
        return {}

    @property
    def gather_distributed(self) -> bool:
        """True when training under a trainer with more than one process (contrastive losses then gather)."""
        return self._trainer is not None and self._trainer.world_size > 1

    def total_steps(self) -> int | None:
        """Optimiser steps of the whole fit, None without a trainer (or when unbounded)."""
        if self._trainer is None:
            return None
        total = self._trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) else None

    def loss(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_step(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        loss = self.loss(x)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0],
                 sync_dist=self.gather_distributed)
        if self.probe is not None and y is not None:
            # the probe's loss depends on its head alone: the gradients of everything else are those of `loss`
            loss = loss + self.probe_loss(x, y)
        return loss

    def probe_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The online probe's binary cross-entropy, in float32, on the encoder's :func:`frozen_embedding` of the
        unaugmented batch ``x``, over the samples with labels (rows of ``y`` without NaN) and a finite embedding (a
        half-precision overflow leaves a sample out); logged per epoch as ``probe_loss`` (mean over those samples)
        and ``probe_auroc`` (:class:`ProbeAUROC`). Without such samples it is 0 and logs nothing; the probe's
        parameters still take part in the backward pass (with zero gradients), as DDP needs."""
        features = frozen_embedding(self.encoder, x)
        used = ~torch.isnan(y).any(dim=1) & torch.isfinite(features).all(dim=1)
        with torch.autocast(x.device.type, enabled=False):
            if not used.any():
                return sum(p.sum() for p in self.probe.parameters()) * 0.0
            logits, y = self.probe(features[used]), y[used].float()
            loss = F.binary_cross_entropy_with_logits(logits, y)
        self.probe.auroc.update(logits, y)
        self.log("probe_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=int(used.sum()),
                 sync_dist=self.gather_distributed)
        self.log("probe_auroc", self.probe.auroc, on_step=False, on_epoch=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """Lightning's optimiser step, then :meth:`after_optimizer_step`.

        In Lightning 2.6's automatic optimisation this hook runs once per optimiser step: the earlier micro-batches
        of an ``accumulate_grad_batches`` window run outside it, and the closure it passes to ``optimizer.step()``
        runs the last micro-batch's ``training_step`` and backward. (``on_before_zero_grad`` would not do: it runs
        inside the closure of the first micro-batch of the next window, after that micro-batch's forward pass and
        before any step at the very start.) ``global_step`` still counts the steps before this one here.
        """
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """Per-step state updates (EMA targets, queues, prototypes), once per optimiser step, after it."""

    def configure_optimizers(self):
        """Adam (:func:`physiossl.optim.adam`: fused kernels on CUDA) over the trainable parameters, the online
        probe's in a group of their own without weight decay, and the schedule of every group: linear warm-up over
        ``warmup_epochs``, then cosine decay to 0. Adam's updates are per parameter and nothing clips the gradient
        norm over all parameters, so the other parameters take the steps of a run without the probe."""
        probe = list(self.probe.parameters()) if self.probe is not None else []
        skip = {id(p) for p in probe}
        groups = [{"params": [p for p in self.parameters() if p.requires_grad and id(p) not in skip]}]
        if probe:
            groups.append({"params": probe, "weight_decay": 0.0})
        optimizer = adam(groups, lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])
        total = max(self.total_steps() or 1, 1)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        warmup = min(int(self.cfg["warmup_epochs"] * total / epochs), total - 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
