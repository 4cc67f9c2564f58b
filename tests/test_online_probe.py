"""The online linear probe of pretraining: the encoder trains exactly as without it, the probe learns and reports
its loss and macro AUC per epoch, and a pool without labels trains without a probe."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from physiossl.config import ConfigError, load_config, stage_view, validate_config
from physiossl.data.ecg.loading import SignalCache
from physiossl.data.ecg.store import EcgStoreWriter, open_store
from physiossl.methods import get_method
from physiossl.methods.base import ProbeAUROC
from physiossl.stages import pretrain

REPO = Path(__file__).resolve().parents[1]
SIMCLR = {"lr": 1.0e-3, "weight_decay": 1.0e-6, "warmup_epochs": 0, "proj_hidden": 32, "proj_dim": 8,
          "augment": [{"random_resized_crop": {"scale": [0.5, 1.0]}}]}


def base_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["pretrain"]["trainer"].update({"batch_size": 64, "max_epochs": 3})
    return config


def pretrain_run(tmp: Path, name: str, stores: list[Path], eval_store: Path, **trainer) -> dict:
    """A SimCLR pretraining of the base config with the ``trainer`` settings changed; its summary."""
    config = base_config()
    config["pretrain"]["trainer"].update(trainer)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    view = stage_view(load_config(path), "pretrain", method="simclr")
    return pretrain.run(view, "simclr", stores, eval_store, tmp / name / "encoder.pt")


def csv_rows(summary: dict) -> list[dict]:
    with open(summary["metrics_csv"], newline="") as fh:
        return list(csv.DictReader(fh))


def checkpoint(tmp: Path, name: str) -> dict:
    return torch.load(tmp / name / "lightning" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def unlabelled_store(demo_store, tmp_path_factory) -> Path:
    """Sixty demo records copied into a store of another dataset that has no label sets."""
    src = open_store(demo_store)
    out = tmp_path_factory.mktemp("unlabelled") / "unlabelled_100hz.zarr"
    with EcgStoreWriter.open(out, capacity=60, n_samples=src["signals"].shape[2], fs=100) as writer:
        for i in range(60):
            writer.append(src["signals"][i], meta={"record_id": f"U{i}", "fold": i % 8 + 1, "source": "unlabelled"})
        writer.finish(dataset="unlabelled", source_version="test", label_sets={}, provenance={},
                      norm_folds=range(1, 9))
    return out


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory, demo_store) -> tuple[Path, dict, dict]:
    """The same 3-epoch SimCLR run on the demo store with the probe (the default) and without it."""
    tmp = tmp_path_factory.mktemp("probe")
    with_probe = pretrain_run(tmp, "with", [demo_store], demo_store)
    without = pretrain_run(tmp, "without", [demo_store], demo_store, online_probe=False)
    return tmp, with_probe, without


def test_the_probe_is_a_label_set_or_false_in_the_config():
    config = base_config()
    for value in (False, "all", "superdiagnostic"):
        config["pretrain"]["trainer"]["online_probe"] = value
        validate_config(copy.deepcopy(config))
    for value in (True, "no_such_set"):
        config["pretrain"]["trainer"]["online_probe"] = value
        with pytest.raises(ConfigError, match=r"pretrain\.trainer\.online_probe"):
            validate_config(copy.deepcopy(config))


def test_the_probe_draws_nothing_from_the_global_generator():
    """A method built with a probe has the other weights of one built without it, and leaves torch's global
    generator where that one leaves it; the probe's own weights follow its seed."""
    def build(**probe):
        torch.manual_seed(0)
        model = get_method("simclr")(cfg=SIMCLR, encoder="xresnet1d50", **probe)
        return model, torch.get_rng_state()

    plain, state = build()
    probed, probed_state = build(probe_classes=5, probe_seed=7)
    assert torch.equal(state, probed_state)
    weights = probed.state_dict()
    assert sorted(set(weights) - set(plain.state_dict())) == ["probe.head.bias", "probe.head.weight"]
    assert all(torch.equal(value, weights[key]) for key, value in plain.state_dict().items())
    again, other = build(probe_classes=5, probe_seed=7)[0], build(probe_classes=5, probe_seed=8)[0]
    assert torch.equal(again.probe.head.weight, probed.probe.head.weight)
    assert not torch.equal(other.probe.head.weight, probed.probe.head.weight)
    bound = 1 / math.sqrt(probed.encoder.out_dim)
    assert probed.probe.head.weight.abs().max() <= bound and probed.probe.head.bias.abs().max() <= bound


