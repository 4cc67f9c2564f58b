"""Downstream protocols on a multi-label classification task or a regression target.

- Linear evaluation: the encoder is frozen including its BatchNorm statistics (eval mode, no gradients);
  its embeddings of every sliding window are computed once, and a linear head is trained on the window
  embeddings of the training records (each window carries its record's labels or target).
- Fine-tuning: encoder and linear head are trained together on random crops of the training records.

The task's :class:`Objective` sets the loss, the output activation and the metric: :data:`CLASSIFICATION`
(binary cross-entropy, sigmoid, macro AUC) or :func:`regression` (squared error on standardised targets, the
prediction in the target's units, MAE). Both protocols select the epoch with the best validation value of the
objective's key metric (per-record aggregation of the window outputs) and report the test metrics of that epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.loading import CropDataset, SignalCache, WindowDataset, aggregate, collate_batch
from .metrics import macro_auc, regression_metrics


@dataclass(frozen=True)
class Objective:
    """What a head is trained for: ``loss(outputs, labels)`` on window outputs, ``activate(outputs)`` maps them to
    scores (aggregated per record), ``metric(labels, scores, classes)`` scores records; ``key`` names the metric
    that selects the epoch, higher is better when ``maximize``."""
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    activate: Callable[[torch.Tensor], torch.Tensor]
    metric: Callable[[np.ndarray, np.ndarray, list[str]], dict]
    key: str
    maximize: bool

    def better(self, new: dict, best: dict | None) -> bool:
        if best is None:
            return True
        return new[self.key] > best[self.key] if self.maximize else new[self.key] < best[self.key]


CLASSIFICATION = Objective(loss=nn.BCEWithLogitsLoss(), activate=torch.sigmoid, metric=macro_auc, key="macro_auc",
                           maximize=True)


def regression(train_targets: np.ndarray) -> Objective:
    """Regression of (n, K) targets: the head predicts targets standardised with the training records' mean and
    standard deviation (squared error), scores are in the target's units, the epoch with the lowest validation
    MAE is selected."""
    mean = torch.as_tensor(np.nanmean(train_targets, axis=0), dtype=torch.float32)
    std = torch.as_tensor(np.nanstd(train_targets, axis=0), dtype=torch.float32).clamp_min(1e-6)

    def loss(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs, (y - mean.to(y.device)) / std.to(y.device))

    def activate(outputs: torch.Tensor) -> torch.Tensor:
        return outputs * std.to(outputs.device) + mean.to(outputs.device)

    return Objective(loss=loss, activate=activate, metric=lambda y, s, classes: regression_metrics(y, s), key="mae",
                     maximize=False)


@dataclass
class Split:
    cache: SignalCache
    labels: np.ndarray        # (n_records, K): multi-hot classes or targets


@dataclass
class Task:
    train: Split
    val: Split
    test: Split
    classes: list[str]
    window: int
    stride: int
    aggregate: str
    batch_size: int
    objective: Objective = CLASSIFICATION


def _window_loader(split: Split, task: Task) -> DataLoader:
    return DataLoader(WindowDataset(split.cache, task.window, task.stride), batch_size=max(task.batch_size, 256),
                      shuffle=False, collate_fn=collate_batch)


@torch.no_grad()
def window_outputs(fn, split: Split, task: Task, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    outs, rows = [], []
    for x, row in _window_loader(split, task):
        outs.append(fn(x.to(device)).float().cpu())
        rows.append(row)
    return torch.cat(outs), torch.cat(rows)


def record_scores(window_logits: torch.Tensor, rows: torch.Tensor, n_records: int, task: Task) -> np.ndarray:
    return aggregate(task.objective.activate(window_logits), rows, n_records, task.aggregate).numpy()


def linear_eval(encoder: nn.Module, task: Task, cfg: dict, device: torch.device, seed: int) -> dict:
    """Linear head on frozen window embeddings. The result's ``predict(split)`` scores any split (e.g. a noisy
    copy of the test records) with the selected head."""
    encoder = encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    emb = {name: window_outputs(encoder, getattr(task, name), task, device) for name in ("train", "val", "test")}
    x_train, rows_train = emb["train"][0].to(device), emb["train"][1]
    y_train = torch.from_numpy(task.train.labels)[rows_train].to(device)
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(x_train.shape[1], len(task.classes)).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    objective = task.objective

    @torch.no_grad()
    def scores_of(x: torch.Tensor, rows: torch.Tensor, n_records: int) -> np.ndarray:
        return record_scores(head(x.to(device)).float().cpu(), rows, n_records, task)

    best, history = None, []
    for epoch in tqdm(range(cfg["epochs"]), desc="linear evaluation", unit="epoch"):
        head.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for i in range(0, len(order), task.batch_size):
            idx = order[i:i + task.batch_size]
            loss = objective.loss(head(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        val = objective.metric(task.val.labels, scores_of(*emb["val"], len(task.val.cache)), task.classes)
        history.append({"epoch": epoch + 1, "train_loss": loss.item(), f"val_{objective.key}": val[objective.key]})
        if objective.better(val, best and best[0]):
            best = (val, epoch + 1, copy.deepcopy(head.state_dict()))
    head.load_state_dict(best[2])

    def predict(split: Split) -> np.ndarray:
        return scores_of(*window_outputs(encoder, split, task, device), len(split.cache))

    scores = scores_of(*emb["test"], len(task.test.cache))
    return {"val": best[0], "test": objective.metric(task.test.labels, scores, task.classes), "test_scores": scores,
            "best_epoch": best[1], "history": history, "predict": predict}


def param_groups(encoder: nn.Module, head: nn.Module, lr: float, lr_decay: float) -> list[dict]:
    """Discriminative learning rates: the head at ``lr``; the encoder's layer groups (``encoder.layer_groups()``,
    input to output) at ``lr * lr_decay^k`` with k = 1 for the group next to the head, growing towards the input.
    Encoder parameters outside every group train with the group next to the head."""
    groups = list(encoder.layer_groups()) if lr_decay != 1.0 and hasattr(encoder, "layer_groups") else [encoder]
    seen, out = set(), [{"params": list(head.parameters()), "lr": lr}]
    for depth, group in enumerate(reversed(groups), start=1):
        params = [p for p in group.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        out.append({"params": params, "lr": lr * lr_decay ** depth})
    out[1]["params"] += [p for p in encoder.parameters() if id(p) not in seen]
    return [g for g in out if g["params"]]


def finetune(encoder: nn.Module, task: Task, cfg: dict, device: torch.device, seed: int, crop: int,
             autocast_dtype: torch.dtype | None = None) -> dict:
    """Encoder and linear head trained together on random crops; optionally the head alone for the first
    ``head_first_epochs`` (encoder frozen including BatchNorm statistics) and with discriminative learning rates
    (``lr_decay``). Under float16 autocast the loss is scaled (GradScaler) so small gradients do not underflow.
    The result's ``predict(split)`` scores any split with the selected model."""
    head = nn.Linear(encoder.out_dim, len(task.classes))
    model = nn.Sequential(encoder, head).to(device)
    optimizer = torch.optim.AdamW(param_groups(encoder, head, cfg["lr"], cfg.get("lr_decay", 1.0)),
                                  lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    objective = task.objective
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype is torch.float16)
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(CropDataset(task.train.cache, crop, task.train.labels), batch_size=task.batch_size,
                       shuffle=True, drop_last=len(task.train.cache) > task.batch_size, collate_fn=collate_batch,
                       generator=generator)

    def forward(x):
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return model(x)

    def predict(split: Split) -> np.ndarray:
        model.eval()
        logits, rows = window_outputs(forward, split, task, device)
        return record_scores(logits, rows, len(split.cache), task)

    head_only = cfg.get("head_first_epochs", 0)
    best, history = None, []
    for epoch in range(cfg["epochs"]):
        frozen = epoch < head_only
        for p in encoder.parameters():
            p.requires_grad_(not frozen)
        model.train()
        if frozen:
            encoder.eval()
        phase = "head only" if frozen else "all weights"
        for x, y in tqdm(train, desc=f"fine-tuning epoch {epoch + 1}/{cfg['epochs']} ({phase})", unit="batch", leave=False):
            loss = objective.loss(forward(x.to(device)).float(), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        val = objective.metric(task.val.labels, predict(task.val), task.classes)
        history.append({"epoch": epoch + 1, "train_loss": loss.item(), f"val_{objective.key}": val[objective.key],
                        "phase": phase})
        if objective.better(val, best and best[0]):
            best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    scores = predict(task.test)
    return {"val": best[0], "test": objective.metric(task.test.labels, scores, task.classes), "test_scores": scores,
            "best_epoch": best[1], "history": history, "predict": predict}

