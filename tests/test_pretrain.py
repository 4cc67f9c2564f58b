"""Pretraining: deterministic under a seed, resumes after a kill, restarts when the configuration changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from physiossl.config import load_config, stage_view
from physiossl.stages import pretrain

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **trainer) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["pretrain"]["trainer"].update({"batch_size": 64, "max_epochs": 1, **trainer})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def view(configfile: Path) -> dict:
    return stage_view(load_config(configfile), "pretrain", method="simclr")


@pytest.mark.slow
def test_pretraining_is_deterministic_under_a_seed(tmp_path, demo_store):
    cfg = tiny_config(tmp_path)
    a = pretrain.run(view(cfg), "simclr", [demo_store], demo_store, tmp_path / "a" / "encoder.pt")
    b = pretrain.run(view(cfg), "simclr", [demo_store], demo_store, tmp_path / "b" / "encoder.pt")
    wa = torch.load(tmp_path / "a" / "encoder.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "encoder.pt", weights_only=True)["state_dict"]
    assert a["steps"] == b["steps"] > 0 and a["final_train_loss"] == b["final_train_loss"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    summary = json.loads((tmp_path / "a" / "encoder.json").read_text())
    assert summary["n_records"] > 0 and summary["crop_samples"] == 250 and not summary["resumed"]


def encoder_weights(out: Path) -> dict:
    return torch.load(out, weights_only=True)["state_dict"]


def assert_same_encoder(a: Path, b: Path) -> None:
    wa, wb = encoder_weights(a), encoder_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    sa, sb = (json.loads(p.with_suffix(".json").read_text()) for p in (a, b))
    assert (sa["steps"], sa["final_train_loss"]) == (sb["steps"], sb["final_train_loss"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_store) -> Path:
    """The encoder of an uninterrupted 3-epoch SimCLR run (no loader workers)."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out = tmp / "run" / "encoder.pt"
    pretrain.run(view(tiny_config(tmp, max_epochs=3)), "simclr", [demo_store], demo_store, out)
    return out


def pretrain_cli(cfg: Path, store: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "physiossl.cli", "pretrain", "--configfile", str(cfg), "--method", "simclr",
            "--store", str(store), "--eval-store", str(store), "--out", str(out)]


