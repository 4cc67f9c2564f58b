"""Helpers shared by the stages: seeding, devices, fingerprints and atomic result files."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..data.files import write_text_atomic

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_torch_atomic(obj: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resolve_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("gpu", "cuda"):
        raise RuntimeError(f"accelerator {accelerator!r} requested but no CUDA device is available")
    return torch.device("cpu")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the package's source files: checkpoints written by other code are not resumed."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def run_workdir(workdir: Path, run_id: str) -> Path:
    """Prepare a run's Lightning folder: wiped when it holds checkpoints of another run (config, data or package
    code changed), so only the same run resumes. Returns the path of its last checkpoint (may not exist)."""
    stamp = workdir / "fingerprint.txt"
    run_id = fingerprint(run_id, code_version())
    if workdir.exists() and (not stamp.exists() or stamp.read_text() != run_id):
        log.info("configuration, data or code changed since the checkpoints in %s were written: starting afresh",
                 workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(run_id)
    return workdir / "checkpoints" / "last.ckpt"
