"""Fault injection for the training stages through Snakemake: the whole process group of a `snakemake` run is
killed with SIGKILL while a pretraining job, then while an evaluation job, is training (after its first epoch's
checkpoint); the same command, after the `snakemake --unlock` that Snakemake's message asks for, resumes the job
and ends with the files of an uninterrupted run of the same project. Minutes per case: run with ``-m faults``."""

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

from test_workflow import make_project, run, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.faults]

TARGETS = {"pretrain": "results/tiny/pretrain/simclr/encoder.pt", "evaluate": "results/tiny/eval/simclr/linear/all.json"}
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
    fault("training", f"snakemake killed (SIGKILL, process group) during a {stage} job",
          "resumed identical: after `snakemake --unlock` (Snakemake's message says so), the rerun resumes the job "
          "from its checkpoint and writes the files of an uninterrupted run")