def test_the_probe_auroc_leaves_out_classes_without_positives_or_negatives():
    metric = ProbeAUROC()
    labels = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 1, 1], [0, 0, 1]])
    metric.update(torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.2]]), labels[:2])
    metric.update(torch.tensor([[0.5, 0.7, 0.3], [0.2, 0.3, 0.4]]), labels[2:])
    # class 1 is ranked perfectly; classes 0 (no positives) and 2 (no negatives) have no AUC, so they do not count
    assert float(metric.compute()) == pytest.approx(1.0)
    metric.reset()
    metric.update(torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.long))
    assert math.isnan(float(metric.compute()))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_the_probe_leaves_the_encoder_alone_and_skips_samples_without_labels():
    """The probe's loss reaches its head only, leaves the encoder's BatchNorm statistics and training mode as they
    were, and counts only the labelled samples; with none it is 0, with zero gradients for the head."""
    model = get_method("simclr")(cfg=SIMCLR, encoder="xresnet1d50", probe_classes=3)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    x = torch.randn(4, 12, 250, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([[1.0, 0.0, 1.0], [float("nan")] * 3, [0.0, 1.0, 0.0], [float("nan")] * 3])
    loss = model.probe_loss(x, y)
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.encoder.state_dict().items())
    assert model.encoder.training and all(m.training for m in model.encoder.modules())
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(model.probe(model.encoder.eval()(x[[0, 2]])),
                                                                        y[[0, 2]])
    assert loss.item() == pytest.approx(expected.item())
    model.encoder.train()
    model.probe.zero_grad()
    empty = model.probe_loss(x, torch.full((4, 3), float("nan")))
    empty.backward()
    assert empty.item() == 0.0 and all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.probe.parameters())


def test_probe_labels_come_from_the_stores_that_have_the_classes(demo_store, unlabelled_store):
    cache = SignalCache([demo_store, unlabelled_store], folds=range(1, 9))
    labels = pretrain.probe_labels(cache, demo_store, "all")
    n_demo = len(cache.parts[0].index)
    expected, classes = SignalCache(demo_store, folds=range(1, 9)).labels("all")
    assert labels.shape == (len(cache), len(classes))
    np.testing.assert_array_equal(labels[:n_demo], expected)
    assert np.isnan(labels[n_demo:]).all() and n_demo < len(cache)
    assert pretrain.probe_labels(cache, unlabelled_store, "all") is None
    assert pretrain.probe_labels(SignalCache(unlabelled_store, folds=range(1, 9)), demo_store, "all") is None


@pytest.mark.slow
def test_the_encoder_trains_bit_for_bit_as_without_the_probe(probe_runs):
    tmp, with_probe, without = probe_runs
    assert with_probe["online_probe"] is not None and without["online_probe"] is None
    assert (with_probe["steps"], with_probe["final_train_loss"]) == (without["steps"], without["final_train_loss"])
    a = torch.load(tmp / "with" / "encoder.pt", weights_only=True)
    b = torch.load(tmp / "without" / "encoder.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    # the projector and every BatchNorm statistic too: the probe's head is the only difference
    ca, cb = checkpoint(tmp, "with"), checkpoint(tmp, "without")
    assert sorted(set(ca["state_dict"]) - set(cb["state_dict"])) == ["probe.head.bias", "probe.head.weight"]
    for key, value in cb["state_dict"].items():
        assert torch.equal(ca["state_dict"][key], value), key
    groups = ca["optimizer_states"][0]["param_groups"]
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
    assert "probe" not in a and "heads" not in a


@pytest.mark.slow
def test_the_probe_learns_and_reports_each_epoch(probe_runs, demo_store):
    tmp, summary, without = probe_runs
    probe = summary["online_probe"]
    classes = list(open_store(demo_store)["labels/all"].attrs["classes"])
    assert probe["label_set"] == "all" and probe["n_classes"] == len(classes)
    assert probe["labelled_records"] == summary["n_records"]
    epochs = [row for row in csv_rows(summary) if row["probe_loss"]]
    assert [int(row["epoch"]) for row in epochs] == [0, 1, 2]
    losses = [float(row["probe_loss"]) for row in epochs]
    assert losses[-1] < losses[0], losses
    aurocs = [float(row["probe_auroc"]) for row in epochs]
    assert all(0.0 <= a <= 1.0 for a in aurocs)
    assert probe["final_probe_loss"] == pytest.approx(losses[-1])
    assert probe["final_probe_auroc"] == pytest.approx(aurocs[-1])
    assert json.loads((tmp / "with" / "encoder.json").read_text())["online_probe"] == probe
    assert "probe_loss" not in csv_rows(without)[0]


@pytest.mark.slow
def test_a_pool_without_labels_trains_without_a_probe(tmp_path, demo_store, unlabelled_store):
    summary = pretrain_run(tmp_path, "unlabelled", [unlabelled_store], demo_store, max_epochs=1, batch_size=16)
    assert summary["steps"] > 0 and summary["online_probe"] is None
    rows = csv_rows(summary)
    assert rows and not any(key.startswith("probe") for key in rows[0])
    assert not any(key.startswith("probe") for key in checkpoint(tmp_path, "unlabelled")["state_dict"])
