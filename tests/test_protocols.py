"""Linear evaluation and fine-tuning on the demo store, with a Task built as the evaluate stage builds it."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from physiossl.data.ecg.loading import SignalCache
from physiossl.eval.protocols import Split, Task, finetune, linear_eval
from physiossl.models import build_encoder

TRAIN_FOLDS, VAL_FOLD, TEST_FOLD = [1, 2, 3, 4, 5, 6], 9, 10


@pytest.fixture(scope="module")
def task(demo_store) -> Task:
    """As physiossl.stages.evaluate.run does it: classes without training positives are dropped."""
    splits = {"train": TRAIN_FOLDS, "val": [VAL_FOLD], "test": [TEST_FOLD]}
    caches = {name: SignalCache(demo_store, folds=folds) for name, folds in splits.items()}
    labels = {name: cache.labels("all") for name, cache in caches.items()}
    trained = labels["train"][0].sum(axis=0) > 0
    classes = [c for c, keep in zip(labels["train"][1], trained) if keep]
    assert classes
    fs = caches["train"].fs
    return Task(**{name: Split(caches[name], labels[name][0][:, trained]) for name in splits},
                classes=classes, window=int(round(2.5 * fs)), stride=int(round(1.25 * fs)), aggregate="mean",
                batch_size=32)


def _check_result(result: dict, epochs: int) -> None:
    for split in ("val", "test"):
        value = result[split]["macro_auc"]
        assert not math.isnan(value) and 0.0 <= value <= 1.0
        assert result[split]["n_scored"] >= 1
        assert all(0.0 <= v <= 1.0 for v in result[split]["per_class_auc"].values())
    assert 1 <= result["best_epoch"] <= epochs
    assert [h["epoch"] for h in result["history"]] == list(range(1, epochs + 1))
    assert result["val"]["macro_auc"] == max(h["val_macro_auc"] for h in result["history"])


def test_linear_eval_freezes_encoder_and_bn_statistics(task):
    torch.manual_seed(0)
    encoder = build_encoder("xresnet1d50")
    encoder.train()  # linear_eval must switch it to eval mode itself
    before = copy.deepcopy(encoder.state_dict())
    assert any(k.endswith("running_mean") for k in before) and any(k.endswith("running_var") for k in before)
    epochs = 3
    result = linear_eval(encoder, task, {"epochs": epochs, "lr": 1e-2, "weight_decay": 1e-4}, torch.device("cpu"),
                         seed=0)
    after = encoder.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), f"{name} changed during linear evaluation"
    _check_result(result, epochs)


def test_finetune_trains_encoder(task):
    torch.manual_seed(0)
    encoder = build_encoder("xresnet1d50")
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = finetune(encoder, task, {"epochs": 1, "lr": 1e-3, "weight_decay": 1e-4}, torch.device("cpu"), seed=0,
                      crop=250)
    after = encoder.state_dict()
    changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    weights = [k for k in changed if k.endswith("weight")]
    assert weights, "fine-tuning left every encoder weight unchanged"
    assert any(k.endswith("running_mean") for k in changed)  # BN statistics are trained too
    _check_result(result, 1)
