"""Plain helper functions shared by several test modules (fixtures live in conftest.py).

Imported as ``from helpers import ...``: tests/ has no __init__.py, so pytest puts this folder on sys.path.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import wfdb

from physiossl.cli import main
from physiossl.data.convert import ConversionError
from physiossl.data.ecg.store import open_store
from physiossl.data.store import quarantine_path, refused_quarantine_path

# the 12 standard leads in the canonical order, written out independently of physiossl.data.store.LEADS
CANONICAL = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


# --------------------------------------------------------------------------------------------- files
def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a raw tree and make it writable (fixture files may be read-only)."""
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = Path(root) / name
            p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IRUSR | (stat.S_IXUSR if p.is_dir() else 0))
    Path(dst).chmod(Path(dst).stat().st_mode | stat.S_IWUSR)
    return Path(dst)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    """Names of the ``.tmp-`` staging entries left in ``directory``."""
    return [p.name for p in Path(directory).iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------------------------- records
def update_checksums(hea: Path, samples: np.ndarray) -> None:
    """Set a WFDB header's per-signal checksums (16-bit sums) to those of the digital ``samples`` (T, n_sig): the
    header a record written with these samples would have."""
    lines = hea.read_text().splitlines()
    sums = samples.astype(np.int64).sum(axis=0) % 65536
    for k in range(samples.shape[1]):
        fields = lines[1 + k].split(" ")
        fields[6] = str(int(sums[k]))
        lines[1 + k] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")


def wfdb_canonical(stem: Path) -> np.ndarray:
    """(12, T) float32 in the canonical lead order, straight from wfdb."""
    rec = wfdb.rdrecord(str(stem))
    names = [n.upper() for n in rec.sig_name]
    order = [names.index(lead.upper()) for lead in CANONICAL]
    return rec.p_signal[:, order].T.astype(np.float32)


# --------------------------------------------------------------------------------------------- conversion
def read_quarantine(store: Path, refused: bool = False) -> dict[str, str]:
    """{record: reason} from the quarantine CSV next to ``store`` (``refused``: that of a refused conversion)."""
    with open(refused_quarantine_path(store) if refused else quarantine_path(store), newline="") as fh:
        return {r["record"]: r["reason"] for r in csv.DictReader(fh)}


def assert_fraction_failure(convert, raw: Path, out: Path, max_quarantine_fraction: float) -> dict[str, str]:
    """``convert`` above the quarantine fraction fails cleanly: the error names the raw tree and the quarantine
    file, no store and no staging directory are left. Returns the quarantine for the caller to check."""
    with pytest.raises(ConversionError) as info:
        convert(raw, out, fs=100, max_quarantine_fraction=max_quarantine_fraction, progress=False)
    message = str(info.value)
    assert str(raw) in message
    assert str(refused_quarantine_path(out)) in message
    assert not out.exists() and not quarantine_path(out).exists()
    assert not leftovers(out.parent)
    return read_quarantine(out, refused=True)


def assert_missing_input_fails(convert, raw: Path, name: str, out: Path) -> None:
    """Without the file ``raw / name``, ``convert`` raises a ConversionError naming it and writes no store."""
    (raw / name).unlink()
    with pytest.raises(ConversionError, match=name):
        convert(raw, out, fs=100, progress=False)
    assert not out.exists()


def assert_cli_converts(capsys, source: str, raw: Path, out: Path, n_records: int, *options: str):
    """``physiossl convert <source> --raw raw --out out [options]`` exits 0, prints the record count and writes
    a store of ``n_records`` records; returns the opened store."""
    assert main(["convert", source, "--raw", str(raw), "--out", str(out), *options]) == 0
    assert f'"records": {n_records}' in capsys.readouterr().out
    root = open_store(out)
    assert root.attrs["n_records"] == n_records
    return root


def assert_failure_keeps_previous_store(convert, raw: Path, out: Path, damage, n_records: int) -> None:
    """A store converted from ``raw`` survives a later conversion that fails after ``damage()``."""
    convert(raw, out, fs=100, progress=False)
    damage()
    with pytest.raises(ConversionError):
        convert(raw, out, fs=100, max_quarantine_fraction=0.0, progress=False)
    assert open_store(out).attrs["n_records"] == n_records
