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


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
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


@pytest.mark.parametrize("key,value,accepted", [
    ("url", "https://physionet.org/files/ptb-xl/1.0.3/ptb.zip?download=1&x=$(id)", True),   # quoted by commands
    ("url", "file:///srv/mirror/ptb-xl.zip", True),
    ("url", "https://physionet.org/files/ptb xl.zip", False),
    ("url", "physionet.org/files/ptb-xl.zip", False),
    ("url", 'https://physionet.org/"ptb-xl".zip', False),
    ("data", "/scratch/my data/physiossl", True),
    ("data", "data\nresults", False),
    ("data", "", False),
])
def test_urls_and_paths_are_constrained_and_the_message_says_how(config, key, value, accepted, fault):
    if key == "url":
        config["datasets"]["ptbxl"].update(mode="download", download={"url": value})
        name = "datasets.ptbxl.download.url"
    else:
        config["paths"]["data"] = value
        name = "paths.data"
    if accepted:
        validate_config(config)
        return
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert f"config key '{name}'" in message
    if value:   # a pattern failed: the message says what the value must be
        assert ("http(s) or file URL" if key == "url" else "file-system path") in message
    fault("config", f"{name} = {value!r}", f"refused: {message.splitlines()[-1].strip()}")


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


def test_a_logger_without_its_package_is_named(config, monkeypatch):
    import physiossl.config as cfg

    monkeypatch.setattr(cfg, "find_spec", lambda name: None)
    config["pretrain"]["trainer"]["logger"] = "tensorboard"
    with pytest.raises(ConfigError, match=r"config key 'pretrain\.trainer\.logger': logger 'tensorboard' needs the "
                                          r"Python package tensorboard or tensorboardX, which is not installed"):
        validate_config(config)
    config["pretrain"]["trainer"]["logger"] = "csv"
    assert validate_config(config)
    config["pretrain"]["trainer"]["logger"] = "wandb"
    with pytest.raises(ConfigError, match=r"pretrain\.trainer\.logger.*'wandb' is not one of"):
        validate_config(config)
    sleep = yaml.safe_load((REPO / "config" / "demo_sleep.yaml").read_text())
    sleep["sleep"]["train"]["logger"] = "dvclive"
    with pytest.raises(ConfigError, match=r"config key 'sleep\.train\.logger': logger 'dvclive' needs the Python "
                                          r"package dvclive"):
        validate_config(sleep)


def test_an_installed_logger_is_found_without_importing_it(config, monkeypatch):
    import sys

    import physiossl.config as cfg

    looked_up = []
    monkeypatch.setattr(cfg, "find_spec", lambda name: looked_up.append(name) or object())
    config["pretrain"]["trainer"]["logger"] = "mlflow"
    assert validate_config(config)
    assert looked_up == ["mlflow"] and "mlflow" not in sys.modules
    view = stage_view(config, "evaluate", protocol="linear", subset="all")
    assert view["pretrain"]["trainer"] == {"accelerator": "auto", "precision": "32-true", "logger": "mlflow"}


def _device_problem(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return str(info.value)


def test_requested_gpus_are_the_trainers_devices(config):
    trainer, resources = config["pretrain"]["trainer"], config["resources"]
    trainer.update(accelerator="gpu", devices=2)
    resources["pretrain"]["gpu"], resources["evaluate"]["gpu"] = 1, 1
    message = _device_problem(config)
    assert "config key 'resources.pretrain.gpu': requests 1 GPU(s) but 'pretrain.trainer.devices' is 2" in message
    assert "resources.evaluate" not in message
    resources["pretrain"]["gpu"] = 2
    assert validate_config(config)
    resources["evaluate"]["gpu"] = 0
    assert ("config key 'resources.evaluate.gpu': requests no GPU but 'pretrain.trainer.accelerator' is 'gpu'"
            in _device_problem(config))
    resources["evaluate"]["gpu"] = 2
    assert ("config key 'resources.evaluate.gpu': requests 2 GPU(s) but the stage trains on one device"
            in _device_problem(config))
    resources["evaluate"]["gpu"] = 1
    trainer["devices"] = "auto"                  # all the GPUs the job gets
    assert validate_config(config)
    trainer.update(accelerator="auto", devices=1)
    assert "config key 'resources.pretrain.gpu': requests 2 GPU(s) but 'pretrain.trainer.devices' is 1" in (
        _device_problem(config))
    resources["pretrain"]["gpu"], resources["evaluate"]["gpu"] = 0, 0   # auto on a CPU job
    assert validate_config(config)
    trainer["accelerator"] = "cpu"
    resources["evaluate"]["gpu"] = 1
    assert ("config key 'resources.evaluate.gpu': requests 1 GPU(s) but 'pretrain.trainer.accelerator' is 'cpu', "
            "which uses none" in _device_problem(config))


def test_sleep_training_requests_the_gpu_it_trains_on():
    config = yaml.safe_load((REPO / "config" / "demo_sleep.yaml").read_text())
    config["sleep"]["train"]["accelerator"] = "gpu"
    assert ("config key 'resources.sleep.gpu': requests no GPU but 'sleep.train.accelerator' is 'gpu'"
            in _device_problem(config))
    config["resources"]["sleep"]["gpu"] = 2
    assert "config key 'resources.sleep.gpu': requests 2 GPU(s) but the stage trains on one device" in (
        _device_problem(config))
    config["resources"]["sleep"]["gpu"] = 1
    assert validate_config(config)
