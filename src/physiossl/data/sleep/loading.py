"""The sleep training data path: a sleep store is read once, in chunk-aligned blocks, into RAM; sequences of
consecutive 30 s epochs are cut from there with vectorised indexing.

:func:`load_sleep_arrays` reads all nights of a store, or a subset, into a :class:`SleepArrays`;
:func:`concat_arrays` mixes stores with the same features (e.g. PSG-Audio nights and unlabeled home
recordings). :func:`sequence_starts` gives windows of ``seq_len`` epochs that never cross a night boundary,
:class:`SequenceDataset` serves them a batch at a time (``__getitems__``; use :func:`collate_batch` as the
DataLoader's ``collate_fn``) and :func:`accumulate_windows` averages overlapping window predictions back to
one value per epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from ..ecg.loading import collate_batch, window_starts
from ..store import StoreError, reading
from .features import FEATURE_KEYS
from .stages import UNSCORED, to_view
from .store import SLEEP_SCHEMA, open_sleep_store, read_nights

__all__ = ["SleepArrays", "load_sleep_arrays", "concat_arrays", "sequence_starts", "short_nights",
           "SequenceDataset", "collate_batch", "accumulate_windows"]

log = logging.getLogger(__name__)

_READ_CHUNKS = 16                                  # chunks per block read (one shard of the writer)
_COMPARED = (*FEATURE_KEYS, "frames", "epoch_s")   # feature attrs that must agree between mixed stores


@dataclass
class SleepArrays:
    """Epochs of one store (or of several, see :func:`concat_arrays`) held in RAM, night after night.

    ``night`` indexes ``night_ids``/``labeled``/``offsets``; night k holds epochs ``offsets[k]:offsets[k+1]``.
    ``night_datasets`` and ``store_ids`` give each night's dataset and its id in its own store (the same as
    ``night_ids`` for a single store).
    """

    features: np.ndarray            # float32 (E, n_mels, frames)
    stages: np.ndarray              # int8 (E,): 0..4 = W, N1, N2, N3, REM; -1 unscored or unlabeled
    night: np.ndarray               # int32 (E,)
    index: np.ndarray               # int32 (E,): position of the epoch in its night
    night_ids: list[str]
    labeled: np.ndarray             # bool (n_nights,)
    offsets: np.ndarray             # int64 (n_nights + 1,)
    attrs: dict
    events: dict[str, np.ndarray] = field(default_factory=dict)   # name → float32 (E,) seconds per epoch
    source: str = ""                # the store(s) read, for messages
    night_datasets: list[str] = field(default_factory=list)
    store_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.night_datasets:
            self.night_datasets = [str(self.attrs.get("dataset", ""))] * len(self.night_ids)
        if not self.store_ids:
            self.store_ids = list(self.night_ids)

    @property
    def n_epochs(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_nights(self) -> int:
        return len(self.night_ids)

    def night_indices(self, ids: Sequence[str]) -> list[int]:
        """Positions of the given night ids; KeyError naming the unknown ones."""
        pos = {n: k for k, n in enumerate(self.night_ids)}
        unknown = [n for n in ids if n not in pos]
        if unknown:
            raise KeyError(f"{self.source}: nights not loaded: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        return [pos[n] for n in ids]


def _read_rows(arr: zarr.Array, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = arr[rows]`` for ascending ``rows``, reading chunk-aligned blocks that hold selected rows."""
    chunk = max(int(arr.chunks[0]), 1)
    block = chunk * _READ_CHUNKS
    n = arr.shape[0]
    pos = 0
    for b0 in range(0, n, block):
        lo_i, hi_i = np.searchsorted(rows, [b0, min(b0 + block, n)])
        if lo_i == hi_i:
            continue
        sel = rows[lo_i:hi_i]
        lo = (int(sel[0]) // chunk) * chunk
        hi = min(-(-(int(sel[-1]) + 1) // chunk) * chunk, n)
        values = arr[lo:hi]
        k = len(sel)
        if sel[-1] - sel[0] + 1 == k:
            out[pos:pos + k] = values[sel[0] - lo:sel[-1] + 1 - lo]
        else:
            out[pos:pos + k] = values[sel - lo]
        pos += k


def load_sleep_arrays(path: str | Path, nights: Sequence[str] | None = None,
                      dtype: np.dtype | type = np.float32) -> SleepArrays:
    """Read a sleep store's epochs, or only those of ``nights`` (ids; kept in store order), into RAM.

    ``dtype`` float16 keeps the features as stored, at half the memory of float32; :class:`SequenceDataset`
    yields float32 either way.
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"features are loaded as float16 or float32, not {dtype}")
    root = open_sleep_store(path)
    attrs = dict(root.attrs)
    ids, offsets, labeled = read_nights(root)
    if nights is None:
        sel = np.arange(len(ids))
    else:
        nights = [str(n) for n in nights]
        pos = {n: k for k, n in enumerate(ids)}
        unknown = [n for n in nights if n not in pos]
        if unknown:
            raise StoreError(f"{path}: nights not in the store: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        if len(set(nights)) != len(nights):
            raise ValueError(f"{path}: nights requested more than once: "
                             f"{sorted({n for n in nights if nights.count(n) > 1})}")
        sel = np.sort([pos[n] for n in nights]).astype(np.int64)
    lengths = np.diff(offsets)[sel]
    rows = (np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in sel]) if len(sel)
            else np.zeros(0, np.int64))
    feat = root["features"]
    features = np.empty((len(rows), *feat.shape[1:]), dtype)
    with reading(path, "the features"):
        _read_rows(feat, rows, features)
    full = len(rows) == attrs["n_epochs"]

    def per_epoch(key: str) -> np.ndarray:
        values = root[key][:]
        return values if full else values[rows]

    return SleepArrays(
        features=features,
        stages=per_epoch("labels/stage").astype(np.int8),
        night=np.repeat(np.arange(len(sel), dtype=np.int32), lengths),
        index=per_epoch("epochs/index").astype(np.int32),
        night_ids=[ids[k] for k in sel],
        labeled=labeled[sel],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        attrs=attrs,
        events={name: per_epoch(f"events/{name}").astype(np.float32) for name in attrs["events"]},
        source=str(path),
    )


def concat_arrays(parts: list[SleepArrays]) -> SleepArrays:
    """One :class:`SleepArrays` of several, night after night, e.g. labeled PSG nights and unlabeled home nights.

    The parts must share the feature parameters (:data:`~physiossl.data.sleep.features.FEATURE_KEYS`, frames, epoch
    length). Every night id becomes ``<dataset>/<id in its store>`` (always, so ids do not depend on what is
    mixed; nesting does not prefix twice); ``night_datasets`` and ``store_ids`` keep the parts. Only the
    event arrays that every part has are kept. The result's attrs describe the mix, with ``parts`` listing
    each part's dataset, source and size.
    """
    if not parts:
        raise ValueError("concat_arrays needs at least one SleepArrays")
    first = parts[0]
    ref = first.attrs["feature"]
    for other in parts[1:]:
        feat = other.attrs["feature"]
        diff = [k for k in _COMPARED if ref.get(k) != feat.get(k)]
        if diff:
            raise ValueError(f"cannot mix sleep stores {first.source or first.attrs.get('dataset')} and "
                             f"{other.source or other.attrs.get('dataset')}: their features differ in "
                             + ", ".join(f"{k} ({ref.get(k)} vs {feat.get(k)})" for k in diff))
        if other.features.shape[1:] != first.features.shape[1:]:
            raise ValueError(f"cannot mix sleep stores {first.source} and {other.source}: feature shapes "
                             f"{first.features.shape[1:]} and {other.features.shape[1:]}")
    datasets = [d for p in parts for d in p.night_datasets]
    store_ids = [s for p in parts for s in p.store_ids]
    night_ids = [f"{d}/{s}" for d, s in zip(datasets, store_ids)]
    if len(set(night_ids)) != len(night_ids):
        seen, dup = set(), []
        for n in night_ids:
            (dup.append(n) if n in seen else seen.add(n))
        raise ValueError(f"cannot mix {[p.source for p in parts]}: nights {sorted(set(dup))[:5]} occur more than once")
    dtype = np.result_type(*[p.features.dtype for p in parts])
    features = np.concatenate([p.features.astype(dtype, copy=False) for p in parts])
    night_base = np.cumsum([0] + [p.n_nights for p in parts])
    epoch_base = np.cumsum([0] + [p.n_epochs for p in parts])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + epoch_base[i] for i, p in enumerate(parts)]).astype(np.int64)
    events = [name for name in first.events if all(name in p.events for p in parts)]
    mixed = list(dict.fromkeys(str(p.attrs.get("dataset", "")) for p in parts))
    attrs = {
        "schema": SLEEP_SCHEMA,
        "dataset": "+".join(mixed),
        "audio_fs": first.attrs["audio_fs"],
        "epoch_s": first.attrs["epoch_s"],
        "feature": ref,
        "stages": first.attrs["stages"],
        "n_nights": len(night_ids),
        "n_epochs": int(offsets[-1]),
        "events": events,
        "parts": [{"dataset": p.attrs.get("dataset"), "source": p.source, "n_nights": p.n_nights,
                   "n_epochs": p.n_epochs} for p in parts],
    }
    return SleepArrays(
        features=features,
        stages=np.concatenate([p.stages for p in parts]).astype(np.int8),
        night=np.concatenate([p.night.astype(np.int32) + night_base[i] for i, p in enumerate(parts)]).astype(np.int32),
        index=np.concatenate([p.index for p in parts]).astype(np.int32),
        night_ids=night_ids,
        labeled=np.concatenate([p.labeled for p in parts]).astype(bool),
        offsets=offsets,
        attrs=attrs,
        events={name: np.concatenate([p.events[name] for p in parts]).astype(np.float32) for name in events},
        source=" + ".join(p.source for p in parts),
        night_datasets=datasets,
        store_ids=store_ids,
    )


def _nights(arrays: SleepArrays, night_indices: Sequence[int] | None) -> np.ndarray:
    nights = np.arange(arrays.n_nights) if night_indices is None else np.asarray(night_indices, dtype=np.int64)
    if len(nights) and (nights.min() < 0 or nights.max() >= arrays.n_nights):
        raise IndexError(f"{arrays.source}: night indices must be in 0..{arrays.n_nights - 1}")
    return nights


def short_nights(arrays: SleepArrays, night_indices: Sequence[int] | None, seq_len: int) -> list[int]:
    """The nights (indices) with fewer than ``seq_len`` epochs, which :func:`sequence_starts` skips."""
    nights = _nights(arrays, night_indices)
    lengths = np.diff(arrays.offsets)[nights]
    return nights[lengths < seq_len].tolist()


def sequence_starts(arrays: SleepArrays, night_indices: Sequence[int] | None, seq_len: int,
                    stride: int) -> np.ndarray:
    """Global start epochs (int64) of windows of ``seq_len`` consecutive epochs within single nights
    (``None``: all nights), every ``stride`` epochs, the last one of each night aligned to its end, so that
    every epoch is covered when stride <= seq_len. Nights shorter than ``seq_len`` are skipped with a
    warning (:func:`short_nights` lists them)."""
    if seq_len < 1 or stride < 1:
        raise ValueError(f"seq_len and stride must be at least 1, got {seq_len} and {stride}")
    nights = _nights(arrays, night_indices)
    starts = []
    skipped = []
    for k in nights:
        lo, hi = int(arrays.offsets[k]), int(arrays.offsets[k + 1])
        if hi - lo < seq_len:
            skipped.append(arrays.night_ids[k])
            continue
        starts.append(lo + window_starts(hi - lo, seq_len, stride))
    if skipped:
        log.warning("%s: %d of %d nights are shorter than %d epochs and give no sequence: %s%s", arrays.source,
                    len(skipped), len(nights), seq_len, ", ".join(skipped[:5]), " ..." if len(skipped) > 5 else "")
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)


class SequenceDataset(Dataset):
    """Windows of ``seq_len`` epochs starting at ``starts``: ``(x float32 (seq_len, n_mels, frames), y int64
    (seq_len,))``; y is the ``n_classes`` view of the stages (-1: unscored or unlabeled), all -1 when
    ``n_classes`` is None (unlabeled use). ``__getitems__`` returns whole batches; use
    :func:`collate_batch` as the DataLoader's ``collate_fn``."""

    def __init__(self, arrays: SleepArrays, starts: np.ndarray, seq_len: int, n_classes: int | None):
        self.arrays = arrays
        self.seq_len = int(seq_len)
        self.starts = np.asarray(starts, dtype=np.int64)
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        if len(self.starts):
            ends = self.starts + self.seq_len - 1
            if self.starts.min() < 0 or ends.max() >= arrays.n_epochs:
                raise ValueError(f"{arrays.source}: sequences must lie within the {arrays.n_epochs} epochs")
            crossing = np.flatnonzero(arrays.night[self.starts] != arrays.night[ends])
            if len(crossing):
                raise ValueError(f"{arrays.source}: {len(crossing)} sequences cross a night boundary "
                                 f"(first starts at epoch {int(self.starts[crossing[0]])})")
        self.n_classes = n_classes
        if n_classes is None:
            self.labels = np.full(arrays.n_epochs, UNSCORED, np.int64)
        else:
            self.labels = to_view(arrays.stages, int(n_classes))
        self._steps = np.arange(self.seq_len, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.starts[np.asarray(indices, dtype=np.int64)][:, None] + self._steps[None, :]
        # the gather copies; torch's half → float conversion is about twice as fast as numpy's
        return torch.from_numpy(self.arrays.features[pos]).float(), torch.from_numpy(self.labels[pos])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def accumulate_windows(starts: np.ndarray, seq_len: int, window_values, n_epochs: int) -> np.ndarray:
    """Per-epoch mean (n_epochs, C) of per-window values (n, seq_len, C) (logits or probabilities) over the
    windows covering each epoch; NaN for epochs no window covers."""
    if isinstance(window_values, torch.Tensor):
        window_values = window_values.detach().cpu().numpy()
    values = np.asarray(window_values)
    starts = np.asarray(starts, dtype=np.int64)
    if values.ndim != 3 or values.shape[:2] != (len(starts), seq_len):
        raise ValueError(f"window values of shape {values.shape}, expected ({len(starts)}, {seq_len}, C)")
    pos = (starts[:, None] + np.arange(seq_len)[None, :]).ravel()
    if len(pos) and (pos.min() < 0 or pos.max() >= n_epochs):
        raise ValueError(f"windows reach outside the {n_epochs} epochs")
    flat = values.reshape(len(pos), -1).astype(np.float64)
    count = np.bincount(pos, minlength=n_epochs).astype(np.float64)
    total = np.stack([np.bincount(pos, weights=flat[:, c], minlength=n_epochs) for c in range(flat.shape[1])],
                     axis=1) if flat.shape[1] else np.zeros((n_epochs, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count[:, None]
    mean[count == 0] = np.nan
    return mean.astype(np.result_type(values.dtype, np.float32))


def normalize_nights(arrays: SleepArrays, frame_step: int = 10) -> SleepArrays:
    """Subtract from every night's features, per mel bin, its median over the night (dB), in place.

    A per-recording normalisation: a microphone's gain and colouring and the room's constant background become
    a per-bin offset of the log-mel values, which this removes, while the differences between the epochs of a
    night (the stages) stay. The median is taken over every ``frame_step``-th frame of the night.
    """
    for k in range(len(arrays.night_ids)):
        a, b = int(arrays.offsets[k]), int(arrays.offsets[k + 1])
        if b > a:
            sample = arrays.features[a:b, :, ::frame_step].astype(np.float32)
            median = np.median(sample.transpose(1, 0, 2).reshape(sample.shape[1], -1), axis=1)
            arrays.features[a:b] -= median[None, :, None].astype(arrays.features.dtype)
    return arrays
