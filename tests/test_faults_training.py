"""Fault injection for the training stages killed with SIGKILL after their first epoch's checkpoint: the whole
process group of a `snakemake` run while a pretraining job, then while an evaluation job, is training (the same
command, after the `snakemake --unlock` that Snakemake's message asks for, resumes the job), and the
`physiossl train-sleep` command. Each ends with the files of an uninterrupted run. Minutes per case: run with
``-m faults`` (pretraining killed through the CLI: tests/test_pretrain.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_sleep_pipeline import tiny_sleep_config, tiny_stores  # noqa: F401  (tiny_stores is a fixture)
from test_workflow import make_project, run, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.faults]

TARGETS = {"pretrain": "results/tiny/pretrain/simclr/encoder.pt",
           "evaluate": "results/tiny/eval/simclr/linear/all.json"}
CHECKPOINTS = {"pretrain": "results/tiny/pretrain/simclr/lightning/checkpoints/last.ckpt",
               "evaluate": "results/tiny/eval/simclr/linear/all.lightning/checkpoints/last.ckpt"}


def config() -> dict:
    config = tiny_config()
    config["experiment"].update(methods=["simclr"], protocols=["linear"])
    config["pretrain"]["trainer"]["max_epochs"] = 3
    config["evaluate"]["linear"]["epochs"] = 4
    return config


def command(target: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", "config/tiny.yaml"]


def kill_when_checkpointed(project: Path, stage: str) -> None:
    """Start the Snakemake run of ``stage``'s target and SIGKILL its process group once the job's checkpoint of a
    first epoch exists."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(command(TARGETS[stage]), cwd=project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = project / CHECKPOINTS[stage]
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), f"{stage}: no checkpoint before the kill"
    assert not (project / TARGETS[stage]).exists(), f"{stage}: a killed job left its output"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("uninterrupted"), "project", config())
    run(command(TARGETS["evaluate"]), project)
    return project


@pytest.mark.parametrize("stage", ["pretrain", "evaluate"])
def test_a_snakemake_run_killed_during_training_resumes_to_the_uninterrupted_files(tmp_path, uninterrupted, stage,
                                                                                    fault):
    project = make_project(tmp_path, "killed", config())
    if stage == "evaluate":
        run(command(TARGETS["pretrain"]), project)
    kill_when_checkpointed(project, stage)

    again = run(command(TARGETS[stage]), project, check=False)
    assert again.returncode != 0 and "--unlock" in again.stderr + again.stdout   # Snakemake's lock of the dead run
    run([sys.executable, "-m", "snakemake", "--unlock", "--configfile", "config/tiny.yaml"], project)
    run(command(TARGETS[stage]), project)

    if stage == "pretrain":
        ran, reference = (torch.load(p / TARGETS[stage], weights_only=True)["state_dict"]
                          for p in (project, uninterrupted))
        assert ran.keys() == reference.keys() and all(torch.equal(ran[k], reference[k]) for k in ran)
        summary = json.loads((project / TARGETS[stage]).with_suffix(".json").read_text())
    else:
        summary = json.loads((project / TARGETS[stage]).read_text())
        reference = json.loads((uninterrupted / TARGETS[stage]).read_text())
        # the run ids hash the stores' paths and creation times: another project, other ids
        run_fields = ("seconds", "resumed", "resumed_after_epochs", "metrics_csv", "run_id", "pretrain_run_id")
        assert ({k: v for k, v in summary.items() if k not in run_fields}
                == {k: v for k, v in reference.items() if k not in run_fields})
        predictions = [np.load((p / TARGETS[stage]).with_suffix(".npz")) for p in (project, uninterrupted)]
        for key in predictions[1].files:
            np.testing.assert_array_equal(predictions[0][key], predictions[1][key], err_msg=key)
    assert summary["resumed"] and summary["resumed_after_epochs"] >= 1
    job = "a pretraining" if stage == "pretrain" else "an evaluation"
    fault("training", f"snakemake killed (SIGKILL, process group) during {job} job",
          "resumed identical: after `snakemake --unlock` (Snakemake's message says so), the rerun resumes the job "
          "from its checkpoint and writes the files of an uninterrupted run")


def test_sleep_training_killed_with_sigkill_resumes_to_the_uninterrupted_files(tmp_path, tiny_stores, fault):  # noqa: F811
    """`physiossl train-sleep` (semi-supervised: labeled and unlabeled loaders, augmentations, dropout) killed with
    SIGKILL once its first epoch's checkpoint exists; the same command resumes and writes the files of an
    uninterrupted run."""
    import yaml

    config = tiny_sleep_config()
    config["sleep"]["train"]["max_epochs"] = 4
    configfile = tmp_path / "sleep.yaml"
    configfile.write_text(yaml.safe_dump(config))

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "physiossl.cli", "train-sleep", "--configfile", str(configfile), "--variant",
                "both", "--fraction", "0.5", "--pool", "in", "--store", str(tiny_stores["psg"]), "--out", str(out)]

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    reference = tmp_path / "uninterrupted" / "both.json"
    subprocess.run(command(reference), check=True, capture_output=True, env=env, timeout=900)
    out = tmp_path / "killed" / "both.json"
    proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    checkpoint = out.with_suffix(".lightning") / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] + 1
    assert killed_after < 4 and not out.exists()
    subprocess.run(command(out), check=True, capture_output=True, env=env, timeout=900)

    ran, ref = (json.loads(p.read_text()) for p in (out, reference))
    run_fields = ("seconds", "resumed", "resumed_after_epochs", "metrics_csv")
    assert ran["resumed"] and ran["resumed_after_epochs"] == killed_after
    assert ({k: v for k, v in ran.items() if k not in run_fields}
            == {k: v for k, v in ref.items() if k not in run_fields})
    with np.load(out.with_suffix(".npz")) as a, np.load(reference.with_suffix(".npz")) as b:
        for key in b.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    weights = [torch.load(p.with_suffix(".pt"), weights_only=True)["state_dict"] for p in (out, reference)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    fault("training", "`physiossl train-sleep` killed with SIGKILL after an epoch's checkpoint",
          "resumed identical: result, predictions and weights equal an uninterrupted run's")
