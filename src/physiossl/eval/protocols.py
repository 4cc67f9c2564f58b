"""Downstream protocols on a multi-label task.

- Linear evaluation: the encoder is frozen including its BatchNorm statistics (eval mode, no gradients);
  its embeddings of every sliding window are computed once, and a linear head is trained on the window
  embeddings of the training records (each window carries its record's labels).
- Fine-tuning: encoder and linear head are trained together on random crops of the training records.

Both select the epoch with the best validation macro AUC (per-record aggregation of the window
predictions) and report the test macro AUC of that epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.loading import CropDataset, SignalCache, WindowDataset, aggregate, collate_batch
from .metrics import macro_auc


@dataclass
class Split:
    cache: SignalCache
    labels: np.ndarray        # (n_records, K) multi-hot


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


def record_scores(window_logits: torch.Tensor, rows: torch.Tensor, n_records: int, how: str) -> np.ndarray:
    return aggregate(torch.sigmoid(window_logits), rows, n_records, how).numpy()


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
    loss_fn = nn.BCEWithLogitsLoss()

    @torch.no_grad()
    def scores_of(x: torch.Tensor, rows: torch.Tensor, n_records: int) -> np.ndarray:
        return record_scores(head(x.to(device)).float().cpu(), rows, n_records, task.aggregate)

    best, history = None, []
    for epoch in tqdm(range(cfg["epochs"]), desc="linear evaluation", unit="epoch"):
        head.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for i in range(0, len(order), task.batch_size):
            idx = order[i:i + task.batch_size]
            loss = loss_fn(head(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        val = macro_auc(task.val.labels, scores_of(*emb["val"], len(task.val.cache)), task.classes)
        history.append({"epoch": epoch + 1, "train_loss": loss.item(), "val_macro_auc": val["macro_auc"]})
        if best is None or val["macro_auc"] > best[0]["macro_auc"]:
            best = (val, epoch + 1, copy.deepcopy(head.state_dict()))
    head.load_state_dict(best[2])

    def predict(split: Split) -> np.ndarray:
        return scores_of(*window_outputs(encoder, split, task, device), len(split.cache))

    scores = scores_of(*emb["test"], len(task.test.cache))
    return {"val": best[0], "test": macro_auc(task.test.labels, scores, task.classes), "test_scores": scores,
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
    loss_fn = nn.BCEWithLogitsLoss()
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
        return record_scores(logits, rows, len(split.cache), task.aggregate)

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
            loss = loss_fn(forward(x.to(device)).float(), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        val = macro_auc(task.val.labels, predict(task.val), task.classes)
        history.append({"epoch": epoch + 1, "train_loss": loss.item(), "val_macro_auc": val["macro_auc"],
                        "phase": phase})
        if best is None or val["macro_auc"] > best[0]["macro_auc"]:
            best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    scores = predict(task.test)
    return {"val": best[0], "test": macro_auc(task.test.labels, scores, task.classes), "test_scores": scores,
            "best_epoch": best[1], "history": history, "predict": predict}

