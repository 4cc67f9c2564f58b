"""Pretraining pools and the leakage guard: the evaluation's validation and test records never reach
pretraining, whether they come from the evaluation dataset itself or from another dataset's copy of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from physiossl.config import ConfigError, load_config, stage_view, validate_config
from physiossl.data.ecg.loading import SignalCache
from physiossl.data.ecg.store import EcgStoreWriter, open_store
from physiossl.stages import evaluate, pretrain

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = [9, 10]


def held_out_ids(store: Path) -> set[str]:
    root = open_store(store)
    return set(root["meta/record_id"][:][np.isin(root["meta/fold"][:], HELD_OUT)].tolist())


@pytest.fixture(scope="module")
def mirror_store(demo_store, tmp_path_factory) -> Path:
    """A second dataset that contains copies of PTB-XL records (as CinC 2020 does), cross-referenced
    to their PTB-XL ids through ``xref/ptbxl``, with folds of its own."""
    src = open_store(demo_store)
    ids = src["meta/record_id"][:]
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(ids), size=80, replace=False))
    out = tmp_path_factory.mktemp("mirror") / "mirror_100hz.zarr"
    with EcgStoreWriter.open(out, capacity=len(rows) + 5, n_samples=1000, fs=100) as writer:
        for i, row in enumerate(rows):
            writer.append(src["signals"][row], meta={"record_id": f"HR{int(ids[row]):05d}", "fold": i % 10 + 1,
                                                      "source": "mirror"}, xref={"ptbxl": ids[row]})
        for j in range(5):  # records of its own, with no PTB-XL counterpart
            writer.append(src["signals"][j], meta={"record_id": f"OWN{j}", "fold": 1, "source": "mirror"})
        writer.finish(dataset="mirror", source_version="test", label_sets={}, provenance={},
                      norm_folds=range(1, 9))
    return out


def test_a_contaminated_pool_is_caught(demo_store, mirror_store):
    held = held_out_ids(demo_store)
    mirror = open_store(mirror_store)
    xref = mirror["xref/ptbxl"][:]
    folds = mirror["meta/fold"][:]
    contaminated = int((np.isin(xref, list(held)) & np.isin(folds, range(1, 9))).sum())
    assert contaminated > 0, "the fixture must contain held-out PTB-XL records"

    cache = SignalCache([demo_store, mirror_store], folds=range(1, 9), exclude={"ptbxl": held})
    assert cache.excluded == {str(demo_store): 0, str(mirror_store): contaminated}
    kept_mirror = cache.record_ids[cache.datasets == "mirror"]
    kept_xref = dict(zip(mirror["meta/record_id"][:], xref))
    assert not {kept_xref[r] for r in kept_mirror} & held
    assert not set(cache.record_ids[cache.datasets == "ptbxl"]) & held
    assert {f"OWN{j}" for j in range(5)} <= set(kept_mirror)

    unguarded = SignalCache([demo_store, mirror_store], folds=range(1, 9))
    assert len(unguarded) == len(cache) + contaminated


def test_held_out_records_of_the_evaluation_dataset_are_excluded_by_id(demo_store):
    held = held_out_ids(demo_store)
    cache = SignalCache(demo_store, folds=None, exclude={"ptbxl": held})
    assert cache.excluded[str(demo_store)] == len(held) > 0
    assert not set(cache.record_ids) & held


@pytest.mark.slow
def test_pretraining_records_the_exclusion_and_evaluation_reports_it(tmp_path, demo_store, mirror_store):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["pretrain"]["trainer"].update(max_epochs=1, batch_size=32)
    config["evaluate"]["linear"]["epochs"] = 1
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    config = load_config(path)
    out = tmp_path / "encoder.pt"
    summary = pretrain.run(stage_view(config, "pretrain", method="simclr"), "simclr", [demo_store, mirror_store],
                           demo_store, out)
    leakage = summary["leakage"]
    assert leakage["evaluation_dataset"] == "ptbxl" and leakage["held_out_folds"] == HELD_OUT
    assert leakage["held_out_records"] == len(held_out_ids(demo_store))
    assert leakage["excluded_per_store"][str(mirror_store)] > 0
    assert json.loads(out.with_suffix(".json").read_text())["leakage"] == leakage
    assert torch.load(out, weights_only=True)["leakage"] == leakage
    result = evaluate.run(stage_view(config, "evaluate", protocol="linear"), "simclr", "linear", demo_store,
                          tmp_path / "linear.json", out)
    assert result["pretrain_leakage"] == leakage


def test_pool_configuration_is_validated():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["pools"] = {"all": ["ptbxl", "chapman"]}
    config["pretrain"]["dataset"] = "all"
    with pytest.raises(ConfigError, match=r"pools\.all.*unknown dataset 'chapman'"):
        validate_config(config)
    config["pools"] = {"all": ["ptbxl"]}
    config["pretrain"]["folds"] = list(range(1, 10))
    with pytest.raises(ConfigError, match=r"pretrain\.folds.*\[9\].*leak"):
        validate_config(config)
    config["pretrain"]["folds"] = list(range(1, 9))
    view = stage_view(validate_config(config), "pretrain", method="simclr")
    assert view["pools"] == {"all": ["ptbxl"]} and view["evaluate"]["test_fold"] == 10
