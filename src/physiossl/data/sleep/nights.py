"""What the sleep sources share to turn recordings into nights of a ``physiossl.sleep/1`` store: audio read in blocks
of :data:`READ_BLOCK_S` seconds, cut into 30 s epochs of log-mel features as it arrives (:class:`EpochAccumulator`),
features spilled to a scratch file so that no process holds a whole night (:class:`SpilledFeatures`), nights loaded
in worker processes in order (:func:`ordered_map`) and the conversion routine that writes them (:func:`write_nights`).
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..convert import Conversion
from .features import EPOCH_S, epoch_features
from .store import SleepStoreWriter

log = logging.getLogger(__name__)

#: seconds of audio read (and resampled) at a time
READ_BLOCK_S = 300


class EpochAccumulator:
    """Cut audio that arrives piece by piece into 30 s epochs of log-mel features; the same features as
    :func:`physiossl.data.sleep.features.epoch_features` on the concatenated audio (every epoch is framed on its
    own)."""

    def __init__(self, features: dict, sink: Callable[[np.ndarray], None] | None = None):
        self.features = features
        self.epoch_samples = EPOCH_S * int(features["audio_fs"])
        self.carry = np.zeros(0, dtype=np.float32)
        self.parts: list[np.ndarray] = []
        self.samples = 0
        self.sink = sink          # given: the features of each piece go there instead of being kept
        self.n_epochs = 0

    def add(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio, dtype=np.float32)
        self.samples += len(audio)
        buf = np.concatenate([self.carry, audio]) if len(self.carry) else audio
        n = len(buf) // self.epoch_samples * self.epoch_samples
        if n:
            feats = epoch_features(buf[:n], self.features)
            self.n_epochs += len(feats)
            if self.sink is not None:
                self.sink(feats)
            else:
                self.parts.append(feats)
        self.carry = buf[n:].copy()

    def result(self) -> np.ndarray:
        """Features (E, n_mels, frames) of the complete epochs so far (the trailing partial epoch is dropped)."""
        if self.sink is not None:
            raise RuntimeError("the features went to the sink; an EpochAccumulator with a sink keeps none")
        if not self.parts:
            return epoch_features(np.zeros(0, dtype=np.float32), self.features)
        return np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]


# epochs per block when a spilled night is copied into the store (one chunk; 18 MB at 48 mels)
SPILL_BLOCK_EPOCHS = 64


@dataclass
class SpilledFeatures:
    """A night's features (E, n_mels, frames) float32 in a scratch file, written part by part as the night is
    featurised and read back in blocks of epochs: neither the worker that featurises a night nor the writer holds
    a whole night (an 8-hour night at the published settings is 276 MB of float32 features)."""

    path: Path
    shape: tuple[int, int]
    n_epochs: int = 0

    def write(self, feats: np.ndarray) -> None:
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        with open(self.path, "ab") as fh:
            fh.write(feats.tobytes())
        self.n_epochs += len(feats)

    def __len__(self) -> int:
        return self.n_epochs

    def blocks(self, epochs: int = SPILL_BLOCK_EPOCHS) -> Iterator[np.ndarray]:
        size = self.shape[0] * self.shape[1]
        with open(self.path, "rb") as fh:
            for e0 in range(0, self.n_epochs, epochs):
                k = min(epochs, self.n_epochs - e0)
                block = np.fromfile(fh, dtype=np.float32, count=k * size)
                if block.size != k * size:
                    raise OSError(f"{self.path}: {block.size // size} of {k} epochs at epoch {e0} (truncated?)")
                yield block.reshape(k, *self.shape)

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)


@dataclass
class NightResult:
    """A converted night (features, stages, events, provenance) or the reason it is quarantined (``error``)."""

    night_id: str
    features: np.ndarray | None = None
    stages: np.ndarray | None = None
    events: dict[str, np.ndarray] | None = None
    provenance: dict | None = None
    error: str | None = None


def ordered_map(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """``fn`` over ``items`` in order; with ``workers`` > 1 in that many spawned processes, at most
    2 × workers results held at a time."""
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    try:
        it = iter(items)
        pending = deque(pool.submit(fn, item) for item in islice(it, 2 * workers))
        while pending:
            result = pending.popleft().result()
            for item in islice(it, 1):
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def write_nights(tasks: Sequence, load: Callable[[Any], NightResult], raw_dir: Path, out: Path, *, dataset: str,
                 features: dict, channels: list[str], source_version: str, events: Sequence[str], labeled: bool,
                 provenance: dict, max_quarantine_fraction: float, workers: int, progress: bool) -> Path:
    """The conversion routine of sleep sources: load every night (``load(task)`` in ``workers`` processes; a task
    has a ``night_id``) and write them, in the order of ``tasks``, to the sleep store ``out`` through a
    :class:`physiossl.data.convert.Conversion` (a night that fails is quarantined with its reason, a night id seen
    twice too; above ``max_quarantine_fraction`` the store is refused); each night's provenance is recorded."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    conversion = Conversion(raw_dir, out, len(tasks), max_fraction=max_quarantine_fraction, desc=dataset,
                            unit="nights", ids="night id", progress=progress)
    nights: dict[str, dict] = {}
    with SleepStoreWriter.open(out, dataset=dataset, feature=features, channels=channels,
                               source_version=source_version, events=events) as writer:
        for result in conversion.track(ordered_map(load, tasks, workers), total=len(tasks)):
            with conversion.record(result.night_id):
                try:
                    conversion.claim(result.night_id)
                    if result.error is not None:
                        raise ValueError(result.error)
                    stages = result.stages if labeled else None
                    if isinstance(result.features, SpilledFeatures):    # streamed from its scratch file by blocks
                        writer.add_night_blocks(result.night_id, result.features.blocks(), len(result.features),
                                                stages, labeled, result.events)
                    else:
                        writer.add_night(result.night_id, result.features, stages, labeled, result.events)
                except ValueError as exc:
                    log.warning("%s: quarantined night %s: %s", dataset, result.night_id, exc)
                    raise
                finally:
                    if isinstance(result.features, SpilledFeatures):
                        result.features.remove()
                nights[result.night_id] = result.provenance
        conversion.finish(writer.finish, {**provenance, "nights": nights, "quarantined": conversion.quarantined})
    return Path(out)
