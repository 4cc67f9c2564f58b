"""Helpers shared by the stages: seeding, devices, fingerprints, atomic result files and resumable training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from ..config import DEFAULT_LOGGER
from ..data.files import atomic_file, write_text_atomic
from ..registry import package_digest

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """A hash of the parts; the choice of training logger (``logger`` keys) is left out, it changes no result."""
    parts = _without_logger(parts)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _without_logger(value):
    if isinstance(value, dict):
        return {k: _without_logger(v) for k, v in value.items() if k != "logger"}
    if isinstance(value, (list, tuple)):
        return [_without_logger(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_torch_atomic(obj: dict, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def resolve_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("gpu", "cuda"):
        raise RuntimeError(f"accelerator {accelerator!r} requested but no CUDA device is available")
    return torch.device("cpu")


def run_workdir(workdir: Path, run_id: str) -> Path:
    """Prepare a run's Lightning folder: wiped when it holds checkpoints of another run (config, data or package
    code changed), so only the same run resumes. Returns the path of its last checkpoint (may not exist)."""
    stamp = workdir / "fingerprint.txt"
    # the package's sources as they are now (a long-lived process that starts several runs sees edits): checkpoints
    # written by other code are not resumed
    run_id = fingerprint(run_id, package_digest())
    if workdir.exists() and (not stamp.exists() or stamp.read_text() != run_id):
        log.info("configuration, data or code changed since the checkpoints in %s were written: starting afresh",
                 workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(run_id)
    return workdir / "checkpoints" / "last.ckpt"


class RandomState(Callback):
    """Saves the states of the random number generators with every checkpoint and restores them on resume: torch
    (CPU and the current CUDA device), NumPy, Python and the named ``generators`` of data loaders and samplers. A
    run resumed from the checkpoint of an epoch then draws the batches, crops, augmentations and dropout masks of an
    uninterrupted run. The states are plain tensors and numbers (the checkpoint loads with ``weights_only=True``)."""

    def __init__(self, generators: dict[str, torch.Generator] | None = None):
        self.generators = dict(generators or {})

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None,
                "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
                "python": random.getstate(),
                "generators": {name: g.get_state() for name, g in self.generators.items()}}

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state["python"])
        missing = set(self.generators) - set(state["generators"])
        if missing:
            raise RuntimeError(f"the checkpoint holds no state of the generators {sorted(missing)}")
        for name, generator in self.generators.items():
            generator.set_state(state["generators"][name])


def training_loggers(kind: str, workdir: Path, run_name: str) -> list[Logger]:
    """Lightning's CSV logger (``<workdir>/log/version_<n>/metrics.csv``, always written) and, for ``kind``
    tensorboard, mlflow or dvclive (``trainer.logger`` of the config), that logger too, writing under ``workdir``
    (MLflow: to ``MLFLOW_TRACKING_URI`` when it is set)."""
    loggers: list[Logger] = [CSVLogger(workdir, name="log")]
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger
        loggers.append(TensorBoardLogger(workdir, name="tensorboard"))
    elif kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger
        loggers.append(MLFlowLogger(experiment_name="physiossl", run_name=run_name, save_dir=str(workdir / "mlruns"),
                                    tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")))
    elif kind == "dvclive":
        from dvclive.lightning import DVCLiveLogger
        # no DVC experiment and no edit of the project's dvc.yaml: the pipeline's DVC stages own those
        loggers.append(DVCLiveLogger(run_name=run_name, dir=str(workdir / "dvclive"), resume=True,
                                     save_dvc_exp=False, dvcyaml=None))
    elif kind != "csv":
        raise ValueError(f"unknown training logger {kind!r} (csv, tensorboard, mlflow, dvclive)")
    return loggers


def metrics_csv(loggers: list[Logger]) -> str:
    """The ``metrics.csv`` of the CSV logger among ``loggers``."""
    return str(Path(next(lg for lg in loggers if isinstance(lg, CSVLogger)).log_dir) / "metrics.csv")


def resumable_training(workdir: Path, run_id: str, logger: str = DEFAULT_LOGGER, run_name: str = "",
                       generators: dict[str, torch.Generator] | None = None,
                       also: tuple[ModelCheckpoint, ...] = ()) -> tuple[dict, str | None]:
    """Keyword arguments of a ``lightning.Trainer`` that checkpoints every epoch to ``<workdir>/checkpoints/last.ckpt``
    and logs to ``workdir``, and the checkpoint to resume from (None: start afresh; see :func:`run_workdir`).

    The checkpoint is written at the end of each training epoch, after its validation, with the states of the
    random number generators (:class:`RandomState`), so that a run killed at any point and rerun ends with the
    numbers of an uninterrupted run; one that does not load is set aside (:func:`usable_checkpoint`). ``also``:
    further checkpoint callbacks (e.g. one that keeps the best epoch); they save at the end of the training epoch
    too, before ``last.ckpt``, which therefore holds their state.
    """
    last = run_workdir(workdir, run_id)
    every_epoch = ModelCheckpoint(dirpath=last.parent, filename=last.stem, save_top_k=1, save_on_train_epoch_end=True,
                                  enable_version_counter=False)
    options = {"default_root_dir": workdir, "logger": training_loggers(logger, workdir, run_name or workdir.name),
               "callbacks": [*also, every_epoch, RandomState(generators)], "enable_checkpointing": True,
               "deterministic": "warn", "enable_model_summary": False, "num_sanity_val_steps": 0}
    return options, usable_checkpoint(last)


class Resume(str):
    """The checkpoint a run resumes from (its path, as Lightning's ``ckpt_path`` takes it) and the number of
    training epochs it holds (``epochs``)."""

    epochs: int


def usable_checkpoint(last: Path) -> Resume | None:
    """``last`` if it exists and loads; a checkpoint that does not load (damaged on disk or in a copy) is moved
    aside to ``<name>.corrupt``, with a warning naming it, and the run starts afresh."""
    if not last.exists():
        return None
    try:
        epochs = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1
    except Exception as exc:   # torch raises several types for damaged files
        aside = last.with_name(last.name + ".corrupt")
        os.replace(last, aside)
        log.warning("cannot resume from %s (%s: %s): moved it to %s; starting afresh", last, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "", aside)
        return None
    log.info("resuming from %s after %d epochs", last, epochs)
    resume = Resume(last)
    resume.epochs = epochs
    return resume


def resume_fields(resume: Resume | None) -> dict:
    """The fields of a result file that say whether and where a run resumed."""
    return {"resumed": resume is not None, "resumed_after_epochs": resume.epochs if resume is not None else None}
