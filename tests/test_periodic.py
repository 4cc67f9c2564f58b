"""Periodic-target evaluation: FFT frequency readout, regression objective and metrics, zero-shot regions, the
periodic stage end to end on the demo store, and the `periodic` config section."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from physiossl.config import ConfigError, eval_subsets, load_config, pretrained_methods, stage_view, validate_config
from physiossl.eval.bootstrap import bootstrap_ids, mae_ci
from physiossl.eval.frequency import dominant_frequency, head_projection, principal_projection, read_frequencies
from physiossl.eval.metrics import regression_metrics
from physiossl.eval.protocols import CLASSIFICATION, regression
from physiossl.models import build_encoder
from physiossl.stages import periodic

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- frequency readout

@pytest.mark.parametrize("freq", [0.7, 1.3, 2.45, 4.9])
def test_dominant_frequency_of_sinusoids(freq):
    fs, n = 12.5, 125
    t = np.arange(n) / fs
    series = [np.sin(2 * np.pi * freq * t + 0.3) + 0.05 * np.random.default_rng(0).normal(size=n)]
    found = dominant_frequency(series, fs, band=(0.5, 6.0), pad=8)
    assert abs(found[0] - freq) < 0.02


def test_dominant_frequency_band_is_searched_and_clipped_to_nyquist():
    fs, n = 10.0, 200
    t = np.arange(n) / fs
    two_tones = np.sin(2 * np.pi * 1.0 * t) + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    assert dominant_frequency([two_tones], fs, (0.5, 4.5))[0] == pytest.approx(1.0, abs=0.01)
    assert dominant_frequency([two_tones], fs, (2.0, 4.5))[0] == pytest.approx(3.0, abs=0.01)
    # a band above the Nyquist frequency is clipped to it: a 4.5 Hz search never reports more than 5 Hz
    assert dominant_frequency([two_tones], fs, (0.5, 40.0))[0] <= fs / 2
    with pytest.raises(ValueError, match="Nyquist"):
        dominant_frequency([two_tones], fs, (6.0, 9.0))
    constant, short = np.ones(100), np.array([1.0, 2.0, 1.0])
    assert np.isnan(dominant_frequency([constant, short], fs, (0.5, 4.5))).all()


class _Identity(nn.Module):
    """A stand-in encoder whose feature map is its input (stride 1)."""
    stride = 1

    def features(self, x):
        return x


class _Cache:
    def __init__(self, data, fs):
        self.data, self.fs = data.astype(np.float32), fs
        self.lengths = np.full(len(data), data.shape[2])

    def __len__(self):
        return len(self.data)


def test_principal_projection_reads_the_planted_frequency_without_labels():
    rng = np.random.default_rng(0)
    fs, n = 25.0, 250
    direction = rng.normal(size=6)
    direction /= np.linalg.norm(direction)
    freqs = rng.uniform(0.8, 3.0, size=12)
    t = np.arange(n) / fs
    data = (direction[None, :, None] * 2.0 * np.sin(2 * np.pi * freqs[:, None, None] * t[None, None, :])
            + 0.1 * rng.normal(size=(12, 6, n)))
    cache = _Cache(data, fs)
    project = principal_projection(_Identity(), cache, torch.device("cpu"), batch_size=5)
    found, fs_series = read_frequencies(_Identity(), project, cache, (0.5, 5.0), torch.device("cpu"), batch_size=5)
    assert fs_series == fs
    assert np.abs(found - freqs).max() < 0.05


def test_head_projection_applies_the_saved_series_head():
    conv = nn.Conv1d(4, 1, 1)
    project = head_projection(conv.state_dict())
    maps = torch.randn(2, 4, 30)
    assert torch.allclose(project(maps), conv(maps)[:, 0].detach())


# ---------------------------------------------------------------- metrics and objective

def test_regression_metrics_by_hand():
    y, p = np.array([60.0, 80.0, 100.0, np.nan]), np.array([62.0, 76.0, 100.0, 70.0])
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(2.0) and m["rmse"] == pytest.approx(np.sqrt(20 / 3))
    assert m["n"] == 3 and m["n_missing"] == 1
    assert m["pearson_r"] == pytest.approx(np.corrcoef(y[:3], p[:3])[0, 1])
    assert np.isnan(regression_metrics(y[:3], np.full(3, 70.0))["pearson_r"])
    with pytest.raises(ValueError, match="differ in length"):
        regression_metrics(y, p[:2])


def test_mae_interval_is_the_percentile_of_the_resampled_maes():
    rng = np.random.default_rng(1)
    y, p = rng.uniform(40, 150, 80), rng.uniform(40, 150, 80)
    ids = bootstrap_ids(80, 300, seed=2)
    ci = mae_ci(y, p, ids, level=0.9)
    manual = np.abs(p - y)[ids].mean(1)
    assert ci["low"] == pytest.approx(np.percentile(manual, 5))
    assert ci["high"] == pytest.approx(np.percentile(manual, 95))
    assert ci["n_valid"] == 300


def test_regression_objective_standardises_and_selects_the_lowest_mae():
    targets = np.array([[50.0], [70.0], [90.0]], np.float32)
    objective = regression(targets)
    y = torch.tensor(targets)
    assert objective.loss((y - 70.0) / float(np.std(targets)), y).item() == pytest.approx(0.0, abs=1e-10)
    assert torch.allclose(objective.activate(torch.zeros(1, 1)), torch.tensor([[70.0]]))
    assert objective.better({"mae": 3.0}, {"mae": 4.0}) and not objective.better({"mae": 5.0}, {"mae": 4.0})
    assert CLASSIFICATION.better({"macro_auc": 0.9}, {"macro_auc": 0.8}) and objective.better({"mae": 1.0}, None)


def test_zero_shot_regions():
    values = np.array([50.0, 79.0, 80.0, 90.0, 95.0, 120.0, 121.0])
    region = periodic.zero_shot_region(values, [80, 90], 120)
    assert region.tolist() == ["seen", "seen", "interpolation", "interpolation", "seen", "seen", "extrapolation"]


# ---------------------------------------------------------------- config

def _periodic_config(**changes) -> dict:
    config = load_config(REPO / "config" / "config.yaml")
    config["periodic"] = {
        "target": "heart_rate", "units": "bpm", "units_per_hz": 60, "band": [30, 210], "methods": ["simclr", "random"],
        "protocols": ["linear", "fft", "zero_shot", "finetune"],
        "label_efficiency": {"protocols": ["linear"], "fractions": [0.5]},
        "zero_shot": {"hold_out": [75, 90], "train_max": 110},
        "linear": {"epochs": 2, "lr": 1e-2, "weight_decay": 1e-4},
        "finetune": {"epochs": 1, "lr": 1e-3, "weight_decay": 1e-4},
    }
    config["periodic"].update(changes)
    return config


def test_periodic_section_is_validated_and_planned():
    config = validate_config(_periodic_config())
    assert eval_subsets(config, "linear", "periodic") == ["all", "frac0.5"]
    assert eval_subsets(config, "fft", "periodic") == ["all"]
    view = stage_view(config, "evaluate_periodic", protocol="zero_shot", subset="all")
    assert set(view["periodic"]) == {"target", "units", "units_per_hz", "band", "linear", "zero_shot"}
    assert "label_set" not in view["evaluate"] and "robustness" not in view["evaluate"]
    assert set(stage_view(config, "evaluate_periodic", protocol="fft", subset="all")["periodic"]) == {
        "target", "units", "units_per_hz", "band"}
    assert "periodic" in stage_view(config, "report")


@pytest.mark.parametrize("changes, message", [
    ({"methods": ["byol"]}, "periodic.methods': method 'byol' has no entry"),
    ({"zero_shot": {"hold_out": [90, 80], "train_max": 110}}, "periodic.zero_shot"),
    ({"band": [200, 30]}, "periodic.band"),
    ({"label_efficiency": {"protocols": ["finetune"], "fractions": [0.5]}, "protocols": ["linear"]},
     "'finetune' is not in periodic.protocols"),
    ({"protocols": ["fft"], "target": 3}, "periodic.target"),
])
def test_periodic_config_errors_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_periodic_config(**changes))


def test_missing_protocol_settings_and_encoder_args_are_reported():
    config = _periodic_config()
    del config["periodic"]["zero_shot"], config["periodic"]["linear"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "periodic.linear': required by protocol 'linear'" in str(err.value)
    assert "periodic.zero_shot': required by protocol 'zero_shot'" in str(err.value)
    config = _periodic_config()
    config["pretrain"]["encoder_args"] = {"stage_stride": [1, 2, 1, 1]}
    with pytest.raises(ConfigError, match="pretrain.encoder_args.stage_stride"):
        validate_config(config)


def test_periodic_methods_are_pretrained():
    config = _periodic_config()
    config["pretrain"]["methods"]["byol"] = {"lr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0, "augment": []}
    config["periodic"]["methods"] = ["byol", "random"]
    assert pretrained_methods(validate_config(config)) == ["simclr", "byol"]


# ---------------------------------------------------------------- the stage on the demo store

def _view(protocol: str, subset: str = "all") -> dict:
    view = stage_view(validate_config(_periodic_config()), "evaluate_periodic", protocol=protocol, subset=subset)
    view["evaluate"]["bootstrap"]["n"] = 50
    return view


def test_linear_protocol_end_to_end(demo_store, tmp_path):
    out = tmp_path / "linear.json"
    summary = periodic.run(_view("linear"), "random", "linear", demo_store, out, random_encoder="xresnet1d50")
    saved = json.loads(out.read_text())
    assert saved["target"] == "heart_rate" and saved["units"] == "bpm" and saved["protocol"] == "linear"
    assert saved["n_records"]["test"] + saved["n_without_target"]["test"] > 0
    npz = np.load(out.with_suffix(".npz"))
    assert np.isfinite(npz["y_true"]).all() and len(npz["y_true"]) == saved["n_records"]["test"]
    assert np.abs(npz["y_pred"] - npz["y_true"]).mean() == pytest.approx(summary["test_mae"])
    assert saved["test_ci"]["n_bootstrap"] == 50 and saved["test_ci"]["low"] <= saved["test_ci"]["high"]
    assert len(saved["history"]) == 2 and "val_mae" in saved["history"][0]
    # the predictions are in beats per minute, not standardised units
    assert 30 < np.median(npz["y_pred"]) < 200


def test_fraction_subset_trains_on_fewer_records(demo_store, tmp_path):
    full = periodic.run(_view("linear"), "random", "linear", demo_store, tmp_path / "a.json",
                        random_encoder="xresnet1d50")
    half = periodic.run(_view("linear", "frac0.5"), "random", "linear", demo_store, tmp_path / "b.json",
                        subset="frac0.5", random_encoder="xresnet1d50")
    assert half["subset"]["kind"] == "fraction"
    assert half["n_records"]["train"] < full["n_records"]["train"]
    assert half["n_records"]["test"] == full["n_records"]["test"]


def test_zero_shot_trains_outside_the_band_and_reports_regions(demo_store, tmp_path):
    out = tmp_path / "zs.json"
    summary = periodic.run(_view("zero_shot"), "random", "zero_shot", demo_store, out, random_encoder="xresnet1d50")
    regions = summary["zero_shot"]
    assert set(regions) == {"seen", "interpolation", "extrapolation"}
    assert sum(r["n"] for r in regions.values()) == summary["n_records"]["test"]
    npz = np.load(out.with_suffix(".npz"))
    interp = npz["region"] == "interpolation"
    assert ((npz["y_true"][interp] >= 75) & (npz["y_true"][interp] <= 90)).all()
    assert (npz["y_true"][npz["region"] == "extrapolation"] > 110).all()
    for name, stats in regions.items():
        if stats["n"]:
            rows = npz["region"] == name
            assert stats["mae"] == pytest.approx(np.abs(npz["y_pred"][rows] - npz["y_true"][rows]).mean())
    assert summary["zero_shot_split"] == {"hold_out": [75, 90], "train_max": 110}


def test_fft_protocol_reads_the_series_head_or_the_principal_component(demo_store, tmp_path):
    summary = periodic.run(_view("fft"), "random", "fft", demo_store, tmp_path / "pc.json",
                           random_encoder="xresnet1d50")
    assert summary["series"].startswith("first principal component") and summary["best_epoch"] is None
    # stride 32 at 100 Hz: the series runs at 3.125 Hz and the search stops at its Nyquist frequency
    assert summary["series_fs_hz"] == pytest.approx(3.125)
    assert summary["band_searched_hz"] == pytest.approx([0.5, 1.5625])
    encoder = build_encoder("cpc", hidden=8)
    payload = {"encoder": "cpc", "encoder_args": {"hidden": 8}, "state_dict": encoder.state_dict(), "in_channels": 12,
               "run_id": "x", "heads": {"series": nn.Conv1d(8, 1, 1).state_dict()}}
    torch.save(payload, tmp_path / "encoder.pt")
    out = tmp_path / "head.json"
    summary = periodic.run(_view("fft"), "cpc_ssl", "fft", demo_store, out, checkpoint=tmp_path / "encoder.pt")
    assert summary["series"] == "trained series head" and summary["series_fs_hz"] == 100.0
    pred = np.load(out.with_suffix(".npz"))["y_pred"]
    assert np.nanmin(pred) >= 30 - 1e-6 and np.nanmax(pred) <= 210 + 1e-6


def test_finetune_regressor_and_bad_arguments(demo_store, tmp_path):
    summary = periodic.run(_view("finetune"), "random", "finetune", demo_store, tmp_path / "ft.json",
                           random_encoder="xresnet1d50")
    assert np.isfinite(summary["test_mae"]) and summary["history"][0]["phase"] == "all weights"
    with pytest.raises(ValueError, match="unknown periodic protocol"):
        periodic.run(_view("linear"), "random", "ridge", demo_store, tmp_path / "x.json", random_encoder="xresnet1d50")
    view = copy.deepcopy(_view("linear"))
    view["periodic"]["target"] = "respiration_rate"
    with pytest.raises(ValueError, match="respiration_rate"):
        periodic.run(view, "random", "linear", demo_store, tmp_path / "y.json", random_encoder="xresnet1d50")