@pytest.mark.slow
def test_pretraining_killed_with_sigkill_resumes_to_the_uninterrupted_encoder(tmp_path, demo_store, uninterrupted,
                                                                            fault):
    """kill -9 of the CLI once the first epoch's checkpoint exists; the same command again resumes from it and
    writes the encoder of an uninterrupted run, bit for bit."""
    cfg = tiny_config(tmp_path, max_epochs=3)
    out = tmp_path / "run" / "encoder.pt"
    proc = subprocess.Popen(pretrain_cli(cfg, demo_store, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out.parent / "lightning" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "no checkpoint was written before the kill"
    assert not out.exists(), "a killed run must not leave a final encoder"
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert killed_at < 2
    subprocess.run(pretrain_cli(cfg, demo_store, out), check=True, capture_output=True, timeout=600)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["resumed"] and summary["resumed_after_epochs"] == killed_at + 1 and summary["epochs"] == 3
    assert_same_encoder(out, uninterrupted)
    assert [p.name for p in out.parent.iterdir() if ".tmp-" in p.name] == []
    fault("training", "pretraining CLI killed with SIGKILL after an epoch's checkpoint",
          "resumed identical: encoder, steps and final loss equal an uninterrupted run's")

    changed = tiny_config(tmp_path, max_epochs=2)
    summary = pretrain.run(view(changed), "simclr", [demo_store], demo_store, out)
    assert not summary["resumed"] and summary["epochs"] == 2


class _Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_pretraining_resumes_to_the_same_encoder_with_any_number_of_loader_workers(
        tmp_path, demo_store, uninterrupted, monkeypatch, workers, fault):
    """The crops and the order come from a generator drawn in the main process and checkpointed (RandomCrops):
    with loader worker processes, a run killed during its second epoch and resumed ends with the encoder of an
    uninterrupted run without workers."""
    from lightning.pytorch.callbacks import Callback

    from physiossl.stages import common

    class KillDuringSecondEpoch(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.current_epoch == 1:
                raise _Killed()

    make = common.resumable_training

    def killed(*args, **kwargs):
        options, resume = make(*args, **kwargs)
        return {**options, "callbacks": [*options["callbacks"], KillDuringSecondEpoch()]}, resume

    cfg = tiny_config(tmp_path, max_epochs=3, num_workers=workers)
    out = tmp_path / "run" / "encoder.pt"
    monkeypatch.setattr(pretrain, "resumable_training", killed)
    with pytest.raises(_Killed):
        pretrain.run(view(cfg), "simclr", [demo_store], demo_store, out)
    monkeypatch.undo()
    summary = pretrain.run(view(cfg), "simclr", [demo_store], demo_store, out)
    assert summary["resumed"] and summary["resumed_after_epochs"] == 1
    assert_same_encoder(out, uninterrupted)
    fault("training", f"pretraining killed during epoch 2, {workers} loader workers",
          "resumed identical: encoder, steps and final loss equal an uninterrupted run's (without workers)")


@pytest.mark.slow
def test_a_damaged_checkpoint_is_set_aside_and_the_run_starts_afresh(tmp_path, demo_store, uninterrupted, caplog,
                                                                    fault):
    cfg = tiny_config(tmp_path, max_epochs=3)
    out = tmp_path / "run" / "encoder.pt"
    pretrain.run(view(cfg), "simclr", [demo_store], demo_store, out)
    last = out.parent / "lightning" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])     # a truncated copy
    out.unlink()
    with caplog.at_level("WARNING"):
        summary = pretrain.run(view(cfg), "simclr", [demo_store], demo_store, out)
    assert not summary["resumed"]
    assert f"cannot resume from {last}" in caplog.text and "starting afresh" in caplog.text
    assert last.with_name("last.ckpt.corrupt").exists()
    assert_same_encoder(out, uninterrupted)
    fault("training", "truncated last.ckpt", "started afresh: the warning names the checkpoint, which is moved to "
          "last.ckpt.corrupt; the encoder equals an uninterrupted run's")


@pytest.mark.slow
def test_two_process_ddp_pretraining_gathers_and_writes_once(tmp_path, demo_store):
    """`devices: 2` on CPU: Lightning DDP (gloo) runs the CLI in two processes; SimCLR's NT-Xent gathers the
    embeddings of both, and only rank 0 writes the encoder."""
    cfg = tiny_config(tmp_path, accelerator="cpu", devices=2, batch_size=32)
    out = tmp_path / "ddp" / "encoder.pt"
    cmd = [sys.executable, "-m", "physiossl.cli", "pretrain", "--configfile", str(cfg), "--method", "simclr",
           "--store", str(demo_store), "--eval-store", str(demo_store), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["world_size"] == 2
    # each process sees its half of the records (DistributedSampler) in full batches of 32
    assert summary["steps"] == -(-summary["n_records"] // 2) // 32 > 0
    payload = torch.load(out, weights_only=True)
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values() if v.is_floating_point())
    assert [p.name for p in out.parent.iterdir() if ".tmp-" in p.name] == []


@pytest.mark.slow
def test_simper_pretraining_exports_the_series_head(tmp_path, demo_store):
    """SimPer (a small CPC encoder) through the pretrain stage: the checkpoint holds its series head under
    ``heads``, from which the evaluation rebuilds the feature series of the pretrained encoder."""
    from physiossl.models import build_encoder

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["pretrain"]["trainer"].update({"batch_size": 64, "max_epochs": 1})
    config["pretrain"]["methods"]["simper"] = {
        "lr": 1.0e-3, "weight_decay": 0.0, "warmup_epochs": 0, "encoder": "cpc",
        "encoder_args": {"hidden": 8, "lstm_layers": 1}, "crop_s": 4.0, "view_s": 2.0, "n_speeds": 3,
        "augment": [{"gaussian_noise": {"std": 0.05}}],
    }
    path = tmp_path / "simper.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "simper" / "encoder.pt"
    summary = pretrain.run(stage_view(load_config(path), "pretrain", method="simper"), "simper", [demo_store],
                           demo_store, out)
    assert summary["steps"] > 0 and summary["crop_samples"] == 400
    payload = torch.load(out, weights_only=True)
    assert payload["method"] == "simper" and sorted(payload["heads"]) == ["series"]
    encoder = build_encoder(payload["encoder"], payload["in_channels"], **payload["encoder_args"])
    encoder.load_state_dict(payload["state_dict"])
    head = torch.nn.Conv1d(encoder.feature_dim, 1, 1)
    head.load_state_dict(payload["heads"]["series"])
    trained = torch.load(out.parent / "lightning" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in payload["heads"]["series"].items():
        assert torch.equal(value, trained[f"series_head.{name}"])
    encoder.eval()
    with torch.no_grad():
        series = head(encoder.features(torch.randn(2, payload["in_channels"], 200)))[:, 0]
    assert series.shape == (2, 200) and torch.isfinite(series).all()
