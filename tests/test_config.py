"""Configuration validation: wrong keys and values fail with a message that names them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from physiossl.cli import main
from physiossl.config import ConfigError, load_config, stage_view, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml"))
def test_shipped_configs_are_valid(name):
    assert load_config(REPO / "config" / name)["name"]


def test_unknown_key_is_named(config):
    config["pretrain"]["trainer"]["max_epoch"] = 5
    with pytest.raises(ConfigError, match=r"pretrain\.trainer.*'max_epoch' was unexpected"):
        validate_config(config)


def test_wrong_value_is_named(config):
    config["evaluate"]["aggregate"] = "median"
    with pytest.raises(ConfigError, match=r"config key 'evaluate\.aggregate'.*median"):
        validate_config(config)


def test_unknown_method_and_dataset_are_named(config):
    bad = copy.deepcopy(config)
    bad["experiment"]["methods"] = ["simclr", "byol"]
    with pytest.raises(ConfigError, match="method 'byol' has no entry"):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["pretrain"]["dataset"] = "nonexistent"
    with pytest.raises(ConfigError, match="unknown dataset or pool 'nonexistent'"):
        validate_config(bad)


def test_pretraining_on_held_out_folds_is_refused(config):
    config["pretrain"]["folds"] = list(range(1, 11))
    with pytest.raises(ConfigError, match=r"pretrain\.folds.*\[9, 10\].*leak"):
        validate_config(config)


def test_stage_view_holds_only_the_declared_keys(config):
    view = stage_view(validate_config(config), "evaluate", protocol="linear", subset="frac0.1")
    assert set(view["evaluate"]) == {"dataset", "label_set", "train_folds", "val_fold", "test_fold", "window_s",
                                     "stride_s", "aggregate", "batch_size", "bootstrap", "linear"}
    assert "methods" not in view["pretrain"] and "finetune" not in view["evaluate"]
    # the noisy test copies are evaluated for the models trained on all training records only
    assert "robustness" in stage_view(config, "evaluate", protocol="linear", subset="all")["evaluate"]
    view = stage_view(config, "pretrain", method="simclr")
    assert set(view["pretrain"]["methods"]) == {"simclr"} and "linear" not in view["evaluate"]


def test_method_settings_are_checked_by_the_method(config):
    config["pretrain"]["methods"]["simclr"]["temprature"] = 0.1
    config["pretrain"]["methods"]["simclr"]["augment"].append({"gaussian_nosie": {}})
    config["pretrain"]["methods"]["byol"] = {"lr": 1e-3}
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "pretrain.methods.simclr" in message and "temprature" in message
    assert "gaussian_nosie" in message
    assert "pretrain.methods.byol" in message and "weight_decay" in message


def test_baselines_overrides_and_sweeps_are_checked(config):
    config["experiment"]["methods"] = ["simclr", "random", "random_xresnet1d101", "random_resnet"]
    config["evaluate"]["finetune"]["overrides"] = {"cpc": {"head_first_epochs": 2}}
    config["experiment"]["label_efficiency"] = {"protocols": ["linear"], "folds": [8]}
    config["evaluate"]["robustness"]["noise"]["timeout"] = {}
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "baseline 'random_resnet' names unknown encoder 'resnet'" in message
    assert "random_xresnet1d101" not in message
    assert "evaluate.finetune.overrides.cpc" in message
    assert "experiment.label_efficiency.folds" in message
    assert "evaluate.robustness.noise" in message and "timeout" in message


def test_protocol_overrides_take_only_protocol_settings(config):
    config["evaluate"]["finetune"]["overrides"] = {"simclr": {"head_first_epoch": 2}}
    with pytest.raises(ConfigError, match=r"evaluate\.finetune.*head_first_epoch"):
        validate_config(config)


def test_cli_reports_config_errors_with_the_file(tmp_path, config, capsys):
    config["evaluate"]["linear"]["epochs"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "evaluate.linear.epochs" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_unknown_source_is_named(config):
    config["datasets"]["ptbxl"]["source"] = "ptb_xl"
    with pytest.raises(ConfigError, match=r"datasets\.ptbxl\.source.*unknown source 'ptb_xl'.*ptbxl"):
        validate_config(config)
