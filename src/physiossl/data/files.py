"""Atomic outputs and hashing: every output appears at its final path complete, or not at all."""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_HASH_BLOCK = 1 << 20


def sha256_file(path: Path, block_size: int = _HASH_BLOCK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def tmp_sibling(path: Path) -> Path:
    """A hidden temporary path next to ``path`` (same file system, so a rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def replace_path(tmp: Path, final: Path) -> None:
    """Move a finished file or directory into place; an older one is removed only after the new one is in."""
    tmp, final = Path(tmp), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if old.exists():
        _remove(old)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` only if the block succeeds."""
    final = Path(final)
    tmp = tmp_sibling(final)
    if tmp.exists():
        _remove(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    replace_path(tmp, final)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = tmp_sibling(path)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text)
    replace_path(tmp, Path(path))
