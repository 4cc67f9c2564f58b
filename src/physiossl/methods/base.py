"""The base of every SSL method: encoder, view pipeline, optimiser and schedule, logging, config schema.

A method subclasses :class:`SSLMethod`, adds its heads in ``__init__(self, **kwargs)`` after
``super().__init__(**kwargs)``, implements :meth:`SSLMethod.loss` and declares its config keys in ``schema``
(JSON schema ``properties`` with ``default`` values, and ``required``); ``encoders`` restricts the encoders it
works with (None: any). ``self.cfg`` is the method config with the schema's defaults filled in. Optional hooks:
:meth:`SSLMethod.check_config` (config checks beyond the JSON schema) and :meth:`SSLMethod.exported_heads`
(heads saved with the pretrained encoder).
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from ..augment.ecg import build_augment
from ..models import ENCODERS, build_encoder

BASE_SCHEMA: dict = {
    "properties": {
        "lr": {"type": "number", "exclusiveMinimum": 0},
        "weight_decay": {"type": "number", "minimum": 0},
        "warmup_epochs": {"type": "integer", "minimum": 0},
        "augment": {"type": "array"},
        "encoder": {"type": "string", "enum": sorted(ENCODERS)},
        "encoder_args": {"type": "object"},
        "crop_s": {"type": "number", "exclusiveMinimum": 0},
        "batch_size": {"type": "integer", "minimum": 2},
    },
    "required": ["lr", "weight_decay", "warmup_epochs", "augment"],
}


class SSLMethod(L.LightningModule):
    """A method on encoder ``encoder`` (an ``ENCODERS`` name, built with ``in_channels`` leads and the constructor
    arguments ``encoder_args``), configured by ``cfg``, for signals sampled at ``fs`` Hz. Arguments are keyword-only
    and saved as Lightning hyperparameters.

    Keys every method takes (``BASE_SCHEMA``): ``lr``, ``weight_decay`` (Adam), ``warmup_epochs`` (linear
    warm-up, then cosine decay to 0 over the remaining steps), ``augment`` (the view pipeline, see
    :func:`physiossl.augment.ecg.build_augment`; ``self.views``); optional ``encoder``/``encoder_args`` (read by
    the pretrain stage, which passes them to the constructor), ``crop_s`` and ``batch_size`` (override the pretrain
    stage's crop length and batch size).
    """

    method_name = "base"
    schema: dict = {"properties": {}, "required": []}
    encoders: tuple[str, ...] | None = None

    def __init__(self, *, cfg: dict, encoder: str, in_channels: int = 12, fs: float = 100.0,
                 encoder_args: dict | None = None):
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

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch.shape[0],
                 sync_dist=self.gather_distributed)
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
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])
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
