"""What ECG and sleep stores share: the store error, checksummed arrays, reads that name the store, writing a
store into a temporary folder that is sealed with its manifest and quarantine list and renamed into place, and the
checks of its files against the manifest. The formats are in :mod:`physiossl.data.ecg.store` (``physiossl.ecg/1``)
and :mod:`physiossl.data.sleep.store` (``physiossl.sleep/1``)."""

from __future__ import annotations

import csv
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import zarr
from zarr.codecs import ZstdCodec

from .files import atomic_dir, atomic_file, manifest_problems, tmp_sibling, write_manifest

warnings.filterwarnings("ignore", message=".*StringDType.*", category=UserWarning)
warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")


class StoreError(ValueError):
    """A store does not follow the contract."""


def create_array(group: zarr.Group, name: str, **kwargs) -> zarr.Array:
    """``group.create_array`` with checksummed chunks (zstd frame checksums): a changed byte in a chunk fails its
    read, instead of decoding to other values; the shard indexes carry their own CRC32C."""
    return group.create_array(name, compressors=[ZstdCodec(level=0, checksum=True)], **kwargs)


def write_quarantine(path: Path, entries: Sequence[tuple[str, str]]) -> None:
    """Write ``<store>.quarantine.csv`` (record, reason), atomically; written even when empty."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["record", "reason"])
        writer.writerows(entries)


def quarantine_path(store: Path) -> Path:
    """``<store>.quarantine.csv``: the copy of a store's quarantine list next to it, published after the store."""
    store = Path(store)
    return store.with_name(store.name + ".quarantine.csv")


def refused_quarantine_path(store: Path) -> Path:
    """Where a refused conversion leaves its quarantine list (an earlier store at ``store`` keeps its own)."""
    store = Path(store)
    return store.with_name(store.name + ".refused.quarantine.csv")


def pending_quarantine(store: Path) -> Path:
    """The quarantine list of a conversion in progress, taken into the store when it is sealed (:func:`seal`)."""
    return tmp_sibling(quarantine_path(store))


@contextmanager
def reading(path: Path | str, what: str) -> Iterator[None]:
    """Turn a failed read of ``what`` in the store at ``path`` (a chunk that fails its checksum, a damaged file)
    into a StoreError that names the store and what to do."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:   # zarr and the codecs raise many types
        problems = manifest_problems(Path(path), hashes=True)   # which file: worth a full hash on this path only
        found = "; ".join(problems[:5]) if problems else "its files match its manifest"
        raise StoreError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc}); {found}. Pull or copy the "
                         "store again, or rerun its conversion") from exc


STORE_QUARANTINE = "quarantine.csv"


def seal(tmp: Path, final: Path) -> None:
    """Finish a store's temporary folder before its rename: the quarantine list of the conversion
    (:func:`pending_quarantine`) goes in as ``quarantine.csv``, then the manifest of every file."""
    pending = pending_quarantine(final)
    if pending.is_file():
        os.replace(pending, Path(tmp) / STORE_QUARANTINE)
    write_manifest(tmp)


@contextmanager
def store_dir(path: Path) -> Iterator[Path]:
    """The temporary folder of a store (ECG or sleep) being written: when the block succeeds it is sealed
    (:func:`seal`) and renamed into place, then its quarantine list is published next to it; when it fails,
    neither the folder nor the pending quarantine list is left."""
    path = Path(path)
    try:
        with atomic_dir(path) as tmp:
            yield tmp
            seal(tmp, path)
    except BaseException:
        pending_quarantine(path).unlink(missing_ok=True)
        raise
    publish_quarantine(path)


def publish_quarantine(store: Path) -> None:
    """After a store's rename: its quarantine list, copied next to it as ``<store>.quarantine.csv`` (a kill before
    this leaves the earlier copy, which ``physiossl verify-store`` reports as not the store's)."""
    inside = Path(store) / STORE_QUARANTINE
    if inside.is_file():
        with atomic_file(quarantine_path(store)) as tmp:
            shutil.copyfile(inside, tmp)


def check_files(path: Path, hashes: bool = False) -> None:
    """The files of a store (ECG or sleep) against the manifest written with it: every file present at its size
    (cheap, on every open) and, with ``hashes``, of its content (``physiossl verify-store``); StoreError naming the
    store and the files."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a Zarr store (no zarr.json); was the conversion interrupted?")
    problems = manifest_problems(path, hashes=hashes)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise StoreError(f"{path}: {shown}. The store is not the one its conversion wrote (an interrupted copy or "
                         "`dvc pull`, or an edit): pull or copy it again, or rerun its conversion")


