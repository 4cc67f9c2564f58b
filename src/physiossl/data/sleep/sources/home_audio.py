"""Unlabeled home sleep recordings: a folder of WAV/FLAC files → sleep store (every night unlabeled), and a demo.

Layout: any folder, searched recursively for ``*.wav`` and ``*.flac`` (any case); every file is one night, whose
id is its path relative to the folder without the extension (``alice/2024-05-01.flac`` → ``alice/2024-05-01``).
Hidden files and folders (a leading ``.``) are skipped.

Conversion decisions:

- **Channels.** ``channels=None`` mixes every channel of a file to mono (the mean). Otherwise ``channels`` lists
  0-based channel indices or the names ``"left"`` (0) / ``"right"`` (1); the chosen channels are mixed. A file
  without a requested channel is quarantined.
- **Audio.** Files are read with soundfile as float32 in [-1, 1], in blocks of
  :data:`~physiossl.data.sleep.nights.READ_BLOCK_S` seconds, mixed, resampled to ``features["audio_fs"]``
  with the polyphase filter of :func:`physiossl.data.sleep.features.resample_audio` (blocks overlap by a margin wider
  than the filter, so the result equals resampling the whole file), and cut into ``floor(duration / 30)``
  epochs of log-mel features (:func:`physiossl.data.sleep.features.epoch_features`); the trailing partial epoch is
  dropped and its length recorded per night (``dropped_s``).
- **Labels.** Every night is stored with ``labeled = False`` and stages -1; the event arrays
  (:data:`~physiossl.data.sleep.stages.EVENT_TYPES`, so that home and PSG-Audio stores have the same
  arrays) are all 0.
- **Quarantine** (record = night id), with a reason: a file soundfile cannot read (or that fails while
  reading), a file shorter than one 30 s epoch, non-finite samples, a requested channel the file lacks, and the
  checks every source shares (:mod:`._checks`, docs/data-quality.md): a WAV whose chunks disagree with its size or
  a file that ends before its declared samples (``sample count mismatch``), a mixed channel constant over the whole
  recording (``flat lead``; every one, i.e. silence: ``flat record``). A ``SHA256SUMS.txt`` in the folder, when
  there is one, is verified before anything is read. Above
  ``max_quarantine_fraction`` of the files quarantined the conversion fails and leaves no store.
- **Provenance** per night: file, SHA-256, format, sampling rate, channels, duration, epochs, ``dropped_s``.

There is nothing to download: :func:`download` raises with a pointer to the ``local`` mode (a folder of your
recordings) and to :func:`demo`, which writes recordings of synthetic breathing at a hidden hypnogram with
out-of-distribution home noise (fan hum, traffic rumble, TV/speech babble, clicks) at varying SNR, another
microphone colouring than the PSG-Audio demo, WAV and FLAC at 8, 16 and 22.05 kHz, mono and stereo.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import signal
from tqdm import tqdm

from ... import checks
from ...convert import ConversionError
from ...fetch import DownloadError
from ...files import atomic_dir, sha256_file
from ...resample import ResampleError, resample_blocks
from ...sources import register
from ..features import EPOCH_S, AudioError, check_features
from ..nights import READ_BLOCK_S, EpochAccumulator, NightResult, write_nights
from ..stages import EVENT_TYPES
from ..synth import OodNoiseRenderer, plan_breaths, render_breathing, synth_hypnogram, synth_subject

log = logging.getLogger(__name__)

NAME = "home_audio"
SOURCE_VERSION = "local recordings"
URL = ""
EXTENSIONS = (".wav", ".flac")
CHANNEL_NAMES = {"left": 0, "right": 1}
DEMO_RATES = (8000, 16000, 22050)
#: Microphone colouring of the demo's home recorder: a first-order high-pass at this corner (Hz) and a
#: first-order low-pass (phone/recorder bandwidth) between these corners.
DEMO_HIGHPASS_HZ = 150.0
DEMO_LOWPASS_HZ = (2500.0, 6000.0)
DEMO_SNR_DB = (-5.0, 15.0)


# --------------------------------------------------------------------------------------------- download
def download(out_dir: Path, url: str = URL, progress: bool = True) -> Path:
    """Home recordings are not downloaded: always raises :class:`~physiossl.data.fetch.DownloadError`."""
    raise DownloadError(
        f"{NAME}: there is nothing to download (home recordings are your own files). Use mode 'local' with a "
        f"folder of WAV/FLAC recordings (datasets.<name>.local in the config), or mode 'demo' "
        f"(`physiossl demo {NAME}`) for synthetic recordings; not fetched into {out_dir}.")


# --------------------------------------------------------------------------------------------- convert
def parse_channels(channels: Sequence[int | str] | None) -> list[int] | None:
    """0-based channel indices from indices or the names left/right (None: mix every channel)."""
    if channels is None:
        return None
    out = []
    for c in channels:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0:
            out.append(int(c))
        elif isinstance(c, str) and c.strip().lower() in CHANNEL_NAMES:
            out.append(CHANNEL_NAMES[c.strip().lower()])
        elif isinstance(c, str) and c.strip().isdigit():
            out.append(int(c.strip()))
        else:
            raise ValueError(f"channel {c!r}: expected a 0-based index or 'left'/'right'")
    if not out:
        raise ValueError("channels: an empty list selects no audio (use None to mix every channel)")
    return out


@dataclass
class HomeTask:
    night_id: str
    path: Path
    raw_dir: Path
    channels: list[int] | None
    features: dict


def find_recordings(raw_dir: Path) -> list[tuple[str, Path]]:
    """(night id, path) of every WAV/FLAC file below ``raw_dir``, sorted by id; hidden entries skipped."""
    raw_dir = Path(raw_dir)
    found = []
    for path in raw_dir.rglob("*"):
        rel = path.relative_to(raw_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in EXTENSIONS:
            found.append((rel.with_suffix("").as_posix(), path))
    found.sort()
    return found


def check_wav_size(path: Path) -> None:
    """A WAV file's chunks against its size: a ``data`` chunk that runs past the end of the file (truncated) or
    bytes after the last chunk that form no chunk (data the header does not count, which readers skip silently)
    are a ``sample count mismatch``. RF64/BW64 files and a ``data`` size of 0xFFFFFFFF (streamed) are not checked."""
    path = Path(path)
    size = path.stat().st_size
    data, trailing = None, 0
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return                                   # not RIFF/WAVE: the reader decides
            offset = 12
            while offset + 8 <= size:
                fh.seek(offset)
                chunk = fh.read(8)
                if not all(0x20 <= b <= 0x7E for b in chunk[:4]):   # a chunk id is four printable characters
                    trailing = size - offset
                    break
                length = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    if length == 0xFFFFFFFF:
                        return
                    data = (offset + 8, length)
                end = offset + 8 + length
                if end > size:                           # runs past the end of the file
                    trailing = 0 if chunk[:4] == b"data" else size - offset
                    break
                offset = end + (length & 1)              # chunks are padded to an even size
            else:
                trailing = max(size - offset, 0)
    except OSError:
        return
    if data is None:
        return
    start, length = data
    if start + length > size:
        checks.check_sample_count(length, size - start, f"{path.name}: data chunk", unit="bytes")
    if trailing:
        checks.check_sample_count(length, length + trailing, f"{path.name}: {trailing} bytes after the last "
                                                              f"chunk", unit="bytes in the data chunk")


def load_recording(task: HomeTask) -> NightResult:
    """Read, check and featurise one recording; a defect comes back as ``error`` (its reason)."""
    import soundfile

    path, name = task.path, task.path.name
    if path.suffix.lower() == ".wav":
        try:
            check_wav_size(path)
        except ValueError as exc:
            return NightResult(task.night_id, error=str(exc))
    try:
        sf = soundfile.SoundFile(str(path))
    except (RuntimeError, TypeError, ValueError, OSError) as exc:   # LibsndfileError is a RuntimeError
        return NightResult(task.night_id, error=f"unreadable audio file {name}: {exc}")
    with sf:
        fs, n, n_channels = float(sf.samplerate), int(sf.frames), int(sf.channels)
        duration = n / fs if fs > 0 else 0.0
        if duration < EPOCH_S:
            return NightResult(task.night_id, error=f"{name} lasts {duration:.1f} s, shorter than one "
                                                    f"{EPOCH_S} s epoch")
        chosen = list(range(n_channels)) if task.channels is None else task.channels
        lacking = [c for c in chosen if c >= n_channels]
        if lacking:
            return NightResult(task.night_id, error=f"channel(s) {lacking} requested but {name} has "
                                                    f"{n_channels} channel(s)")
        tracker = checks.ConstantTracker(f"channel {c}" for c in chosen)

        def read(start: int, count: int) -> np.ndarray:
            try:
                sf.seek(start)
                block = sf.read(count, dtype="float32", always_2d=True)
            except (RuntimeError, TypeError, ValueError, OSError) as exc:
                raise ValueError(f"unreadable audio file {name} at sample {start}: {exc}") from exc
            if len(block) != count:
                raise checks.defect("sample_count", f"{name}: {len(block)} of {count} samples at sample {start}: "
                                                    f"the file ends before the samples its header declares")
            for c in chosen:
                tracker.update(f"channel {c}", block[:, c])
            x = block[:, chosen].mean(axis=1) if len(chosen) > 1 else block[:, chosen[0]]
            bad = ~np.isfinite(x)
            if bad.any():
                raise ValueError(f"{name}: {int(bad.sum())} non-finite samples (first at sample "
                                 f"{start + int(np.flatnonzero(bad)[0])})")
            return x

        try:
            audio = resample_blocks(read, n, fs, int(task.features["audio_fs"]), READ_BLOCK_S)
            tracker.check(name, unit="recording")   # a silent recording, or a channel without sound
        except (AudioError, ResampleError) as exc:
            return NightResult(task.night_id, error=f"{name}: {exc}")
        except ValueError as exc:
            return NightResult(task.night_id, error=str(exc))
        file_format = f"{sf.format}/{sf.subtype}"
    acc = EpochAccumulator(task.features)
    acc.add(audio)
    feats = acc.result()
    n_epochs = len(feats)
    provenance = {"file": path.relative_to(task.raw_dir).as_posix(), "sha256": sha256_file(path),
                  "format": file_format, "rate_hz": fs, "channels": n_channels,
                  "mixed": "all" if task.channels is None else chosen, "duration_s": duration,
                  "epochs": n_epochs, "dropped_s": round(duration - n_epochs * EPOCH_S, 6)}
    return NightResult(task.night_id, feats, None, {}, provenance)


@register("home_audio")
def convert(raw_dir: Path, out: Path, *, features: dict, channels: list[int | str] | None = None,
            max_quarantine_fraction: float = 0.1, workers: int = 1, progress: bool = True) -> Path:
    """A folder of WAV/FLAC recordings → sleep store ``out`` of unlabeled nights (see the module docstring)."""
    raw_dir, out = Path(raw_dir), Path(out)
    problems = check_features(features, "features")
    if problems:
        raise ValueError("; ".join(problems))
    if not raw_dir.is_dir():
        raise ConversionError(f"{raw_dir}: folder of recordings not found")
    chosen = parse_channels(channels)
    recordings = find_recordings(raw_dir)
    if not recordings:
        raise ConversionError(f"{raw_dir}: no {'/'.join(EXTENSIONS)} recordings found (searched recursively)")
    tree = checks.verify_tree(raw_dir, NAME, absent_level=logging.INFO)   # your own files: a SHA256SUMS.txt is optional
    tasks = [HomeTask(night_id, path, raw_dir, chosen, dict(features)) for night_id, path in recordings]
    provenance = {"raw_dir": str(raw_dir), "layout": "one WAV/FLAC file per night, id = relative path without "
                                                     "extension", "input_checks": checks.provenance(tree),
                  "channels": "mono mix of all channels" if chosen is None else f"mean of channels {chosen}",
                  "resampling": f"polyphase (scipy resample_poly) to {features['audio_fs']} Hz",
                  "labels": "none (unlabeled recordings)"}
    store_channels = ["all"] if chosen is None else [str(c) for c in chosen]
    return write_nights(tasks, load_recording, raw_dir, out, dataset=NAME, features=features,
                        channels=store_channels, source_version=SOURCE_VERSION, events=EVENT_TYPES, labeled=False,
                        provenance=provenance, max_quarantine_fraction=max_quarantine_fraction, workers=workers,
                        progress=progress)


# --------------------------------------------------------------------------------------------- demo
def _colouring(fs: float, rng: np.random.Generator) -> np.ndarray:
    """The demo recorder's microphone response as SOS: high-pass plus a random low-pass (bandwidth)."""
    nyq = fs / 2.0
    lowpass = min(float(rng.uniform(*DEMO_LOWPASS_HZ)), 0.45 * fs)
    hp = signal.butter(1, DEMO_HIGHPASS_HZ / nyq, btype="highpass", output="sos")
    lp = signal.butter(1, lowpass / nyq, btype="lowpass", output="sos")
    return np.concatenate([hp, lp]).astype(np.float32)


