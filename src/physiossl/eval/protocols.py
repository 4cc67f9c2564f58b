"""Downstream protocols on a multi-label classification task or a regression target.

- Linear evaluation: the encoder is frozen including its BatchNorm statistics (eval mode, no gradients);
  its embeddings of every sliding window are computed once, and a linear head is trained on the window
  embeddings of the training records (each window carries its record's labels or target).
- Fine-tuning: encoder and linear head are trained together on random crops of the training records.

The task's :class:`Objective` sets the loss, the output activation and the metric: :data:`CLASSIFICATION`
(binary cross-entropy, sigmoid, macro AUC) or :func:`regression` (squared error on standardised targets, the
prediction in the target's units, MAE). Both protocols select the epoch with the best validation value of the
objective's key metric (per-record aggregation of the window outputs) and report the test metrics of that epoch.

Both train as Lightning modules. Given the trainer options of a resumable run
(:func:`physiossl.stages.common.resumable_training`), every epoch ends with a checkpoint that holds, besides the
weights and the optimiser, the selection so far (best validation metrics, epoch and weights), the history and the
state of the batch-order generator: a run killed and rerun resumes from it and ends with the numbers of an
uninterrupted one.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from ..data.ecg.loading import CropDataset, SignalCache, WindowDataset, aggregate, collate_batch
from ..optim import adam
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


AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
#: Trainer options of a run without checkpoints or logs (e.g. in a notebook); a stage passes those of a resumable run
PLAIN_TRAINER = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False,
                 "num_sanity_val_steps": 0}


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


class _Rows(Dataset):
    """Rows of equally long tensors, fetched a batch at a time."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitems__(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        return tuple(t[rows] for t in self.tensors)


