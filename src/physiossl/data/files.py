"""Atomic outputs and hashing: every output appears at its final path complete, or not at all."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_HASH_BLOCK = 1 << 20
log = logging.getLogger(__name__)


def sha256_file(path: Path, block_size: int = _HASH_BLOCK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


_HOST = socket.gethostname().replace("/", "_")


def tmp_sibling(path: Path) -> Path:
    """A hidden temporary path next to ``path`` (same file system, so a rename is atomic), named after this host
    and process; the temporaries of ``path`` that dead processes of this host left behind are removed first."""
    path = Path(path)
    remove_stale_temporaries(path)
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove ``.<name>.tmp-<host>-<pid>`` and ``.<name>.old-<host>-<pid>`` siblings of ``path`` whose process, on
    this host, is gone (a writer killed before its rename); those of other hosts are left (their processes cannot
    be checked from here). Returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp|old)-(?:(?P<host>.+)-)?(?P<pid>\d+)(?:\.\w+)?")
    for sibling in path.parent.iterdir():
        m = pattern.fullmatch(sibling.name)
        if m and m["host"] in (None, _HOST) and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            _remove(sibling)
            removed.append(sibling)
            log.info("removed %s, left by a writer that did not finish", sibling)
    return removed


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def replace_path(tmp: Path, final: Path) -> None:
    """Move a finished file or directory into place; an older one is removed only after the new one is in."""
    tmp, final = Path(tmp), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.old-{_HOST}-{os.getpid()}")
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


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path that replaces the file ``final`` only if the block succeeds (removed if it fails)."""
    final = Path(final)
    tmp = tmp_sibling(final)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace_path(tmp, final)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


MANIFEST = "physiossl_manifest.json"


def _listed(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path) -> dict:
    """Write ``MANIFEST`` into a finished output directory: every file in it, with its size and SHA-256."""
    directory = Path(directory)
    files = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _listed(directory)}
    manifest = {"files": files}
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def manifest_problems(directory: Path, hashes: bool = False) -> list[str]:
    """What differs between a directory and its manifest: files missing, of another size (and, with ``hashes``, of
    other content) or not listed (left by an older output: a reader would take them for part of it), each named.
    Hidden files (a name starting with ``.``, e.g. Snakemake's ``.snakemake_timestamp``) are not part of an output."""
    directory = Path(directory)
    try:
        files = json.loads((directory / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return [f"{MANIFEST} is missing (written with the directory: an incomplete copy, or an older writer)"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{MANIFEST} is unreadable ({exc})"]
    problems = []
    for name, entry in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing ({entry['size']:,} bytes in the manifest)")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{name} has {path.stat().st_size:,} bytes, the manifest {entry['size']:,}")
        elif hashes and sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} differs from the manifest (SHA-256)")
    for path in _listed(directory):
        name = path.relative_to(directory).as_posix()
        if name not in files and not any(part.startswith(".") for part in name.split("/")):
            problems.append(f"{name} is not in the manifest (left by an older copy, or added since)")
    return problems