def demo_recording(path: Path, rng: np.random.Generator, duration_s: float, fs: int, stereo: bool) -> np.ndarray:
    """Write one synthetic home recording (format from the suffix); returns its hidden hypnogram."""
    import soundfile

    n_samples = int(round(duration_s * fs))
    n_epochs = int(math.ceil(duration_s / EPOCH_S))
    stages = synth_hypnogram(n_epochs, rng)
    subject = synth_subject(rng)
    subject["noise_level"] *= 0.3                 # the room's own noise; the home noise below dominates
    plan = plan_breaths(stages, rng, subject)
    noise = OodNoiseRenderer(n_samples, fs, rng)
    snr_db = float(rng.uniform(*DEMO_SNR_DB))
    breath_rms = 0.05 * subject["gain"] * 0.5      # the rendered mic mix's typical RMS (synth_sleep.OUTPUT_SCALE)
    noise_gain = np.float32(breath_rms / 10 ** (snr_db / 20))
    sos = _colouring(fs, rng)
    zi = np.zeros((sos.shape[0], 2), dtype=np.float32)
    balance = float(rng.uniform(0.6, 1.0))
    written = 0
    with soundfile.SoundFile(str(path), "w", samplerate=fs, channels=2 if stereo else 1, subtype="PCM_16") as out:
        for chunk in render_breathing(plan, fs, rng, subject):
            mic = chunk["mic"][:max(0, n_samples - written)]
            if not len(mic):
                break
            x = mic + noise_gain * noise.next(len(mic))
            x, zi = signal.sosfilt(sos, x, zi=zi)
            x = np.clip(x, -1.0, 1.0).astype(np.float32)
            if stereo:
                other = np.clip(balance * x + 0.01 * rng.standard_normal(len(x)), -1.0, 1.0).astype(np.float32)
                x = np.stack([x, other], axis=1)
            out.write(x)
            written += len(mic)
    return stages


def demo(out_dir: Path, n_records: int = 8, seed: int = 0, *, minutes: tuple[float, float] | float = (20, 40)) -> Path:
    """Write ``n_records`` synthetic home recordings (seeded) in per-household folders: WAV and FLAC
    (alternating; every other FLAC stereo), 8/16/22.05 kHz, ``minutes`` long (uniform, not a whole number of
    epochs)."""
    rng = np.random.default_rng(seed)
    lo, hi = (float(minutes), float(minutes)) if np.isscalar(minutes) else (float(minutes[0]), float(minutes[1]))
    with atomic_dir(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True)
        for k in tqdm(range(n_records), desc="home_audio demo", unit="recording"):
            household = tmp / f"household{k % 3 + 1:02d}"
            household.mkdir(exist_ok=True)
            suffix = ".wav" if k % 2 == 0 else ".flac"
            fs = DEMO_RATES[int(rng.integers(len(DEMO_RATES)))]
            duration = float(rng.uniform(lo * 60, hi * 60))
            demo_recording(household / f"night{k + 1:03d}{suffix}", rng, duration, fs, stereo=k % 4 == 1)
    return Path(out_dir)
