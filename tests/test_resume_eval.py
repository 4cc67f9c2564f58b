"""Evaluation and sleep training resume like pretraining: a run killed during an epoch and rerun continues from the
last epoch's checkpoint and writes exactly the result files of an uninterrupted run; a changed configuration starts
afresh. The kill is an exception raised by a callback during a later epoch (nothing of that epoch is saved)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from physiossl.config import stage_view, validate_config
from physiossl.models import build_encoder
from physiossl.stages import common, evaluate, periodic, sleep
from test_pretrain import REPO
from test_sleep_pipeline import tiny_sleep_config, tiny_stores  # noqa: F401  (tiny_stores is a fixture)

#: fields of a result file that describe the run rather than its numbers
RUN_FIELDS = ("seconds", "resumed", "resumed_after_epochs", "metrics_csv")


class Killed(Exception):
    pass


class KillDuring(Callback):
    """Raises after the first training batch of epoch ``epoch`` (0-based): the epochs before it are checkpointed."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch:
            raise Killed(f"killed during epoch {self.epoch}")


def kill_during(monkeypatch, stage, epoch: int) -> None:
    """The stage's next training run gets killed during ``epoch``."""
    make = common.resumable_training

    def killed(*args, **kwargs):
        options, resume = make(*args, **kwargs)
        return {**options, "callbacks": [*options["callbacks"], KillDuring(epoch)]}, resume

    monkeypatch.setattr(stage, "resumable_training", killed)


def assert_same_results(out: Path, reference: Path) -> None:
    """Result JSON (but the run fields), every array of the ``.npz`` predictions and the weights of the last epoch
    (the selected epoch may come before the kill) are equal."""
    ran, ref = (json.loads(p.read_text()) for p in (out, reference))
    assert ({k: v for k, v in ran.items() if k not in RUN_FIELDS}
            == {k: v for k, v in ref.items() if k not in RUN_FIELDS})
    with np.load(out.with_suffix(".npz")) as a, np.load(reference.with_suffix(".npz")) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    last = [torch.load(p.with_suffix(".lightning") / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True) for p in (out, reference)]
    assert last[0]["epoch"] == last[1]["epoch"]
    assert last[0]["state_dict"].keys() == last[1]["state_dict"].keys()
    for key, value in last[1]["state_dict"].items():
        assert torch.equal(last[0]["state_dict"][key], value), key


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    """A small pretrained-encoder file (CPC, 16 units), as pretraining writes it."""
    torch.manual_seed(0)
    encoder = build_encoder("cpc", hidden=16)
    path = tmp_path_factory.mktemp("encoder") / "encoder.pt"
    torch.save({"encoder": "cpc", "encoder_args": {"hidden": 16}, "in_channels": 12, "state_dict": encoder.state_dict(),
                "run_id": "cpc-test"}, path)
    return path


def ecg_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    ev = config["evaluate"]
    ev.update(train_folds=[1, 2, 3, 4, 5, 6], batch_size=32, bootstrap={"n": 20, "level": 0.9})
    ev["robustness"]["levels"] = 1
    ev["linear"]["epochs"] = 4
    ev["finetune"].update(epochs=3, head_first_epochs=1)
    config["periodic"] = {"target": "heart_rate", "units": "bpm", "units_per_hz": 60, "band": [30, 210],
                          "methods": ["simclr"], "protocols": ["linear"], "linear": {"epochs": 3, "lr": 1e-2,
                                                                                    "weight_decay": 1e-4}}
    return validate_config(config)


def run_eval(config: dict, protocol: str, store: Path, out: Path, encoder: Path) -> dict:
    view = stage_view(config, "evaluate", protocol=protocol, subset="all")
    return evaluate.run(view, "simclr", protocol, store, out, checkpoint=encoder)


@pytest.mark.slow
@pytest.mark.parametrize("protocol,kill_epoch", [("linear", 2), ("finetune", 1)])
def test_evaluation_resumes_to_the_uninterrupted_result(demo_store, encoder_file, tmp_path, monkeypatch, protocol,
                                                        kill_epoch, fault):
    config = ecg_config()
    reference = tmp_path / "uninterrupted" / f"{protocol}.json"
    first = run_eval(config, protocol, demo_store, reference, encoder_file)
    assert not first["resumed"] and first["run_id"]
    epochs = config["evaluate"][protocol]["epochs"]
    assert [h["epoch"] for h in first["history"]] == list(range(1, epochs + 1))
    if protocol == "finetune":
        assert [h["phase"] for h in first["history"]] == ["head only", "all weights", "all weights"]

    out = tmp_path / "killed" / f"{protocol}.json"
    kill_during(monkeypatch, evaluate, kill_epoch)
    with pytest.raises(Killed):
        run_eval(config, protocol, demo_store, out, encoder_file)
    monkeypatch.undo()
    assert not out.exists() and not out.with_suffix(".npz").exists()
    last = out.with_suffix(".lightning") / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == kill_epoch - 1

    resumed = run_eval(config, protocol, demo_store, out, encoder_file)
    assert resumed["resumed"] and resumed["run_id"] == first["run_id"]
    assert resumed["resumed_after_epochs"] == kill_epoch
    assert_same_results(out, reference)
    fault("training", f"{protocol} evaluation killed during epoch {kill_epoch + 1}",
          "resumed identical: result, predictions and last weights equal an uninterrupted run's")

    again = run_eval(config, protocol, demo_store, out, encoder_file)   # a finished run resumes at its end
    assert again["resumed"]
    assert_same_results(out, reference)

    changed = copy.deepcopy(config)
    changed["evaluate"][protocol]["lr"] *= 2
    rerun = run_eval(changed, protocol, demo_store, out, encoder_file)
    assert not rerun["resumed"] and rerun["run_id"] != first["run_id"]
    assert len(rerun["history"]) == epochs and rerun["history"] != first["history"]