class _Permutation(Sampler[int]):
    """One permutation of ``n`` rows per epoch, drawn from ``generator``."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


class _Protocol(L.LightningModule):
    """Trains on ``task.train`` and selects the epoch with the best validation value of the objective's key metric
    (:meth:`Objective.better`: the first of equal values). Subclasses give ``forward``, the optimiser, the loaders
    and :meth:`selected` (the module whose weights the selection keeps)."""

    def __init__(self, task: Task, cfg: dict, seed: int):
        super().__init__()
        self.task, self.cfg = task, cfg
        self.generator = torch.Generator().manual_seed(seed)     # the order of the training batches
        self.history: list[dict] = []
        self.best: tuple[dict, int, dict] | None = None          # validation metrics, epoch, weights
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._last_loss = float("nan")

    def selected(self) -> nn.Module:
        raise NotImplementedError

    def phase(self) -> dict:
        return {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.task.objective.loss(self(x).float(), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        self._last_loss = loss.detach()
        return loss

    def validation_step(self, batch, batch_idx):
        x, rows = batch
        self._val_outputs.append((self(x).float().cpu(), rows.cpu()))

    def on_validation_epoch_end(self):
        logits, rows = (torch.cat(parts) for parts in zip(*self._val_outputs))
        self._val_outputs.clear()
        objective, key = self.task.objective, self.task.objective.key
        scores = record_scores(logits, rows, len(self.task.val.cache), self.task)
        val = objective.metric(self.task.val.labels, scores, self.task.classes)
        self.log(f"val_{key}", float(val[key]), prog_bar=True)
        epoch = self.current_epoch + 1
        self.history.append({"epoch": epoch, "train_loss": float(self._last_loss), f"val_{key}": val[key],
                             **self.phase()})
        if objective.better(val, self.best and self.best[0]):
            self.best = (val, epoch, copy.deepcopy(self.selected().state_dict()))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        val, epoch, weights = self.best
        checkpoint["selection"] = {"history": json.dumps(self.history), "best_val": json.dumps(val),
                                   "best_epoch": epoch, "best_weights": weights,
                                   "generator": self.generator.get_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        selection = checkpoint["selection"]
        self.history = json.loads(selection["history"])
        self.best = (json.loads(selection["best_val"]), selection["best_epoch"], selection["best_weights"])
        self.generator.set_state(selection["generator"])

    def fit(self, device: torch.device, precision: str, trainer_options: dict | None, ckpt_path: str | None) -> None:
        """Train for ``cfg["epochs"]`` (resuming from ``ckpt_path``), then keep the selected weights on ``device``."""
        n_batches = len(self.train_dataloader())
        options = {**PLAIN_TRAINER, **(trainer_options or {})}
        trainer = L.Trainer(max_epochs=self.cfg["epochs"], accelerator=device.type, devices=1, precision=precision,
                            log_every_n_steps=max(1, min(50, n_batches)), **options)
        trainer.fit(self, ckpt_path=ckpt_path, weights_only=True)
        self.to(device)
        self.selected().load_state_dict(self.best[2])

    def result(self, test: dict, scores: np.ndarray, predict: Callable) -> dict:
        return {"val": self.best[0], "test": test, "test_scores": scores, "best_epoch": self.best[1],
                "history": self.history, "predict": predict}


class LinearProbe(_Protocol):
    """A linear head on precomputed window embeddings: ``train`` (embeddings, labels), ``val`` (embeddings, record
    rows)."""

    def __init__(self, head: nn.Linear, task: Task, cfg: dict, seed: int, train: tuple[torch.Tensor, torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor]):
        super().__init__(task, cfg, seed)
        self.head, self._train, self._val = head, train, val

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def selected(self) -> nn.Module:
        return self.head

    def configure_optimizers(self):
        return adam(self.head.parameters(), decoupled=True, lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Rows(*self._train), batch_size=self.task.batch_size,
                          sampler=_Permutation(len(self._train[0]), self.generator), collate_fn=collate_batch)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Rows(*self._val), batch_size=len(self._val[0]), collate_fn=collate_batch)


def linear_eval(encoder: nn.Module, task: Task, cfg: dict, device: torch.device, seed: int,
                trainer_options: dict | None = None, ckpt_path: str | None = None) -> dict:
    """Linear head on frozen window embeddings. The result's ``predict(split)`` scores any split (e.g. a noisy
    copy of the test records) with the selected head. ``trainer_options``: further ``lightning.Trainer`` arguments
    (checkpoints, loggers; default none of them); ``ckpt_path``: the checkpoint to resume from."""
    encoder = encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    emb = {name: window_outputs(encoder, getattr(task, name), task, device) for name in ("train", "val", "test")}
    x_train, rows_train = emb["train"]
    y_train = torch.from_numpy(task.train.labels)[rows_train]
    head = nn.Linear(x_train.shape[1], len(task.classes))
    probe = LinearProbe(head, task, cfg, seed, (x_train, y_train), emb["val"])
    probe.fit(device, "32-true", trainer_options, ckpt_path)
    probe.eval()

    @torch.no_grad()
    def scores_of(x: torch.Tensor, rows: torch.Tensor, n_records: int) -> np.ndarray:
        return record_scores(head(x.to(device)).float().cpu(), rows, n_records, task)

    def predict(split: Split) -> np.ndarray:
        return scores_of(*window_outputs(encoder, split, task, device), len(split.cache))

    scores = scores_of(*emb["test"], len(task.test.cache))
    return probe.result(task.objective.metric(task.test.labels, scores, task.classes), scores, predict)


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


class EpochOrder(RandomSampler):
    """A random order per epoch, drawn whole when the epoch starts: the generator then advances by the same amount
    whether or not the epoch's last, partial batch is fetched (Lightning stops after the last full batch), so an
    epoch's order does not depend on how the previous epoch's iteration ended."""

    def __iter__(self):
        return iter(list(super().__iter__()))


class FineTuning(_Protocol):
    """Encoder and linear head trained together on random crops of ``crop`` samples; the head alone (encoder
    frozen, BatchNorm statistics too) for the first ``head_first_epochs``."""

    def __init__(self, encoder: nn.Module, head: nn.Linear, task: Task, cfg: dict, seed: int, crop: int):
        super().__init__(task, cfg, seed)
        self.encoder, self.head, self.crop = encoder, head, crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def selected(self) -> nn.Module:
        return self

    def head_only(self) -> bool:
        return self.current_epoch < self.cfg.get("head_first_epochs", 0)

    def phase(self) -> dict:
        return {"phase": "head only" if self.head_only() else "all weights"}

    def on_fit_start(self) -> None:
        self.train()

    def on_train_epoch_start(self) -> None:
        frozen = self.head_only()
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.train()
        if frozen:
            self.encoder.eval()

    def configure_optimizers(self):
        groups = param_groups(self.encoder, self.head, self.cfg["lr"], self.cfg.get("lr_decay", 1.0))
        return adam(groups, decoupled=True, lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])

    def train_dataloader(self) -> DataLoader:
        train = self.task.train
        dataset = CropDataset(train.cache, self.crop, train.labels)
        return DataLoader(dataset, batch_size=self.task.batch_size,
                          sampler=EpochOrder(dataset, generator=self.generator), generator=self.generator,
                          drop_last=len(train.cache) > self.task.batch_size, collate_fn=collate_batch)

    def val_dataloader(self) -> DataLoader:
        return _window_loader(self.task.val, self.task)


def finetune(encoder: nn.Module, task: Task, cfg: dict, device: torch.device, seed: int, crop: int,
             precision: str = "32-true", trainer_options: dict | None = None, ckpt_path: str | None = None) -> dict:
    """Encoder and linear head trained together on random crops; optionally the head alone for the first
    ``head_first_epochs`` (encoder frozen including BatchNorm statistics) and with discriminative learning rates
    (``lr_decay``). ``precision``: Lightning's (under 16-mixed the loss is scaled so that small gradients do not
    underflow). The result's ``predict(split)`` scores any split with the selected model. ``trainer_options`` and
    ``ckpt_path``: as for :func:`linear_eval`."""
    model = FineTuning(encoder, nn.Linear(encoder.out_dim, len(task.classes)), task, cfg, seed, crop)
    model.fit(device, precision, trainer_options, ckpt_path)
    autocast = AUTOCAST.get(precision)

    def predict(split: Split) -> np.ndarray:
        model.eval()
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits, rows = window_outputs(model, split, task, device)
        return record_scores(logits, rows, len(split.cache), task)

    scores = predict(task.test)
    return model.result(task.objective.metric(task.test.labels, scores, task.classes), scores, predict)
