"""The ECG store contract (``physiossl.ecg/1``): write, validate and open chunked Zarr v3 stores.

Layout (see docs/stores.md): ``signals`` float32 (N, 12, T) zero-padded at the end, ``lengths`` int32 (N,),
``meta/<column>`` 1-D arrays, ``labels/<set>`` uint8 (N, K) with attrs ``classes``, ``targets/<name>``
float32 (N,), and optionally ``xref/<dataset>`` (N,) strings: the record id of the same recording in
another dataset ('' where there is none), which the leakage guard of pretraining pools uses (CinC 2020's
PTB-XL subset → PTB-XL ``ecg_id``). ``targets/heart_rate`` (bpm, NaN where detection is unreliable) is
derived from every record's signal by the writer (:mod:`physiossl.data.ecg.targets`); the root attribute
``targets`` gives its units, method, number of valid values and the count of each NaN reason. Signals are
chunked per block of records and sharded so that a store of tens of thousands of records has tens of files.
Stores are written to a temporary sibling directory and renamed into place, so a killed conversion never
leaves a store that looks complete.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import zarr

from ... import __version__
from ..store import StoreError, check_files, create_array, reading, store_dir
from . import LEADS

log = logging.getLogger(__name__)

ECG_SCHEMA = "physiossl.ecg/1"


META_COLUMNS = {"record_id": str, "patient_id": str, "fold": "int8", "age": "float32", "sex": str, "source": str}


CHUNK_RECORDS = 64      # records per chunk: the unit of a block read


SHARD_RECORDS = 1024    # records per shard file: the unit of a writer


DERIVED_TARGETS = ("heart_rate",)   # computed by the writer from the signals; a source may not pass them
NOT_DERIVED = "not derived"         # the reason of every heart rate of a store written with derive_targets=False


class EcgStoreWriter:
    """Append records one by one; signals go to disk shard by shard, metadata is written at the end.

    Use :meth:`open` as a context manager: the store only appears at ``path`` when the block finishes
    without an exception and :meth:`finish` was called. The writer derives ``targets/heart_rate`` of every
    record (:func:`physiossl.data.ecg.targets.heart_rate`) at the sampling rate ``fs`` given to :meth:`open`, which
    is also the store's ``fs`` attribute, shard by shard as the signals are written: with ``workers`` > 1 in that
    many processes (the R-peak detector is pure Python, so threads would not help).
    """

    def __init__(self, root: zarr.Group, capacity: int, n_samples: int, fs: float, workers: int = 1,
                 derive_targets: bool = True):
        self.root = root
        self.n_samples = n_samples
        self.fs = _positive_fs(fs)
        if workers < 1:
            raise StoreError(f"workers must be at least 1, got {workers}")
        self.workers = int(workers)
        self.derive_targets = bool(derive_targets)
        self._pool: ProcessPoolExecutor | None = None
        self.signals = create_array(
            root, "signals", shape=(capacity, len(LEADS), n_samples), dtype="float32",
            chunks=(CHUNK_RECORDS, len(LEADS), n_samples),
            shards=(SHARD_RECORDS, len(LEADS), n_samples), fill_value=0.0,
        )
        self._buffer = np.zeros((SHARD_RECORDS, len(LEADS), n_samples), dtype=np.float32)
        self._buffered = 0
        self._written = 0
        self.lengths: list[int] = []
        self.meta: dict[str, list] = {col: [] for col in META_COLUMNS}
        self.labels: dict[str, list[list[str]]] = {}
        self.targets: dict[str, list[float]] = {}
        self.xrefs: dict[str, list[str]] = {}
        self.heart_rates: list[float] = []
        self.heart_rate_reasons: Counter[str] = Counter()
        self._sum = np.zeros(len(LEADS))
        self._sumsq = np.zeros(len(LEADS))
        self._count = 0
        self.finished = False

    @classmethod
    @contextmanager
    def open(cls, path: Path, capacity: int, n_samples: int, fs: float, workers: int = 1,
             derive_targets: bool = True) -> Iterator["EcgStoreWriter"]:
        """A writer for at most ``capacity`` records of at most ``n_samples`` samples at ``fs`` Hz, deriving the
        heart rates in ``workers`` processes. ``derive_targets=False`` (for stores whose heart rates nobody reads,
        such as a benchmark's) stores every heart rate as NaN with the reason ``"not derived"``, said in the attrs."""
        with store_dir(Path(path)) as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            writer = cls(root, max(capacity, 1), n_samples, fs, workers, derive_targets)
            try:
                yield writer
            finally:
                writer.close()
            if not writer.finished:
                raise RuntimeError(f"{path}: EcgStoreWriter.finish() was not called")

    @property
    def n_records(self) -> int:
        return len(self.lengths)

    def append(self, signal: np.ndarray, meta: dict, labels: dict[str, list[str]] | None = None,
               targets: dict[str, float] | None = None, norm: bool = True, xref: dict[str, str] | None = None) -> None:
        """Add one record: ``signal`` (12, t) float32 in mV, canonical lead order, t <= n_samples.

        ``targets`` are the source's own per-record values; the derived ones (:data:`DERIVED_TARGETS`) are
        computed here and may not be passed.
        """
        if signal.shape[0] != len(LEADS) or signal.shape[1] > self.n_samples:
            raise StoreError(f"record {meta.get('record_id')}: signal shape {signal.shape} does not fit "
                             f"(12, <= {self.n_samples})")
        derived = sorted(set(targets or {}) & set(DERIVED_TARGETS))
        if derived:
            raise StoreError(f"record {meta.get('record_id')}: targets {derived} are derived from the signal by the "
                             f"store writer; a source cannot pass them (store the source's value under another name)")
        t = signal.shape[1]
        self._buffer[self._buffered].fill(0.0)
        self._buffer[self._buffered, :, :t] = signal
        self._buffered += 1
        self.lengths.append(t)
        for col in META_COLUMNS:
            self.meta[col].append(meta.get(col))
        # a column first seen at record k is back-filled for records 0..k-1 (only then: no per-call copies)
        for name, codes in (labels or {}).items():
            if name not in self.labels:
                self.labels[name] = [[] for _ in range(self.n_records - 1)]
            self.labels[name].append(list(codes))
        for name, value in (targets or {}).items():
            if name not in self.targets:
                self.targets[name] = [np.nan] * (self.n_records - 1)
            self.targets[name].append(float(value))
        for name, value in (xref or {}).items():
            if name not in self.xrefs:
                self.xrefs[name] = [""] * (self.n_records - 1)
            self.xrefs[name].append(str(value))
        if norm:
            x = signal.astype(np.float64)
            self._sum += x.sum(axis=1)
            self._sumsq += (x * x).sum(axis=1)
            self._count += t
        if self._buffered == SHARD_RECORDS:
            self._flush()

    def _derive_heart_rates(self) -> None:
        """Heart rates of the buffered records (each on its valid samples), in order."""
        from .targets import heart_rate

        lengths = self.lengths[self._written:self._written + self._buffered]
        signals = [self._buffer[i, :, :t] for i, t in enumerate(lengths)]
        if not self.derive_targets:
            results = [(float("nan"), NOT_DERIVED)] * len(signals)
        elif self.workers > 1:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
            chunk = max(1, len(signals) // (4 * self.workers))
            results = list(self._pool.map(heart_rate, signals, repeat(self.fs), chunksize=chunk))
        else:
            results = [heart_rate(x, self.fs) for x in signals]
        for value, reason in results:
            self.heart_rates.append(value)
            if reason is not None:
                self.heart_rate_reasons[reason] += 1

    def _flush(self) -> None:
        if self._buffered:
            self._derive_heart_rates()
            self.signals[self._written:self._written + self._buffered] = self._buffer[: self._buffered]
            self._written += self._buffered
            self._buffered = 0

    def close(self) -> None:
        """Stop the worker processes (:meth:`open` does this when its block ends)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def finish(self, *, dataset: str, source_version: str, label_sets: dict[str, Sequence[str]], provenance: dict,
               norm_folds: Sequence[int], extra_attrs: dict | None = None) -> None:
        """Write lengths, metadata, labels, targets and attrs."""
        from .targets import HEART_RATE_METHOD

        self._flush()
        n = self.n_records
        if n == 0:
            raise StoreError(f"dataset {dataset}: no record could be converted")
        self.signals.resize((n, len(LEADS), self.n_samples))
        root = self.root
        create_array(root, "lengths", shape=(n,), dtype="int32", chunks=(n,))[:] = np.asarray(self.lengths, np.int32)
        for col, dtype in META_COLUMNS.items():
            values = self.meta[col]
            if dtype is str:
                arr = np.array(["" if v is None else str(v) for v in values], dtype=str)
                create_array(root, f"meta/{col}", shape=(n,), dtype=str, chunks=(n,))[:] = arr
            else:
                fill = np.nan if dtype.startswith("float") else 0
                arr = np.array([fill if v is None else v for v in values], dtype=dtype)
                create_array(root, f"meta/{col}", shape=(n,), dtype=dtype, chunks=(n,))[:] = arr
        for name, classes in label_sets.items():
            index = {c: k for k, c in enumerate(classes)}
            hot = np.zeros((n, len(classes)), dtype=np.uint8)
            rows = self.labels.get(name, [])
            rows = rows + [[] for _ in range(n - len(rows))]
            for i, codes in enumerate(rows):
                for code in codes:
                    if code in index:
                        hot[i, index[code]] = 1
            arr = create_array(root, f"labels/{name}", shape=hot.shape, dtype="uint8", chunks=hot.shape)
            arr[:] = hot
            arr.attrs["classes"] = list(classes)
        for name, values in {**self.targets, "heart_rate": self.heart_rates}.items():
            values = values + [np.nan] * (n - len(values))
            create_array(root, f"targets/{name}", shape=(n,), dtype="float32",
                         chunks=(n,))[:] = np.asarray(values, np.float32)
        n_valid = int(np.isfinite(self.heart_rates).sum())
        reasons = dict(sorted(self.heart_rate_reasons.items()))
        log.info("%s: heart_rate derived for %d of %d records; NaN: %s", dataset, n_valid, n,
                 ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none")
        for name, values in self.xrefs.items():
            values = values + [""] * (n - len(values))
            create_array(root, f"xref/{name}", shape=(n,), dtype=str, chunks=(n,))[:] = np.array(values, dtype=str)
        mean = self._sum / max(self._count, 1)
        std = np.sqrt(np.maximum(self._sumsq / max(self._count, 1) - mean**2, 0.0))
        root.attrs.update({
            "schema": ECG_SCHEMA,
            "dataset": dataset,
            "source_version": source_version,
            "fs": self.fs,
            "leads": list(LEADS),
            "units": "mV",
            "n_records": n,
            "label_sets": {k: list(v) for k, v in label_sets.items()},
            "norm": {"folds": sorted(int(f) for f in norm_folds), "mean": mean.tolist(),
                     "std": np.where(std > 0, std, 1.0).tolist(), "n_samples": int(self._count)},
            "provenance": provenance,
            "created_with": f"physiossl {__version__}",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "targets": {"heart_rate": {"units": "bpm", "n_valid": n_valid,
                                       "method": HEART_RATE_METHOD if self.derive_targets else NOT_DERIVED,
                                       "nan_reasons": reasons}},
            **(extra_attrs or {}),
        })
        self.finished = True


def _positive_fs(fs: float) -> float:
    fs = float(fs)
    if not fs > 0:
        raise StoreError(f"sampling rate must be positive, got {fs}")
    return fs


REQUIRED_ATTRS = ("schema", "dataset", "source_version", "fs", "leads", "units", "n_records", "label_sets",
                  "norm", "provenance", "created_with")


def open_store(path: Path | str) -> zarr.Group:
    """Open an ECG store read-only after checking the contract; raise StoreError naming the problem."""
    path = Path(path)
    check_files(path)
    with reading(path, "its metadata"):
        root = zarr.open_group(str(path), mode="r")
        validate_store(root, path)
    return root


def validate_store(root: zarr.Group, path: Path | str = "<store>") -> None:
    attrs = dict(root.attrs)
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise StoreError(f"{path}: missing attrs {missing}")
    if attrs["schema"] != ECG_SCHEMA:
        raise StoreError(f"{path}: schema {attrs['schema']!r}, expected {ECG_SCHEMA!r}")
    if list(attrs["leads"]) != list(LEADS):
        raise StoreError(f"{path}: leads {attrs['leads']} are not the canonical order {list(LEADS)}")
    n = attrs["n_records"]
    sig = root["signals"]
    if sig.ndim != 3 or sig.shape[0] != n or sig.shape[1] != len(LEADS) or sig.dtype != np.float32:
        raise StoreError(f"{path}: signals {sig.shape} {sig.dtype}, expected ({n}, 12, T) float32")
    if root["lengths"].shape != (n,):
        raise StoreError(f"{path}: lengths has shape {root['lengths'].shape}, expected ({n},)")
    for col in META_COLUMNS:
        key = f"meta/{col}"
        if key not in root or root[key].shape != (n,):
            raise StoreError(f"{path}: {key} missing or not of length {n}")
    for name, classes in attrs["label_sets"].items():
        key = f"labels/{name}"
        if key not in root or root[key].shape != (n, len(classes)):
            raise StoreError(f"{path}: {key} missing or not of shape ({n}, {len(classes)})")


def read_meta(root: zarr.Group) -> dict[str, np.ndarray]:
    return {col: root[f"meta/{col}"][:] for col in META_COLUMNS}


def read_labels(root: zarr.Group, label_set: str) -> tuple[np.ndarray, list[str]]:
    key = f"labels/{label_set}"
    if key not in root:
        raise StoreError(f"store has no label set {label_set!r} (has {sorted(root.attrs['label_sets'])})")
    arr = root[key]
    return arr[:], list(arr.attrs["classes"])
