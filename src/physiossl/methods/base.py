"""The base of every SSL method: encoder, optimiser and schedule, logging. A method adds its heads,
its views and its loss by implementing :meth:`SSLMethod.loss`."""

from __future__ import annotations

import math

import lightning as L
import torch

from ..models import build_encoder


class SSLMethod(L.LightningModule):
    method_name = "base"

    def __init__(self, encoder: str, cfg: dict, in_channels: int = 12):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = cfg
        self.encoder = build_encoder(encoder, in_channels=in_channels)

    def loss(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch.shape[0])
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(int(self.cfg.get("warmup_epochs", 0) * total / max(self.trainer.max_epochs, 1)), total - 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