@pytest.mark.slow
def test_a_new_encoder_file_starts_the_evaluation_afresh(demo_store, encoder_file, tmp_path):
    config = ecg_config()
    config["evaluate"]["linear"]["epochs"] = 1
    out = tmp_path / "linear.json"
    first = run_eval(config, "linear", demo_store, out, encoder_file)
    torch.manual_seed(1)
    other = tmp_path / "other" / "encoder.pt"
    other.parent.mkdir()
    payload = torch.load(encoder_file, weights_only=True)
    torch.save({**payload, "state_dict": build_encoder("cpc", hidden=16).state_dict()}, other)
    rerun = run_eval(config, "linear", demo_store, out, other)
    assert not rerun["resumed"] and rerun["run_id"] != first["run_id"]


@pytest.mark.slow
def test_periodic_regression_resumes_to_the_uninterrupted_result(demo_store, encoder_file, tmp_path, monkeypatch,
                                                                 fault):
    view = stage_view(ecg_config(), "evaluate_periodic", protocol="linear", subset="all")
    reference = tmp_path / "uninterrupted" / "linear.json"
    first = periodic.run(view, "simclr", "linear", demo_store, reference, checkpoint=encoder_file)
    assert not first["resumed"] and "val_mae" in first["history"][0]
    out = tmp_path / "killed" / "linear.json"
    kill_during(monkeypatch, evaluate, 1)    # periodic trains through evaluate.train_protocol
    with pytest.raises(Killed):
        periodic.run(view, "simclr", "linear", demo_store, out, checkpoint=encoder_file)
    monkeypatch.undo()
    assert periodic.run(view, "simclr", "linear", demo_store, out, checkpoint=encoder_file)["resumed"]
    assert_same_results(out, reference)
    fault("training", "periodic-target regression killed during epoch 2",
          "resumed identical: result, predictions and last weights equal an uninterrupted run's")


def _train_sleep(config: dict, stores: dict, out: Path) -> dict:
    view = {"seed": config["seed"], "sleep": config["sleep"]}
    return sleep.run(view, "both", 0.5, "in", stores["psg"], [], out)


@pytest.mark.slow
def test_sleep_training_resumes_to_the_uninterrupted_result(tiny_stores, tmp_path, monkeypatch, fault):  # noqa: F811
    """A semi-supervised run (labeled and unlabeled loaders, augmentations, dropout, cosine learning rate)."""
    config = tiny_sleep_config()
    config["sleep"]["train"]["max_epochs"] = 3
    reference = tmp_path / "uninterrupted" / "both.json"
    first = _train_sleep(config, tiny_stores, reference)
    assert not first["resumed"] and first["epochs_trained"] == 3
    out = tmp_path / "killed" / "both.json"
    kill_during(monkeypatch, sleep, 1)
    with pytest.raises(Killed):
        _train_sleep(config, tiny_stores, out)
    monkeypatch.undo()
    assert not out.exists()
    resumed = _train_sleep(config, tiny_stores, out)
    assert resumed["resumed"] and resumed["steps"] == first["steps"]
    assert_same_results(out, reference)
    weights = [torch.load(p.with_suffix(".pt"), weights_only=True)["state_dict"] for p in (out, reference)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    fault("training", "semi-supervised sleep staging killed during epoch 2",
          "resumed identical: result, predictions and weights equal an uninterrupted run's")


@pytest.mark.slow
def test_evaluation_logs_to_csv_and_to_the_configured_logger(demo_store, encoder_file, tmp_path):
    pytest.importorskip("tensorboard")
    config = ecg_config()
    config["pretrain"]["trainer"]["logger"] = "tensorboard"
    config["evaluate"]["linear"]["epochs"] = 2
    out = tmp_path / "linear.json"
    summary = run_eval(validate_config(config), "linear", demo_store, out, encoder_file)
    workdir = out.with_suffix(".lightning")
    assert list((workdir / "tensorboard").rglob("events.out.tfevents.*"))
    metrics = Path(summary["metrics_csv"])
    assert metrics.is_relative_to(workdir) and "val_macro_auc" in metrics.read_text().splitlines()[0]
    # the logger is no part of the run: the same run with the CSV logger only resumes
    config["pretrain"]["trainer"]["logger"] = "csv"
    assert run_eval(config, "linear", demo_store, out, encoder_file)["resumed"]


@pytest.mark.slow
def test_evaluation_writes_the_csv_metrics_it_points_at(demo_store, encoder_file, tmp_path):
    config = ecg_config()
    config["evaluate"]["linear"]["epochs"] = 2
    summary = run_eval(config, "linear", demo_store, tmp_path / "linear.json", encoder_file)
    header, *rows = Path(summary["metrics_csv"]).read_text().splitlines()
    assert {"epoch", "train_loss_epoch", "val_macro_auc"} <= set(header.split(","))
    val = [row.split(",")[header.split(",").index("val_macro_auc")] for row in rows]
    assert [float(v) for v in val if v] == pytest.approx([h["val_macro_auc"] for h in summary["history"]])
