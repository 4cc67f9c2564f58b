"""The evaluation stage's additions to the protocols: label-efficiency subsets, per-method protocol settings,
discriminative learning rates and the head-first phase, noisy test copies, bootstrap intervals and the files
a run writes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from physiossl.config import load_config, stage_view
from physiossl.data.ecg.loading import SignalCache
from physiossl.eval.bootstrap import macro_auc_ci
from physiossl.eval.protocols import Split, Task, finetune, param_groups
from physiossl.eval.robustness import noisy_copy, robustness_curve
from physiossl.models import build_encoder
from physiossl.stages import evaluate
from test_pretrain import REPO

NOISE = {"gaussian_noise": {"std": 0.02}, "baseline_wander": {"amplitude": 0.1}}


def test_fraction_subsets_are_nested_and_the_same_for_every_call(demo_store):
    cache = SignalCache(demo_store, folds=[1, 2, 3, 4, 5, 6, 7, 8])
    small = evaluate.training_subset(cache, [1, 2, 3, 4, 5, 6, 7, 8], "frac0.1", 0, demo_store)
    large = evaluate.training_subset(cache, [1, 2, 3, 4, 5, 6, 7, 8], "frac0.5", 0, demo_store)
    again = evaluate.training_subset(cache, [1, 2, 3, 4, 5, 6, 7, 8], "frac0.1", 0, demo_store)
    assert len(small) == round(0.1 * len(cache)) and len(large) == round(0.5 * len(cache))
    assert set(small.record_ids) <= set(large.record_ids) <= set(cache.record_ids)
    assert list(small.record_ids) == list(again.record_ids)
    row = int(np.flatnonzero(cache.record_ids == small.record_ids[3])[0])
    np.testing.assert_array_equal(small.data[3], cache.data[row])
    labels, _ = small.labels("all")
    np.testing.assert_array_equal(labels[3], cache.labels("all")[0][row])
    other_seed = evaluate.training_subset(cache, [1, 2, 3, 4, 5, 6, 7, 8], "frac0.1", 1, demo_store)
    assert set(other_seed.record_ids) != set(small.record_ids)


def test_fold_subsets_take_the_first_training_folds(demo_store):
    cache = SignalCache(demo_store, folds=[1, 2, 3, 4, 5, 6, 7, 8])
    two = evaluate.training_subset(cache, [8, 7, 6, 5, 4, 3, 2, 1], "folds2", 0, demo_store)
    folds = cache.root["meta/fold"][:][two.index]
    assert set(folds.tolist()) == {1, 2}
    assert len(two) == int(np.isin(cache.root["meta/fold"][:], [1, 2]).sum())
    with pytest.raises(ValueError, match="unknown training subset"):
        evaluate.training_subset(cache, [1, 2], "half", 0, demo_store)


def test_label_conventions_select_records_and_classes(demo_store):
    """training_positives keeps every record and scores the classes with training positives; ptbxl_benchmark drops
    the records with an empty label set from every split and scores the classes present in any split."""
    splits = {"train": [9], "val": [10], "test": [1, 2, 3, 4, 5, 6, 7, 8]}
    caches = {name: SignalCache(demo_store, folds=folds) for name, folds in splits.items()}
    labels = {name: cache.labels("form")[0] for name, cache in caches.items()}
    assert all((~y.any(axis=1)).any() for y in labels.values())          # every split has empty 'form' rows

    same, trained, classes = evaluate.select_labels(caches, "form", "training_positives")
    assert {name: len(c) for name, c in same.items()} == {name: len(c) for name, c in caches.items()}
    np.testing.assert_array_equal(trained, labels["train"].any(axis=0))
    assert 0 < trained.sum() < len(classes)                              # fold 9 lacks some 'form' classes

    kept, present, _ = evaluate.select_labels(caches, "form", "ptbxl_benchmark")
    np.testing.assert_array_equal(present, np.logical_or.reduce([y.any(axis=0) for y in labels.values()]))
    assert present.sum() > trained.sum()
    for name, cache in kept.items():
        assert len(cache) == int(labels[name].any(axis=1).sum())
        assert cache.labels("form")[0].any(axis=1).all()
        assert set(cache.record_ids) <= set(caches[name].record_ids)
    # 'all' has no empty rows in PTB-XL: the benchmark convention keeps the caches as they are
    kept_all, _, _ = evaluate.select_labels(caches, "all", "ptbxl_benchmark")
    assert all(kept_all[name] is caches[name] for name in caches)
    with pytest.raises(ValueError, match="label_convention"):
        evaluate.select_labels(caches, "form", "benchmark")


def test_protocol_overrides_apply_to_their_method_only():
    ev = {"finetune": {"epochs": 10, "lr": 1e-3, "weight_decay": 0.0,
                       "overrides": {"cpc": {"head_first_epochs": 2, "lr_decay": 0.5}}}}
    assert evaluate.protocol_settings(ev, "finetune", "cpc") == {
        "epochs": 10, "lr": 1e-3, "weight_decay": 0.0, "head_first_epochs": 2, "lr_decay": 0.5}
    assert evaluate.protocol_settings(ev, "finetune", "simclr") == {"epochs": 10, "lr": 1e-3, "weight_decay": 0.0}


@pytest.mark.parametrize("name", ["xresnet1d50", "cpc"])
def test_discriminative_learning_rates_cover_every_parameter_once(name):
    encoder = build_encoder(name, **({"hidden": 16} if name == "cpc" else {}))
    head = nn.Linear(encoder.out_dim, 3)
    groups = param_groups(encoder, head, lr=1.0, lr_decay=0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(encoder.parameters())) + len(list(head.parameters()))
    n = len(encoder.layer_groups())
    assert [g["lr"] for g in groups] == [1.0] + [0.5 ** k for k in range(1, n + 1)]
    # the group nearest to the input has the smallest rate
    first = {id(p) for p in encoder.layer_groups()[0].parameters()}
    assert {id(p) for p in groups[-1]["params"]} == first
    assert len(param_groups(encoder, head, lr=1.0, lr_decay=1.0)) == 2


@pytest.fixture(scope="module")
def task(demo_store) -> Task:
    caches = {name: SignalCache(demo_store, folds=folds) for name, folds in
              {"train": [1, 2, 3, 4, 5, 6], "val": [9], "test": [10]}.items()}
    labels = {name: cache.labels("superdiagnostic")[0] for name, cache in caches.items()}
    classes = caches["train"].labels("superdiagnostic")[1]
    return Task(**{name: Split(caches[name], labels[name]) for name in caches}, classes=classes, window=250,
                stride=125, aggregate="mean", batch_size=32)


def test_head_first_epochs_leave_the_encoder_and_its_statistics_untouched(task):
    torch.manual_seed(0)
    encoder = build_encoder("xresnet1d50")
    before = copy.deepcopy(encoder.state_dict())
    cfg = {"epochs": 1, "lr": 1e-3, "weight_decay": 1e-4, "head_first_epochs": 1}
    result = finetune(encoder, task, cfg, torch.device("cpu"), seed=0, crop=250)
    assert result["history"][0]["phase"] == "head only"
    for key, value in before.items():
        assert torch.equal(value, encoder.state_dict()[key]), key
    cfg["epochs"] = 2
    result = finetune(encoder, task, cfg, torch.device("cpu"), seed=0, crop=250)
    assert [h["phase"] for h in result["history"]] == ["head only", "all weights"]
    assert any(not torch.equal(v, encoder.state_dict()[k]) for k, v in before.items() if k.endswith("weight"))


def test_noisy_copy_adds_the_level_noise_in_millivolts(demo_store):
    cache = SignalCache(demo_store, folds=[10])
    std = np.asarray(cache.attrs["norm"]["std"], np.float32)
    one = noisy_copy(cache, {"baseline_shift": {"amplitude": 0.3}}, 1, seed=0)
    three = noisy_copy(cache, {"baseline_shift": {"amplitude": 0.3}}, 3, seed=0)
    added1 = (one.data - cache.data) * std[None, :, None]       # back in mV
    added3 = (three.data - cache.data) * std[None, :, None]
    np.testing.assert_allclose(added3, 3 * added1, atol=1e-4)
    assert 0.25 < np.abs(added1).max() <= 0.3 + 1e-4
    np.testing.assert_array_equal(noisy_copy(cache, NOISE, 2, seed=0).data, noisy_copy(cache, NOISE, 2, seed=0).data)
    assert not np.array_equal(noisy_copy(cache, NOISE, 2, seed=0).data, noisy_copy(cache, NOISE, 2, seed=1).data)
    steps = np.arange(cache.data.shape[2])[None, :]
    padding = steps >= cache.lengths[:, None]
    assert np.all(one.data.transpose(1, 0, 2)[:, padding] == 0)
    assert cache.data is not one.data and np.shares_memory(cache.lengths, one.lengths)


def test_robustness_curve_starts_clean_and_degrades_with_the_noise(task):
    def predict(split: Split) -> np.ndarray:
        # an oracle that reads the labels from the signal energy of the clean records
        clean = task.test.labels
        drift = np.abs(split.cache.data - task.test.cache.data).mean(axis=(1, 2))[:, None]
        return clean + drift * np.random.default_rng(0).normal(size=clean.shape) * 50

    curve = robustness_curve(predict, task.test, task.classes, NOISE, levels=3, seed=0)
    assert [c["level"] for c in curve] == [0, 1, 2, 3]
    assert curve[0]["macro_auc"] == pytest.approx(1.0)
    assert curve[3]["macro_auc"] < curve[1]["macro_auc"] < 1.0


@pytest.mark.slow
def test_evaluation_writes_intervals_robustness_and_predictions(tmp_path, demo_store):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["evaluate"]["linear"]["epochs"] = 2
    config["evaluate"]["bootstrap"]["n"] = 50
    config["evaluate"]["robustness"]["levels"] = 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    config = load_config(path)
    out = tmp_path / "eval" / "random" / "linear" / "all.json"  # the folder does not exist yet (as under DVC)
    view = stage_view(config, "evaluate", protocol="linear", subset="all")
    summary = evaluate.run(view, "random", "linear", demo_store, out, random_encoder="xresnet1d50")
    stored = json.loads(out.read_text())
    assert stored["test_macro_auc"] == summary["test_macro_auc"]
    assert stored["subset"] == {"name": "all", "kind": "all", "value": None,
                                "n_train_records": stored["n_records"]["train"]}
    assert stored["test_ci"]["low"] <= stored["test_macro_auc"] <= stored["test_ci"]["high"]
    assert [r["level"] for r in stored["robustness"]] == [0, 1, 2]
    assert stored["robustness"][0]["macro_auc"] == pytest.approx(stored["test_macro_auc"])
    saved = np.load(out.with_suffix(".npz"))
    assert saved["bootstrap_ids"].shape == (50, stored["n_records"]["test"])
    again = macro_auc_ci(saved["y_true"], saved["y_score"], saved["bootstrap_ids"], level=0.95)
    assert again == stored["test_ci"]
    assert list(saved["classes"]) == stored["classes"]
    assert stored["label_convention"] == "training_positives"

    fraction = tmp_path / "frac.json"
    view = stage_view(config, "evaluate", protocol="linear", subset="frac0.25")
    assert "robustness" not in view["evaluate"]
    summary = evaluate.run(view, "random", "linear", demo_store, fraction, subset="frac0.25",
                           random_encoder="xresnet1d50")
    assert summary["subset"]["kind"] == "fraction" and summary["subset"]["value"] == 0.25
    assert summary["subset"]["n_train_records"] == round(0.25 * stored["n_records"]["train"])
    assert summary["classes"] == stored["classes"] and summary["robustness"] == []
    with pytest.raises(ValueError, match="exactly one"):
        evaluate.run(view, "random", "linear", demo_store, fraction)
