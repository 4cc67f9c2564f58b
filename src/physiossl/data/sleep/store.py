"""The sleep store contract (``physiossl.sleep/1``): write, validate and open chunked Zarr v3 stores of
per-epoch audio features with sleep stages and event coverage.

Layout (a public format; docs/stores.md). E epochs of 30 s from ``n_nights`` nights, night after night:

- attrs: ``schema: "physiossl.sleep/1"``, ``dataset``, ``source_version``, ``audio_fs``, ``epoch_s: 30``,
  ``feature`` (:func:`physiossl.data.sleep.features.feature_attrs`: ``type: "log-mel"``, ``scale: "dB"``, the
  parameters ``audio_fs n_mels n_fft win hop fmin fmax``, ``frames`` per epoch and the framing),
  ``channels`` (the audio channels that were mixed to mono), ``stages`` (``["W", "N1", "N2", "N3", "REM"]``),
  ``n_nights``, ``n_epochs``, ``n_labeled_nights``, ``events`` (names of the event arrays), ``provenance``,
  ``created_with``, ``created_at``.
- ``features`` float16 (E, n_mels, frames): log-mel dB values. float16 halves the size of a night (an
  8-hour night at the published settings: 960 × 48 × 1499 values, 138 MB instead of 276 MB); it keeps
  about 3 significant digits, i.e. an error below 0.03 dB for values within ±64 dB, far below the
  variation of the features. The loading layer hands out float32. Chunks of 64 epochs (the unit of a
  block read), shards of 256 epochs (one file each: about four per 8-hour night), so a store has few files
  and the writer, which holds one shard and encodes it when it is full, needs little memory (docs/sizing.md).
- ``epochs/night`` int32 (E,): the night of each epoch (index into ``nights/*``); ``epochs/index`` int32
  (E,): the position of the epoch in its night, from 0.
- ``nights/offsets`` int64 (n_nights + 1,): night k holds epochs ``offsets[k]:offsets[k + 1]``;
  ``nights/id`` strings; ``nights/labeled`` bool: whether the night was scored.
- ``labels/stage`` int8 (E,): W, N1, N2, N3, REM as 0..4; -1 for unscored epochs and for every epoch of an
  unlabeled night. The 4- and 3-class views are derived at load time (:mod:`physiossl.data.sleep.stages`).
- ``events/<name>`` float32 (E,) for every name in the ``events`` attr: the seconds (0..30) of the epoch
  covered by events of that type (e.g. ``ObstructiveApnea``, ``Hypopnea``, ``Snore``); 0 where a night has
  none.

Nights are appended in call order and features are written shard by shard, so a conversion never holds
more than one shard of features in memory. Stores are written to a temporary sibling directory and renamed
into place, so a killed conversion never leaves a store that looks complete. Conversions quarantine nights
with :func:`write_quarantine` / :func:`quarantine_path` (shared with the ECG store).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import zarr

from ... import __version__
from ..store import StoreError, check_files, create_array, quarantine_path, reading, store_dir, write_quarantine
from .features import EPOCH_S, FEATURE_KEYS, check_features, feature_attrs, features_from_attrs
from .stages import STAGES, UNSCORED

__all__ = ["SLEEP_SCHEMA", "EPOCH_S", "CHUNK_EPOCHS", "SHARD_EPOCHS", "SleepStoreWriter", "validate_sleep_store",
           "open_sleep_store", "read_nights", "StoreError", "quarantine_path", "write_quarantine"]

log = logging.getLogger(__name__)

SLEEP_SCHEMA = "physiossl.sleep/1"
CHUNK_EPOCHS = 64       # epochs per chunk: the unit of a block read
SHARD_EPOCHS = 256      # epochs per shard file: the unit of a write (37 MB of features at the published settings)
FEATURE_DTYPE = np.float16
_F16_MAX = float(np.finfo(np.float16).max)

REQUIRED_ATTRS = ("schema", "dataset", "source_version", "audio_fs", "epoch_s", "feature", "channels", "stages",
                  "n_nights", "n_epochs", "events", "provenance", "created_with")


class SleepStoreWriter:
    """Append nights one by one; features go to disk shard by shard, the per-epoch arrays at the end.

    Use :meth:`open` as a context manager: the store only appears at ``path`` when the block finishes
    without an exception and :meth:`finish` was called.
    """

    def __init__(self, root: zarr.Group, *, dataset: str, feature: dict, channels: Sequence[str],
                 source_version: str = "", events: Sequence[str] = (), shard_epochs: int = SHARD_EPOCHS):
        if isinstance(feature, dict) and "type" in feature:     # another store's feature attr
            feature = features_from_attrs(feature)
        problems = check_features(feature, key="feature")
        if problems:
            raise StoreError(f"dataset {dataset}: " + "; ".join(problems))
        self.root = root
        self.dataset = str(dataset)
        self.source_version = str(source_version)
        self.feature = feature_attrs(feature, EPOCH_S)
        self.channels = [str(c) for c in channels]
        self.events = [str(e) for e in events]
        if len(set(self.events)) != len(self.events):
            raise StoreError(f"dataset {dataset}: duplicate event names in {self.events}")
        bad = [e for e in self.events if not e or "/" in e]
        if bad:
            raise StoreError(f"dataset {dataset}: event names must be non-empty and without '/': {bad}")
        shard_epochs = int(shard_epochs)
        chunk = min(CHUNK_EPOCHS, shard_epochs)
        if shard_epochs < 1 or shard_epochs % chunk:
            raise StoreError(f"shard_epochs must be a positive multiple of {CHUNK_EPOCHS} (or smaller), "
                             f"got {shard_epochs}")
        self.shard_epochs = shard_epochs
        self._shape = (self.feature["n_mels"], self.feature["frames"])
        self.features = create_array(
            root, "features", shape=(shard_epochs, *self._shape), dtype=FEATURE_DTYPE,
            chunks=(chunk, *self._shape), shards=(shard_epochs, *self._shape), fill_value=0.0,
        )
        self._buffer = np.zeros((shard_epochs, *self._shape), dtype=FEATURE_DTYPE)
        self._buffered = 0
        self._written = 0
        self.night_ids: list[str] = []
        self._ids: set[str] = set()
        self.labeled: list[bool] = []
        self.lengths: list[int] = []
        self.stages: list[np.ndarray] = []
        self.event_values: dict[str, list[np.ndarray]] = {e: [] for e in self.events}
        self.finished = False

    @classmethod
    @contextmanager
    def open(cls, path: Path, *, dataset: str, feature: dict, channels: list[str], source_version: str = "",
             events: Sequence[str] = (), shard_epochs: int = SHARD_EPOCHS) -> Iterator["SleepStoreWriter"]:
        """A writer of log-mel ``feature`` (the :data:`~physiossl.data.sleep.features.FEATURE_KEYS` parameter set,
        or another store's ``feature`` attr) of the mono mix of ``channels``, with one ``events/<name>`` array per
        name in ``events``; ``shard_epochs`` (a multiple of 64) sets the epochs per shard file."""
        with store_dir(Path(path)) as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            writer = cls(root, dataset=dataset, feature=feature, channels=channels, source_version=source_version,
                         events=events, shard_epochs=shard_epochs)
            yield writer
            if not writer.finished:
                raise RuntimeError(f"{path}: SleepStoreWriter.finish() was not called")

    @property
    def n_nights(self) -> int:
        return len(self.night_ids)

    @property
    def n_epochs(self) -> int:
        return self._written + self._buffered

    def add_night(self, night_id: str, features: np.ndarray, stages: np.ndarray | None, labeled: bool,
                  events: Mapping[str, np.ndarray] | None = None) -> None:
        """Append one night: ``features`` (E, n_mels, frames) in dB, ``stages`` (E,) integers in -1..4 (None for
        an unlabeled night, then ``labeled`` must be False), ``events`` {name: (E,) seconds covered per epoch}
        for names given to :meth:`open` (missing names: 0)."""
        if self.finished:
            raise RuntimeError(f"night {night_id}: the store is already finished")
        night_id = str(night_id)
        if not night_id:
            raise ValueError("a night needs a non-empty id")
        if night_id in self._ids:
            raise ValueError(f"night {night_id}: added twice")
        features = np.asarray(features)
        if features.ndim != 3 or features.shape[1:] != self._shape:
            raise ValueError(f"night {night_id}: features of shape {features.shape}, expected "
                             f"(E, {self._shape[0]}, {self._shape[1]}) (n_mels, frames per epoch)")
        if not np.issubdtype(features.dtype, np.floating):
            raise ValueError(f"night {night_id}: features must be floating point, got {features.dtype}")
        n = features.shape[0]
        if n == 0:
            raise ValueError(f"night {night_id}: no complete {EPOCH_S} s epoch")
        half = features.astype(FEATURE_DTYPE)
        if not np.isfinite(half).all():
            bad = ~np.isfinite(features)
            what = "NaN or infinite" if bad.any() else f"beyond the float16 range ±{_F16_MAX:g}"
            raise ValueError(f"night {night_id}: features have values {what}")
        stage_values = self._check_stages(night_id, stages, labeled, n)
        event_values = self._check_events(night_id, events, n)
        self._append_features(half)
        self._record_night(night_id, labeled, n, stage_values, event_values)

    def add_night_blocks(self, night_id: str, blocks: Iterable[np.ndarray], n_epochs: int,
                         stages: np.ndarray | None, labeled: bool,
                         events: Mapping[str, np.ndarray] | None = None) -> None:
        """:meth:`add_night` for a night whose features arrive as consecutive blocks of epochs (``n_epochs`` in all),
        so that a long night is never held in memory: each block is checked and appended as it comes. A bad block or
        a wrong total raises ValueError and leaves the store as it was before the night."""
        if self.finished:
            raise RuntimeError(f"night {night_id}: the store is already finished")
        night_id = str(night_id)
        if not night_id:
            raise ValueError("a night needs a non-empty id")
        if night_id in self._ids:
            raise ValueError(f"night {night_id}: added twice")
        n = int(n_epochs)
        if n <= 0:
            raise ValueError(f"night {night_id}: no complete {EPOCH_S} s epoch")
        stage_values = self._check_stages(night_id, stages, labeled, n)
        event_values = self._check_events(night_id, events, n)
        start, got = self.n_epochs, 0
        try:
            for block in blocks:
                block = np.asarray(block)
                if block.ndim != 3 or block.shape[1:] != self._shape:
                    raise ValueError(f"night {night_id}: feature block of shape {block.shape}, expected "
                                     f"(e, {self._shape[0]}, {self._shape[1]}) (n_mels, frames per epoch)")
                if not np.issubdtype(block.dtype, np.floating):
                    raise ValueError(f"night {night_id}: features must be floating point, got {block.dtype}")
                half = block.astype(FEATURE_DTYPE)
                if not np.isfinite(half).all():
                    bad = ~np.isfinite(block)
                    what = "NaN or infinite" if bad.any() else f"beyond the float16 range ±{_F16_MAX:g}"
                    raise ValueError(f"night {night_id}: features have values {what}")
                if got + len(half) > n:
                    raise ValueError(f"night {night_id}: more than the {n} epochs of features announced")
                self._append_features(half)
                got += len(half)
            if got != n:
                raise ValueError(f"night {night_id}: {got} epochs of features, {n} announced")
        except BaseException:
            self._rewind(start)
            raise
        self._record_night(night_id, labeled, n, stage_values, event_values)

    def _record_night(self, night_id: str, labeled: bool, n: int, stage_values: np.ndarray,
                      event_values: dict[str, np.ndarray]) -> None:
        self.night_ids.append(night_id)
        self._ids.add(night_id)
        self.labeled.append(bool(labeled))
        self.lengths.append(n)
        self.stages.append(stage_values)
        for name in self.events:
            self.event_values[name].append(event_values[name])

    def _rewind(self, epoch: int) -> None:
        """Drop the features from ``epoch`` on (a night that failed half way): the buffer is refilled from the
        last shard written when that shard holds earlier epochs; later writes overwrite the rest."""
        if epoch >= self._written:
            self._buffered = epoch - self._written
            return
        shard = epoch // self.shard_epochs * self.shard_epochs
        self._buffer[:epoch - shard] = self.features[shard:epoch]
        self._written, self._buffered = shard, epoch - shard

    @staticmethod
    def _check_stages(night_id: str, stages: np.ndarray | None, labeled: bool, n: int) -> np.ndarray:
        if stages is None:
            if labeled:
                raise ValueError(f"night {night_id}: labeled=True but no stages given")
            return np.full(n, UNSCORED, np.int8)
        stages = np.asarray(stages)
        if stages.shape != (n,):
            raise ValueError(f"night {night_id}: stages of shape {stages.shape}, expected ({n},) like the features")
        if not (np.issubdtype(stages.dtype, np.integer) and stages.dtype != np.bool_):
            raise ValueError(f"night {night_id}: stages must be integers, got {stages.dtype}")
        bad = (stages < UNSCORED) | (stages >= len(STAGES))
        if bad.any():
            raise ValueError(f"night {night_id}: stages outside {UNSCORED}..{len(STAGES) - 1}: "
                             f"{np.unique(stages[bad]).tolist()}")
        if not labeled and (stages != UNSCORED).any():
            raise ValueError(f"night {night_id}: labeled=False but stages are given; pass stages=None or all "
                             f"{UNSCORED} for an unlabeled night")
        return stages.astype(np.int8)

    def _check_events(self, night_id: str, events: Mapping[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
        events = dict(events or {})
        unknown = sorted(set(events) - set(self.events))
        if unknown:
            raise ValueError(f"night {night_id}: unknown events {unknown} (store events: {self.events})")
        out = {}
        for name in self.events:
            if name not in events:
                out[name] = np.zeros(n, np.float32)
                continue
            values = np.asarray(events[name], dtype=np.float64)
            if values.shape != (n,):
                raise ValueError(f"night {night_id}: events {name!r} of shape {values.shape}, expected ({n},)")
            if not np.isfinite(values).all() or (values < 0).any() or (values > EPOCH_S + 1e-3).any():
                raise ValueError(f"night {night_id}: events {name!r} must be seconds within 0..{EPOCH_S} per epoch")
            out[name] = np.clip(values, 0, EPOCH_S).astype(np.float32)
        return out

    def _append_features(self, half: np.ndarray) -> None:
        pos = 0
        while pos < len(half):
            take = min(len(half) - pos, self.shard_epochs - self._buffered)
            self._buffer[self._buffered:self._buffered + take] = half[pos:pos + take]
            self._buffered += take
            pos += take
            if self._buffered == self.shard_epochs:
                self._flush()

    def _flush(self) -> None:
        """Write the buffered epochs as one shard-aligned block."""
        if not self._buffered:
            return
        stop = self._written + self._buffered
        if stop > self.features.shape[0]:
            self.features.resize((stop, *self._shape))
        self.features[self._written:stop] = self._buffer[:self._buffered]
        self._written = stop
        self._buffered = 0

    def finish(self, provenance: dict) -> None:
        """Write the last shard, the per-epoch and per-night arrays and the attrs."""
        if self.finished:
            raise RuntimeError(f"dataset {self.dataset}: finish() called twice")
        if self.n_nights == 0:
            raise StoreError(f"dataset {self.dataset}: no night was added; a sleep store needs at least one night")
        self._flush()
        n = self._written
        self.features.resize((n, *self._shape))
        lengths = np.asarray(self.lengths, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        night = np.repeat(np.arange(self.n_nights, dtype=np.int32), lengths)
        index = (np.arange(n, dtype=np.int64) - np.repeat(offsets[:-1], lengths)).astype(np.int32)
        root = self.root

        def put(name: str, values: np.ndarray, dtype) -> None:
            create_array(root, name, shape=values.shape, dtype=dtype, chunks=values.shape)[:] = values

        put("epochs/night", night, "int32")
        put("epochs/index", index, "int32")
        put("nights/offsets", offsets, "int64")
        put("nights/id", np.array(self.night_ids, dtype=str), str)
        put("nights/labeled", np.asarray(self.labeled, bool), "bool")
        put("labels/stage", np.concatenate(self.stages).astype(np.int8), "int8")
        for name in self.events:
            put(f"events/{name}", np.concatenate(self.event_values[name]).astype(np.float32), "float32")
        root.attrs.update({
            "schema": SLEEP_SCHEMA,
            "dataset": self.dataset,
            "source_version": self.source_version,
            "audio_fs": self.feature["audio_fs"],
            "epoch_s": EPOCH_S,
            "feature": self.feature,
            "channels": self.channels,
            "stages": list(STAGES),
            "n_nights": self.n_nights,
            "n_epochs": int(n),
            "n_labeled_nights": int(sum(self.labeled)),
            "events": list(self.events),
            "provenance": provenance,
            "created_with": f"physiossl {__version__}",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        log.info("%s: %d nights (%d labeled), %d epochs", self.dataset, self.n_nights, sum(self.labeled), n)
        self.finished = True


# --------------------------------------------------------------------------------------------- validation
def _group(path: Path) -> zarr.Group:
    check_files(path)
    return zarr.open_group(str(path), mode="r")


def _array(root: zarr.Group, key: str, shape: tuple, path: Path) -> zarr.Array:
    if key not in root or not isinstance(root[key], zarr.Array):
        raise StoreError(f"{path}: array {key} is missing")
    arr = root[key]
    if arr.shape != shape:
        raise StoreError(f"{path}: {key} has shape {arr.shape}, expected {shape}")
    return arr


def _validate(root: zarr.Group, path: Path) -> dict:
    attrs = dict(root.attrs)
    if "schema" in attrs and attrs["schema"] != SLEEP_SCHEMA:
        raise StoreError(f"{path}: schema {attrs['schema']!r}, expected {SLEEP_SCHEMA!r}")
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise StoreError(f"{path}: missing attrs {missing}")
    if list(attrs["stages"]) != list(STAGES):
        raise StoreError(f"{path}: stages {attrs['stages']}, expected {list(STAGES)}")
    feature = attrs["feature"]
    if not isinstance(feature, dict) or any(k not in feature for k in (*FEATURE_KEYS, "frames")):
        raise StoreError(f"{path}: feature attr must give {', '.join(FEATURE_KEYS)} and frames, got {feature}")
    if feature["audio_fs"] != attrs["audio_fs"]:
        raise StoreError(f"{path}: audio_fs {attrs['audio_fs']} differs from feature.audio_fs {feature['audio_fs']}")
    n_nights, n = attrs["n_nights"], attrs["n_epochs"]
    if not (isinstance(n_nights, int) and n_nights >= 1 and isinstance(n, int) and n >= n_nights):
        raise StoreError(f"{path}: n_nights {n_nights} and n_epochs {n} must be positive, with at least one "
                         f"epoch per night")
    feat = _array(root, "features", (n, feature["n_mels"], feature["frames"]), path)
    if not np.issubdtype(feat.dtype, np.floating):
        raise StoreError(f"{path}: features have dtype {feat.dtype}, expected float16")
    night = _array(root, "epochs/night", (n,), path)[:]
    index = _array(root, "epochs/index", (n,), path)[:]
    offsets = _array(root, "nights/offsets", (n_nights + 1,), path)[:]
    _array(root, "nights/id", (n_nights,), path)
    labeled = _array(root, "nights/labeled", (n_nights,), path)[:]
    stage = _array(root, "labels/stage", (n,), path)
    for name in attrs["events"]:
        _array(root, f"events/{name}", (n,), path)
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != n or (lengths < 1).any():
        raise StoreError(f"{path}: nights/offsets must rise strictly from 0 to n_epochs {n}, got "
                         f"{offsets[:3].tolist()}...{offsets[-2:].tolist()}")
    if not np.array_equal(night, np.repeat(np.arange(n_nights), lengths)):
        first = int(np.flatnonzero(night != np.repeat(np.arange(n_nights), lengths))[0])
        raise StoreError(f"{path}: epochs/night does not match nights/offsets (first at epoch {first})")
    expected = np.arange(n) - np.repeat(offsets[:-1], lengths)
    if not np.array_equal(index, expected):
        first = int(np.flatnonzero(index != expected)[0])
        raise StoreError(f"{path}: epochs/index does not count the epochs of each night from 0 "
                         f"(first at epoch {first})")
    if stage.dtype != np.int8:
        raise StoreError(f"{path}: labels/stage has dtype {stage.dtype}, expected int8")
    stage = stage[:]
    bad = (stage < UNSCORED) | (stage >= len(STAGES))
    if bad.any():
        raise StoreError(f"{path}: labels/stage outside {UNSCORED}..{len(STAGES) - 1}: "
                         f"{np.unique(stage[bad]).tolist()}")
    scored_unlabeled = np.flatnonzero(~labeled.astype(bool)[night] & (stage != UNSCORED))
    if len(scored_unlabeled):
        k = int(night[scored_unlabeled[0]])
        raise StoreError(f"{path}: night {str(root['nights/id'][k])!r} is not labeled but has stages")
    return attrs


def validate_sleep_store(path: Path | str) -> dict:
    """Check a sleep store against the contract; its attrs, or StoreError naming the store and the problem."""
    path = Path(path)
    return _validate(_group(path), path)


def open_sleep_store(path: Path | str) -> zarr.Group:
    """Open a sleep store read-only after checking the contract."""
    path = Path(path)
    with reading(path, "its metadata"):
        root = _group(path)
        _validate(root, path)
    return root


def read_nights(root: zarr.Group) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Night ids, offsets int64 (n_nights + 1,) and labeled flags bool (n_nights,) of an open store."""
    ids = [str(x) for x in root["nights/id"][:]]
    return ids, np.asarray(root["nights/offsets"][:], np.int64), np.asarray(root["nights/labeled"][:], bool)
