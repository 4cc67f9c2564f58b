"""PSG-Audio (Korompili et al. 2021, Scientific Data, doi 10.1038/s41597-021-00977-w): download from Science Data
Bank (verified against its Croissant export), demo tree, conversion to the sleep store.

Layout of a night (``<id>`` such as ``00000995-100507``)::

    APNEA_EDF/<id>/<id>[001].edf ... <id>[NNN].edf   hour-long EDF(+) parts of the night, in the order of their
                                                    number (``[1]`` and ``[001]`` both read as part 1)
    APNEA_RML/<id>.rml                              Philips Respironics Sleepware scoring (XML)

RML: namespace ``http://www.respironics.com/PatientStudy.xsd``, root ``PatientStudy``. Read are
``Acquisition/Sessions/Session`` (``RecordingStart``, ``Duration``, ``Segments/Segment/Duration``: one segment
per EDF part), the staging ``ScoringData/StagingData/UserStaging/NeuroAdultAASMStaging/Stage`` (``@Type`` Wake,
NonREM1, NonREM2, NonREM3, REM, NotScored, plus R&K's NonREM4 read as N3; ``@Start`` seconds) and the events
``ScoringData/Events/Event`` (``@Family @Type @Start @Duration``).

Conversion decisions:

- **Stages.** A ``Stage`` is a change point: its stage holds until the next ``Start``; the last one holds to the
  end of the recording. Epoch ``e`` covers ``[30 e, 30 e + 30)`` s and takes the stage of the last change point
  with ``Start < 30 (e + 1)``: a ``Start`` that is not a multiple of 30 s (not expected from Sleepware) moves to
  the start of the epoch containing it; their number is recorded per night (``misaligned_stage_starts``).
  Epochs before the first change point and ``NotScored`` epochs are -1. An unknown ``Type`` quarantines the
  night.
- **Events.** ``events/<type>`` holds, for each type in :data:`EVENT_TYPES` (families Respiratory and Nasal),
  the seconds of each epoch covered by events of that type (overlapping events of one type count once).
  Other types of those families are counted in the provenance (``other_event_types``); other families
  (arousals, limb movements, body position, ...) are not read.
- **Audio.** ``channels`` (default ``["Mic"]``; e.g. ``["Tracheal"]``, or both for their mono mix, the mean)
  are read part by part in physical units, in blocks of :data:`READ_BLOCK_S` seconds, each block resampled to
  ``features["audio_fs"]`` with the polyphase filter of :func:`physiossl.data.resample.iter_resampled_blocks` (blocks
  overlap by a margin wider than the filter, so the result equals resampling the whole part; a real 48 kHz
  hour is never held at 48 kHz). The resampled float32 parts are concatenated in part order and cut into
  30 s epochs of log-mel features (:func:`physiossl.data.sleep.features.epoch_features`, one epoch at a time as parts
  arrive): ``floor(total duration / 30)`` epochs. The stage and event arrays are cut (or padded with -1 / 0)
  to that length; the trailing seconds dropped are recorded per night (``dropped_s``).
- **Quarantine** (``<store>.quarantine.csv``, record = night id), with a reason: no RML or an RML that does not
  parse (XML error; no Session, no Segments or no staging; an unknown stage type); no EDF part, a gap in the
  part numbers, a duplicate part number or a number of parts different from the RML's segments; a part whose
  duration differs from its RML segment by more than one EDF data record or 1 s (whichever is larger); a
  requested channel missing in a part; a channel whose sampling rate differs between parts; an EDF that
  pyedflib cannot read; the checks every source shares (:mod:`._checks`, docs/data-quality.md): an EDF whose size
  differs from the data records its header declares (``sample count mismatch``), a requested channel constant over
  the whole night (``flat lead``; every one: ``flat record``), an unknown stage type (``unknown label code``). A
  tree with a ``SHA256SUMS.txt`` is verified against it before anything is read. Above
  ``max_quarantine_fraction`` of the nights quarantined the conversion fails and leaves no store.
- **Provenance** per night: the parts (file, SHA-256, duration), the RML (file, SHA-256), the channels' rates,
  the total duration, the epochs, ``dropped_s``, the session's ``RecordingStart``.

With ``workers`` > 1 nights are read and featurised in that many processes; the single store writer appends
them in sorted night-id order, so the store is the same for any number of workers. A night's features go, part by
part, to a scratch file beside the store (:class:`SpilledFeatures`) and from there into the store in blocks of
epochs, so neither a worker nor the writer holds a whole night: the memory of a conversion does not grow with the
length of the nights (docs/sizing.md: measured on 8-hour nights at 48 kHz).

Download: Science Data Bank (data DOI 10.11922/sciencedb.00345, to be verified together with the licence)
publishes PSG-Audio as many per-night files behind a web interface and gives no checksum manifest.
:func:`download` therefore fetches from a location that serves the files in the tree layout *plus* a
``SHA256SUMS.txt`` (lines ``<sha256>  <relative path>``): mirror the release there (or point ``url`` at a host that
offers such a manifest). Every file is downloaded resumably and verified against the manifest, and the tree is
installed atomically.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ... import checks, hosts
from ...convert import ConversionError
from ...fetch import DownloadError
from ...files import atomic_dir, sha256_file
from ...resample import ResampleError, block_margin, iter_resampled_blocks, rate_ratio, resample
from ...sources import register
from ..features import EPOCH_S, AudioError, check_features, frames_per_epoch, mix_channels
from ..nights import READ_BLOCK_S, EpochAccumulator, NightResult, SpilledFeatures, write_nights
from ..stages import EVENT_TYPES, UNSCORED
from ..synth import MIC_MIX, TRACHEAL_MIX, airflow, plan_breaths, render_breathing, synth_hypnogram, synth_subject

log = logging.getLogger(__name__)

NAME = "psg_audio"
SOURCE_VERSION = "psg-audio (Science Data Bank)"
#: The dataset's DOI (Science Data Bank, CC BY 4.0); it leads to the landing page that names the dataset id.
URL = "https://doi.org/10.11922/sciencedb.00345"
#: The release whose layout is read here (``/V3/APNEA_EDF/<id>/<id>[001].edf``, ``/V3/APNEA_RML/<id>.rml``).
VERSION = "V3"
SUMS_FILE = "SHA256SUMS.txt"

EDF_DIR = "APNEA_EDF"
RML_DIR = "APNEA_RML"
RML_NS = "http://www.respironics.com/PatientStudy.xsd"
DEFAULT_CHANNELS = ("Mic",)
#: RML stage types → stored codes (W, N1, N2, N3, REM = 0..4, -1 unscored).
STAGE_CODES = {"Wake": 0, "NonREM1": 1, "NonREM2": 2, "NonREM3": 3, "NonREM4": 3, "REM": 4, "NotScored": UNSCORED}
STAGE_NAMES = {0: "Wake", 1: "NonREM1", 2: "NonREM2", 3: "NonREM3", 4: "REM", UNSCORED: "NotScored"}
EVENT_FAMILIES = ("Respiratory", "Nasal")

DEMO_FS = 4000            # the demo's Mic rate (real recordings: 48 kHz)
DEMO_TRACHEAL_FS = 2000   # the demo's Tracheal rate
DEMO_FLOW_FS = 100        # the demo's airflow channel
DEMO_FLOW_LABEL = "Flow Patient"

_PART = re.compile(r"^(?P<id>.+)\[(?P<num>\d+)\]\.edf$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------- RML
class RmlError(ValueError):
    """An RML file cannot be used (unparsable XML, missing session, segments or staging)."""


@dataclass
class Scoring:
    """What a night's RML says: session start and duration, EDF segment durations, stage change points
    (start s, code) in file order, and events (family, type, start s, duration s)."""

    recording_start: str
    duration_s: float | None
    segments_s: list[float]
    stage_changes: list[tuple[float, int]]
    events: list[tuple[str, str, float, float]] = field(default_factory=list)


def _float_attr(element: ET.Element, name: str, where: str) -> float:
    value = element.get(name)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RmlError(f"{where}: {name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise RmlError(f"{where}: {name}={value!r} is not finite")
    return number


def parse_rml(path: Path) -> Scoring:
    """Parse a Sleepware RML file; :class:`RmlError` names the file and the problem."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise RmlError(f"{path.name}: not well-formed XML ({exc})") from exc
    except OSError as exc:
        raise RmlError(f"{path.name}: unreadable ({exc})") from exc
    match = re.match(r"^\{([^}]*)\}(.*)$", root.tag)
    ns, local = (match.group(1), match.group(2)) if match else ("", root.tag)
    if local != "PatientStudy" or ns not in (RML_NS, ""):
        raise RmlError(f"{path.name}: root element {root.tag!r}, expected PatientStudy in namespace {RML_NS}")
    q = (lambda p: "/".join(f"{{{ns}}}{part}" for part in p.split("/"))) if ns else (lambda p: p)
    session = root.find(q("Acquisition/Sessions/Session"))
    if session is None:
        raise RmlError(f"{path.name}: no Acquisition/Sessions/Session")
    segments = session.findall(q("Segments/Segment"))
    if not segments:
        raise RmlError(f"{path.name}: the session lists no Segments/Segment")
    durations = []
    for k, seg in enumerate(segments, start=1):
        text = seg.findtext(q("Duration"))
        try:
            durations.append(float(text))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise RmlError(f"{path.name}: segment {k} has no numeric Duration ({text!r})") from None
    total_text = session.findtext(q("Duration"))
    try:
        total = float(total_text) if total_text is not None else None
    except ValueError:
        raise RmlError(f"{path.name}: session Duration {total_text!r} is not a number") from None
    staging = root.find(q("ScoringData/StagingData/UserStaging/NeuroAdultAASMStaging"))
    if staging is None:
        raise RmlError(f"{path.name}: no ScoringData/StagingData/UserStaging/NeuroAdultAASMStaging")
    changes = []
    for stage in staging.findall(q("Stage")):
        kind = stage.get("Type")
        if kind not in STAGE_CODES:
            raise checks.defect("unknown_code", f"{path.name}: unknown stage Type {kind!r} (known: "
                                                f"{', '.join(STAGE_CODES)})", cls=RmlError)
        start = _float_attr(stage, "Start", f"{path.name}: Stage {kind}")
        if start < 0:
            raise RmlError(f"{path.name}: Stage {kind} has a negative Start {start:g}")
        changes.append((start, STAGE_CODES[kind]))
    if not changes:
        raise RmlError(f"{path.name}: NeuroAdultAASMStaging holds no Stage")
    events = []
    for ev in root.findall(q("ScoringData/Events/Event")):
        family, kind = ev.get("Family", ""), ev.get("Type", "")
        if family not in EVENT_FAMILIES:
            continue
        where = f"{path.name}: Event {family}/{kind}"
        events.append((family, kind, _float_attr(ev, "Start", where), _float_attr(ev, "Duration", where)))
    return Scoring(session.findtext(q("RecordingStart")) or "", total, durations, changes, events)


def stage_epochs(changes: Sequence[tuple[float, int]], n_epochs: int) -> tuple[np.ndarray, int]:
    """Per-epoch stages int8 (n_epochs,) from change points (start s, code), and the number of starts that
    were not on a 30 s boundary (see the module docstring)."""
    out = np.full(int(n_epochs), UNSCORED, dtype=np.int8)
    ordered = sorted(changes, key=lambda c: c[0])    # stable: equal starts keep their file order
    misaligned = 0
    for k, (start, code) in enumerate(ordered):
        if abs(start / EPOCH_S - round(start / EPOCH_S)) > 1e-6:
            misaligned += 1
        first = int(math.floor(start / EPOCH_S + 1e-9))
        stop = int(math.floor(ordered[k + 1][0] / EPOCH_S + 1e-9)) if k + 1 < len(ordered) else n_epochs
        out[max(first, 0):max(min(stop, n_epochs), 0)] = code
    return out, misaligned


def event_seconds(events: Iterable[tuple[str, str, float, float]], n_epochs: int,
                  types: Sequence[str] = EVENT_TYPES) -> dict[str, np.ndarray]:
    """Seconds of each epoch covered by events of each type, float32 (n_epochs,) per type (a union: overlapping
    events of one type are counted once)."""
    out = {t: np.zeros(int(n_epochs), dtype=np.float64) for t in types}
    spans: dict[str, list[tuple[float, float]]] = {t: [] for t in types}
    for _, kind, start, duration in events:
        if kind in spans and duration > 0:
            spans[kind].append((start, start + duration))
    end_of_night = n_epochs * EPOCH_S
    for kind, intervals in spans.items():
        merged: list[list[float]] = []
        for a, b in sorted(intervals):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        for a, b in merged:
            a, b = max(a, 0.0), min(b, end_of_night)
            if b <= a:
                continue
            e0, e1 = int(a // EPOCH_S), min(int(math.ceil(b / EPOCH_S)), n_epochs)
            edges = np.arange(e0, e1) * EPOCH_S
            out[kind][e0:e1] += np.minimum(b, edges + EPOCH_S) - np.maximum(a, edges)
    return {k: np.clip(v, 0, EPOCH_S).astype(np.float32) for k, v in out.items()}


# --------------------------------------------------------------------------------------------- EDF
@dataclass
class EdfInfo:
    """Header of an EDF(+) file: signal labels, their sampling rates (Hz) and sample counts, duration (s),
    data-record duration (s), file type (pyedflib code) and start time."""

    path: Path
    labels: list[str]
    rates: dict[str, float]
    n_samples: dict[str, int]
    duration_s: float
    record_s: float
    filetype: int
    start: datetime | None


def _open_edf(path: Path):
    import pyedflib

    try:
        return pyedflib.EdfReader(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable EDF {path.name}: {exc}") from exc


def check_edf_size(path: Path) -> None:
    """The file size of an EDF(+)/BDF(+) file against the number of data records its header declares: a file
    shorter (truncated) or longer (data the header does not count, which readers skip silently) is a
    ``sample count mismatch``. Headers that declare no count (-1: still recording) or do not parse are left to the
    reader."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
            ns = int(head[252:256].decode("ascii").strip())
            header_bytes = int(head[184:192].decode("ascii").strip())
            n_records = int(head[236:244].decode("ascii").strip())
            fh.seek(256 + ns * 216)
            per_record = [int(fh.read(8).decode("ascii").strip()) for _ in range(ns)]
    except (OSError, ValueError, UnicodeDecodeError):
        return
    if n_records < 0 or ns <= 0:
        return
    width = 3 if head[:1] == b"\xff" else 2          # BDF: 24-bit samples
    record_bytes = width * sum(per_record)
    size = path.stat().st_size
    expected = header_bytes + n_records * record_bytes
    if record_bytes > 0 and size != expected:
        checks.check_sample_count(n_records, (size - header_bytes) / record_bytes,
                                  f"{path.name} ({size} bytes, {expected} expected)", unit="data records")


def read_edf_info(path: Path) -> EdfInfo:
    """The header of an EDF(+) file (ValueError naming the file when pyedflib cannot read it, or when its size
    differs from what its header declares: :func:`check_edf_size`)."""
    path = Path(path)
    check_edf_size(path)
    reader = _open_edf(path)
    try:
        labels = [str(s).strip() for s in reader.getSignalLabels()]
        rates = [float(r) for r in reader.getSampleFrequencies()] if labels else []
        counts = [int(n) for n in reader.getNSamples()] if labels else []
        try:
            start = reader.getStartdatetime()
        except (ValueError, OSError):
            start = None
        return EdfInfo(path, labels, dict(zip(labels, rates)), dict(zip(labels, counts)),
                       float(reader.getFileDuration()), float(reader.datarecord_duration), int(reader.filetype),
                       start)
    finally:
        reader.close()


def read_edf_annotations(path: Path) -> list[tuple[float, float, str]]:
    """The EDF+ annotations of a file: (onset s, duration s, text)."""
    reader = _open_edf(Path(path))
    try:
        onsets, durations, texts = reader.readAnnotations()
    finally:
        reader.close()
    return [(float(o), float(d), str(t)) for o, d, t in zip(onsets, durations, texts)]


def _find_label(labels: Sequence[str], wanted: str) -> int | None:
    exact = [i for i, label in enumerate(labels) if label == wanted]
    if exact:
        return exact[0]
    loose = [i for i, label in enumerate(labels) if label.strip().lower() == wanted.strip().lower()]
    return loose[0] if len(loose) == 1 else None


def read_edf_channel(path: Path, label: str, fs_out: float | None = None,
                     block_s: float = READ_BLOCK_S) -> tuple[np.ndarray, float]:
    """One channel of an EDF(+) file in physical units, float32, resampled to ``fs_out`` (None: as recorded)
    block by block (:func:`~physiossl.data.resample.iter_resampled_blocks`); returns (samples, rate of the file's
    channel)."""
    rate: list[float] = []
    pieces = list(iter_edf_channel(path, label, fs_out, block_s, rate))
    x = np.concatenate(pieces) if len(pieces) > 1 else (pieces[0] if pieces else np.zeros(0, np.float32))
    return x, rate[0]


def iter_edf_channel(path: Path, label: str, fs_out: float | None = None, block_s: float = READ_BLOCK_S,
                     rate: list[float] | None = None) -> Iterator[np.ndarray]:
    """:func:`read_edf_channel` piece by piece (:func:`~physiossl.data.resample.iter_resampled_blocks`): one block of
    the part at a time,
    never the whole part; the channel's rate in the file is appended to ``rate`` when a list is given."""
    yield from iter_edf_mix(path, [label], fs_out, block_s, rate)


def iter_edf_mix(path: Path, labels: Sequence[str], fs_out: float | None = None, block_s: float = READ_BLOCK_S,
                 rates: list[float] | None = None,
                 tracker: checks.ConstantTracker | None = None) -> Iterator[np.ndarray]:
    """The mono mix (:func:`mixed_pieces`) of the channels ``labels`` of one EDF(+) file, each in physical units and
    resampled to ``fs_out`` block by block, as consecutive pieces; the file is opened once (edflib refuses a second
    reader). The channels' rates in the file are appended to ``rates`` when a list is given; ``tracker`` sees every
    block as read (before resampling), under the channel's name in ``labels``."""
    path = Path(path)
    reader = _open_edf(path)
    try:
        names = [str(s).strip() for s in reader.getSignalLabels()]
        channels = []
        for label in labels:
            index = _find_label(names, label)
            if index is None:
                raise ValueError(f"channel {label!r} missing in {path.name} (has {names})")
            fs = float(reader.getSampleFrequency(index))
            if rates is not None:
                rates.append(fs)

            def read(start: int, count: int, index: int = index, label: str = label) -> np.ndarray:
                try:
                    block = reader.readSignal(index, start=start, n=count)
                except (OSError, ValueError) as exc:
                    raise ValueError(f"unreadable EDF {path.name}: channel {label!r}: {exc}") from exc
                if tracker is not None:
                    tracker.update(label, block)
                return block

            channels.append(iter_resampled_blocks(read, int(reader.getNSamples()[index]), fs,
                                                  fs if fs_out is None else fs_out, block_s))
        try:
            yield from (channels[0] if len(channels) == 1 else mixed_pieces(channels))
        except (AudioError, ResampleError) as exc:
            raise ValueError(f"{path.name}: channel {', '.join(repr(label) for label in labels)}: {exc}") from exc
    finally:
        reader.close()


def mixed_pieces(channels: Sequence[Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    """The mono mix (:func:`physiossl.data.sleep.features.mix_channels`) of channels that arrive piece by piece
    (pieces of any lengths), as consecutive pieces; it ends with the shortest channel, like mixing the channels cut
    to the shortest one."""
    buffers = [np.zeros(0, dtype=np.float32) for _ in channels]
    while True:
        for k, it in enumerate(channels):
            while len(buffers[k]) == 0:
                piece = next(it, None)
                if piece is None:
                    return
                buffers[k] = np.asarray(piece, dtype=np.float32)
        n = min(len(b) for b in buffers)
        yield mix_channels([b[:n] for b in buffers])
        buffers = [b[n:] for b in buffers]


# --------------------------------------------------------------------------------------------- featurising


# --------------------------------------------------------------------------------------------- nights
@dataclass
class NightTask:
    """One night to convert: id, the tree it is in, its EDF parts (in order) and RML, the channels to mix, the
    feature parameters, and the reason it cannot be converted when that is known from its files alone."""

    night_id: str
    raw_dir: Path
    parts: list[Path]
    rml: Path | None
    channels: list[str]
    features: dict
    error: str | None = None
    scratch: Path | None = None    # folder for the night's spilled features (SpilledFeatures); None: kept in memory


def _part_number(path: Path) -> int:
    match = _PART.match(path.name)
    return int(match.group("num")) if match else -1


def discover_nights(raw_dir: Path, channels: Sequence[str], features: dict,
                    rml_dir: str = RML_DIR) -> list[NightTask]:
    """Every night of a tree (EDF folder or RML), sorted by id; a night whose files are incomplete carries the
    reason in ``error``."""
    raw_dir = Path(raw_dir)
    edf_root, rml_root = raw_dir / EDF_DIR, raw_dir / rml_dir
    if not edf_root.is_dir() and not rml_root.is_dir():
        raise ConversionError(f"{raw_dir}: neither {EDF_DIR}/ nor {rml_dir}/ found (is this a PSG-Audio tree?)")
    edf_dirs = {p.name: p for p in sorted(edf_root.iterdir()) if p.is_dir()} if edf_root.is_dir() else {}
    rmls = {p.stem: p for p in sorted(rml_root.glob("*.rml")) + sorted(rml_root.glob("*.RML"))} \
        if rml_root.is_dir() else {}
    tasks = []
    for night_id in sorted(set(edf_dirs) | set(rmls)):
        error, parts = None, []
        rml = rmls.get(night_id)
        if night_id not in edf_dirs:
            error = f"no EDF parts: {EDF_DIR}/{night_id}/ missing"
        else:
            numbered: dict[int, Path] = {}
            for p in sorted(edf_dirs[night_id].iterdir()):
                match = _PART.match(p.name)
                if not p.is_file() or not match:
                    if p.suffix.lower() == ".edf":
                        log.warning("%s: not named <id>[NNN].edf; ignored", p)
                    continue
                if match.group("id") != night_id:
                    log.warning("%s: part of another night id (%s); ignored", p, match.group("id"))
                    continue
                num = int(match.group("num"))
                if num in numbered:
                    error = f"duplicate EDF part number {num}: {numbered[num].name} and {p.name}"
                numbered[num] = p
            missing = sorted(set(range(1, max(numbered, default=0) + 1)) - set(numbered))
            if not numbered:
                error = f"no EDF parts in {EDF_DIR}/{night_id}/"
            elif missing and error is None:
                error = f"missing EDF part(s) {', '.join(f'[{m:03d}]' for m in missing)} of {night_id}"
            parts = [numbered[k] for k in sorted(numbered)]
            if rml is None and error is None:
                error = f"missing RML {rml_dir}/{night_id}.rml"
        tasks.append(NightTask(night_id, raw_dir, parts, rml, list(channels), dict(features), error))
    return tasks


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def load_night(task: NightTask) -> NightResult:
    """Read, check and featurise one night; any defect of the night comes back as ``error`` (its reason)."""
    try:
        return _load_night(task)
    except (ValueError, OSError) as exc:   # RmlError and the readers' ValueErrors name the file
        return NightResult(task.night_id, error=str(exc))


def _load_night(task: NightTask) -> NightResult:
    if task.error:
        return NightResult(task.night_id, error=task.error)
    assert task.rml is not None
    scoring = parse_rml(task.rml)
    if len(task.parts) != len(scoring.segments_s):
        which = "missing EDF part(s)" if len(task.parts) < len(scoring.segments_s) else "extra EDF part(s)"
        return NightResult(task.night_id, error=f"{which}: {len(task.parts)} EDF parts but the RML lists "
                                                f"{len(scoring.segments_s)} segments")
    infos = [read_edf_info(p) for p in task.parts]
    rates: dict[str, float] = {}
    for info, segment in zip(infos, scoring.segments_s):
        tolerance = max(info.record_s, 1.0)
        if abs(info.duration_s - segment) > tolerance:
            return NightResult(task.night_id, error=f"{info.path.name} lasts {info.duration_s:g} s but its RML "
                                                    f"segment {segment:g} s (tolerance {tolerance:g} s)")
        for channel in task.channels:
            index = _find_label(info.labels, channel)
            if index is None:
                return NightResult(task.night_id, error=f"channel {channel!r} missing in {info.path.name} "
                                                        f"(has {info.labels})")
            fs = info.rates[info.labels[index]]
            if rates.setdefault(channel, fs) != fs:
                return NightResult(task.night_id, error=f"channel {channel!r} at {fs:g} Hz in {info.path.name} "
                                                        f"but {rates[channel]:g} Hz in an earlier part")
    audio_fs = int(task.features["audio_fs"])
    spill = None
    if task.scratch is not None:
        spill = SpilledFeatures(Path(task.scratch) / (re.sub(r"[^A-Za-z0-9_.-]", "_", task.night_id) + ".f32"),
                                (int(task.features["n_mels"]), frames_per_epoch(task.features)))
        spill.remove()
    acc = EpochAccumulator(task.features, sink=spill.write if spill is not None else None)
    tracker = checks.ConstantTracker(task.channels)
    try:
        for info in infos:   # part by part, block by block: one block of a part at a time
            for piece in iter_edf_mix(info.path, task.channels, audio_fs, tracker=tracker):
                acc.add(piece)
        tracker.check(f"night {task.night_id}")    # a silent night, or a requested channel without sound
    except BaseException:
        if spill is not None:
            spill.remove()
        raise
    feats = spill if spill is not None else acc.result()
    n_epochs = len(feats)
    total = float(sum(info.duration_s for info in infos))
    if n_epochs == 0:
        if spill is not None:
            spill.remove()
        return NightResult(task.night_id, error=f"shorter than one {EPOCH_S} s epoch ({total:g} s)")
    stages, misaligned = stage_epochs(scoring.stage_changes, n_epochs)
    events = event_seconds(scoring.events, n_epochs)
    other: dict[str, int] = {}
    for family, kind, _, _ in scoring.events:
        if kind not in EVENT_TYPES:
            other[f"{family}/{kind}"] = other.get(f"{family}/{kind}", 0) + 1
    provenance = {
        "parts": [{"file": _rel(info.path, task.raw_dir), "sha256": sha256_file(info.path),
                   "duration_s": info.duration_s} for info in infos],
        "rml": {"file": _rel(task.rml, task.raw_dir), "sha256": sha256_file(task.rml)},
        "recording_start": scoring.recording_start,
        "rates_hz": rates,
        "duration_s": total,
        "epochs": n_epochs,
        "dropped_s": round(total - n_epochs * EPOCH_S, 6),
        "misaligned_stage_starts": misaligned,
        "other_event_types": other,
    }
    if scoring.duration_s is not None and abs(scoring.duration_s - total) > 1.0:
        provenance["rml_session_duration_s"] = scoring.duration_s
    return NightResult(task.night_id, feats, stages, events, provenance)


@register("psg_audio")
def convert(raw_dir: Path, out: Path, *, features: dict, channels: list[str] | None = None,
            max_quarantine_fraction: float = 0.1, workers: int = 1, progress: bool = True,
            rml_dir: str = RML_DIR) -> Path:
    """PSG-Audio tree → sleep store ``out`` (see the module docstring); returns ``out``."""
    raw_dir, out = Path(raw_dir), Path(out)
    problems = check_features(features, "features")
    if problems:
        raise ValueError("; ".join(problems))
    if not raw_dir.is_dir():
        raise ConversionError(f"{raw_dir}: raw tree not found")
    channels = [str(c) for c in (channels or DEFAULT_CHANNELS)]
    tasks = discover_nights(raw_dir, channels, features, rml_dir)
    if not tasks:
        raise ConversionError(f"{raw_dir}: no nights in {EDF_DIR}/ or {rml_dir}/")
    tree = checks.verify_tree(raw_dir, NAME, absent_level=logging.INFO)   # the host publishes MD5s, no SHA256SUMS
    provenance = {"raw_dir": str(raw_dir), "layout": f"{EDF_DIR}/<id>/<id>[NNN].edf + {rml_dir}/<id>.rml",
                  "staging": "UserStaging/NeuroAdultAASMStaging change points, 30 s epochs",
                  "channels": channels, "mix": "mean of the channels" if len(channels) > 1 else "single channel",
                  "resampling": f"polyphase (scipy resample_poly) to {features['audio_fs']} Hz, part by part",
                  "event_types": list(EVENT_TYPES), "input_checks": checks.provenance(tree)}
    if (raw_dir / SUMS_FILE).is_file():
        provenance["manifest_sha256"] = sha256_file(raw_dir / SUMS_FILE)
    if (raw_dir / hosts.MANIFEST).is_file():     # what Science Data Bank published for the downloaded files
        provenance["host_manifest_sha256"] = sha256_file(raw_dir / hosts.MANIFEST)
    import tempfile
    from dataclasses import replace

    # each night's features are spilled to a scratch folder beside the store and streamed into it, so the memory
    # of a conversion does not grow with the length of a night
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.nights-", dir=out.parent) as scratch:
        tasks = [replace(task, scratch=Path(scratch)) for task in tasks]
        return write_nights(tasks, load_night, raw_dir, out, dataset=NAME, features=features, channels=channels,
                            source_version=SOURCE_VERSION, events=EVENT_TYPES, labeled=True, provenance=provenance,
                            max_quarantine_fraction=max_quarantine_fraction, workers=workers, progress=progress)


# --------------------------------------------------------------------------------------------- download
def download(out_dir: Path, url: str = URL, progress: bool = True, *, api: str = hosts.SCIDB_API,
             dataset_id: str | None = None, version: str = VERSION, nights: str | int | Sequence[str] = "all",
             verify: bool = True) -> Path:
    """Fetch nights of PSG-Audio from Science Data Bank and install them as ``out_dir`` (atomically).

    The dataset id is ``dataset_id``, or is read from the landing page that ``url`` (the DOI) leads to. The
    version's Croissant export (:func:`physiossl.data.hosts.scidb_files`, from ``api``) lists every file with its
    size and MD5; of the nights that have EDF parts (``APNEA_EDF/<id>/``) and a scoring (``APNEA_RML/<id>.rml``),
    ``nights`` selects ``"all"``, the first N (sorted by id) or the listed ids (the full release is hundreds of
    GB). Each file is downloaded resumably into ``out_dir.parent/.downloads/psg_audio`` and checked against its
    listed size and MD5 (``verify=False`` skips that; HTML pages answered in place of a file are always refused),
    then hard-linked (or copied) into a staging directory that replaces ``out_dir`` only when every file is in;
    the export is saved as ``HOST_MANIFEST.json``. Failures raise
    :class:`~physiossl.data.fetch.DownloadError` naming the file.
    """
    out_dir = Path(out_dir)
    dataset_id = str(dataset_id) if dataset_id else hosts.scidb_dataset_id(url)
    listed, answer = hosts.scidb_files(dataset_id, version, api)
    chosen = select_nights(listed, nights, f"Science Data Bank dataset {dataset_id} {hosts.scidb_version(version)}")
    cache = out_dir.parent / ".downloads" / NAME
    fetched = hosts.fetch_files(chosen, cache, verify=verify, progress=progress)
    copied = False
    with atomic_dir(out_dir) as tmp:
        for rel, path in fetched.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copyfile(path, dest)
                copied = True
        hosts.write_manifest(tmp, "scidb", url, chosen, answer)
    if copied:
        shutil.rmtree(cache, ignore_errors=True)   # the files were copied: do not keep a second copy
    log.info("installed %s (%d files) from Science Data Bank dataset %s", out_dir, len(chosen), dataset_id)
    return out_dir


def select_nights(files: list[hosts.HostFile], nights: str | int | Sequence[str], where: str) -> list[hosts.HostFile]:
    """The EDF parts and scoring files of the selected nights: ``"all"``, the first N or a list of ids, among the
    nights that have both; nights with only one of them are left out with a warning naming them."""
    edf: dict[str, list[hosts.HostFile]] = {}
    rml: dict[str, hosts.HostFile] = {}
    for f in files:
        parts = PurePosixPath(f.path).parts
        if len(parts) == 3 and parts[0] == EDF_DIR and parts[2].lower().endswith(".edf"):
            edf.setdefault(parts[1], []).append(f)
        elif len(parts) == 2 and parts[0] == RML_DIR and parts[1].lower().endswith(".rml"):
            rml[parts[1][:-4]] = f
    complete = sorted(set(edf) & set(rml))
    incomplete = sorted(set(edf) ^ set(rml))
    if incomplete:
        log.warning("%s: %d night(s) lack EDF parts or a scoring and are not downloaded: %s", where, len(incomplete),
                    ", ".join(incomplete[:10]))
    if not complete:
        raise DownloadError(f"{where}: no night has both {EDF_DIR}/<id>/*.edf and {RML_DIR}/<id>.rml")
    if nights == "all":
        selected = complete
    elif isinstance(nights, int) and not isinstance(nights, bool):
        if nights < 1:
            raise DownloadError(f"{where}: download.nights must be 'all', a positive count or a list of ids")
        selected = complete[:nights]
    elif isinstance(nights, (list, tuple)):
        missing = [n for n in nights if n not in complete]
        if missing:
            raise DownloadError(f"{where} has no complete night {', '.join(map(str, missing))} "
                                f"(it has {len(complete)}, e.g. {', '.join(complete[:3])})")
        selected = list(dict.fromkeys(nights))
    else:
        raise DownloadError(f"{where}: download.nights must be 'all', a positive count or a list of ids, "
                            f"got {nights!r}")
    return [f for night in selected for f in sorted(edf[night], key=lambda f: f.path)] + [rml[n] for n in selected]


# --------------------------------------------------------------------------------------------- demo
def _rml_xml(start: datetime, segments: Sequence[float], stages: np.ndarray,
             events: Sequence[tuple[str, str, float, float]], arousals: Sequence[float]) -> bytes:
    """A Sleepware-style RML document (namespace, session, segments, events, user staging)."""
    ET.register_namespace("", RML_NS)

    def el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        node = ET.SubElement(parent, f"{{{RML_NS}}}{tag}", attrs)
        if text is not None:
            node.text = text
        return node

    root = ET.Element(f"{{{RML_NS}}}PatientStudy", {"Version": "6"})
    session = el(el(el(root, "Acquisition"), "Sessions"), "Session")
    el(session, "RecordingStart", start.strftime("%Y-%m-%dT%H:%M:%S"))
    el(session, "Duration", f"{int(sum(segments))}")
    segs = el(session, "Segments")
    offset = 0.0
    for duration in segments:
        seg = el(segs, "Segment")
        el(seg, "StartTime", (start + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S"))
        el(seg, "Duration", f"{int(duration)}")
        offset += duration
    scoring = el(root, "ScoringData")
    ev_root = el(scoring, "Events")
    rows = [(f, t, s, d) for f, t, s, d in events] + [("Neuro", "Arousal", a, 5.0) for a in arousals]
    for family, kind, s, d in sorted(rows, key=lambda r: r[2]):
        ev = el(ev_root, "Event", Family=family, Type=kind, Start=f"{s:g}", Duration=f"{d:g}", Machine="false")
        el(ev, "Input", "Snore" if kind == "Snore" else ("C3-A2" if family == "Neuro" else "Flow Patient"))
    staging = el(el(el(scoring, "StagingData"), "UserStaging"), "NeuroAdultAASMStaging")
    previous = None
    for e, code in enumerate(stages.tolist()):
        if code != previous:
            el(staging, "Stage", Type=STAGE_NAMES[int(code)], Start=str(e * EPOCH_S))
            previous = code
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")


def _write_edf_part(path: Path, start: datetime, blocks: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
                    mic_fs: int = DEMO_FS, tracheal_fs: int = DEMO_TRACHEAL_FS) -> None:
    """An EDF+ part written block by block: ``blocks`` yields (seconds, mic, tracheal, flow) of consecutive whole
    seconds (1 s data records, so any blocking writes the same file)."""
    import pyedflib

    headers = []
    for label, fs, dim, lim in (("Mic", mic_fs, "", 1.0), ("Tracheal", tracheal_fs, "", 1.0),
                                (DEMO_FLOW_LABEL, DEMO_FLOW_FS, "", 4.0)):
        headers.append({"label": label, "dimension": dim, "sample_frequency": fs, "physical_min": -lim,
                        "physical_max": lim, "digital_min": -32768, "digital_max": 32767, "transducer": "",
                        "prefilter": ""})
    writer = pyedflib.EdfWriter(str(path), len(headers), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setSignalHeaders(headers)
        writer.setStartdatetime(start)
        writer.setEquipment("physiossl_demo")
        for seconds, mic, tracheal, flow in blocks:
            data = []
            for x, h in zip((mic, tracheal, flow), headers):
                lim = h["physical_max"]
                digital = np.round(np.clip(x[:seconds * h["sample_frequency"]], -lim, lim) / lim * 32767.0)
                data.append(np.ascontiguousarray(digital.astype(np.int32)))
            writer.writeSamples(data, digital=True)
    finally:
        writer.close()


class _Take:
    """Hand out exactly ``n`` samples per stream from a generator of chunk dicts."""

    def __init__(self, chunks: Iterator[dict[str, np.ndarray]]):
        self.chunks, self.buffer = chunks, {}

    def take(self, n: int) -> dict[str, np.ndarray]:
        while not self.buffer or len(next(iter(self.buffer.values()))) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer = {k: np.concatenate([self.buffer[k], v]) if k in self.buffer else v for k, v in chunk.items()}
        out = {k: v[:n] for k, v in self.buffer.items()}
        self.buffer = {k: v[n:] for k, v in self.buffer.items()}
        return out

    def peek(self, n: int) -> dict[str, np.ndarray]:
        """The next ``n`` samples per stream (fewer at the end), left in place for the next :meth:`take`."""
        out = self.take(n)
        self.buffer = {k: np.concatenate([out[k], v]) for k, v in self.buffer.items()} if self.buffer else out
        return out


DEMO_BLOCK_S = 600   # the demo renders and writes a part in blocks of this many seconds (a part up to it at once)


def _part_blocks(audio: _Take, seconds: int, mic_fs: int, tracheal_fs: int,
                 block_s: int = DEMO_BLOCK_S) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(seconds, mic, tracheal) of one part in blocks of at most ``block_s`` whole seconds, the tracheal take
    resampled from ``mic_fs`` to ``tracheal_fs``. A part of at most ``block_s`` is one block (resampled at once);
    in a longer part the tracheal blocks are resampled with a margin of the neighbouring samples of the same part
    on each side (:func:`physiossl.data.resample.block_margin`), so the blocks join seamlessly and
    at most ``block_s`` (plus the margins) of 48 kHz audio is held."""
    def tracheal_at(x: np.ndarray) -> np.ndarray:
        return resample(np.asarray(x, dtype=np.float32), mic_fs, tracheal_fs)

    if seconds <= block_s:
        chunk = audio.take(seconds * mic_fs)
        yield seconds, chunk["mic"], tracheal_at(chunk["tracheal"])
        return
    ratio = rate_ratio(mic_fs, tracheal_fs)
    up, down = ratio.numerator, ratio.denominator
    margin = block_margin(mic_fs, tracheal_fs) if ratio != 1 else 0
    history = np.zeros(0, dtype=np.float32)
    for offset in range(0, seconds, block_s):
        n = min(block_s, seconds - offset)
        chunk = audio.take(n * mic_fs)
        tracheal = chunk["tracheal"]
        if margin:
            after = min(margin, (seconds - offset - n) * mic_fs)          # never beyond the part
            ahead = audio.peek(after)["tracheal"] if after else np.zeros(0, np.float32)
            y = tracheal_at(np.concatenate([history, tracheal, ahead]))
            skip = len(history) * up // down
            tracheal_out = y[skip:skip + n * tracheal_fs]
            history = np.concatenate([history, tracheal])[-margin:]
        else:
            tracheal_out = tracheal_at(tracheal)
        yield n, chunk["mic"], tracheal_out


def demo_night(path_root: Path, night_id: str, rng: np.random.Generator, duration_s: int, part_s: int,
               start: datetime, mic_fs: int = DEMO_FS, tracheal_fs: int = DEMO_TRACHEAL_FS) -> np.ndarray:
    """Write one demo night (EDF+ parts and RML) under ``path_root``; returns its hypnogram (one stage per
    started 30 s epoch). Parts are rendered and written one at a time, each in blocks (:func:`_part_blocks`), so
    the memory does not grow with the night or the part."""
    n_epochs = -(-duration_s // EPOCH_S)
    stages = synth_hypnogram(n_epochs, rng)
    subject = synth_subject(rng)
    plan = plan_breaths(stages, rng, subject)
    audio = _Take(render_breathing(plan, mic_fs, rng, subject, {"mic": MIC_MIX, "tracheal": TRACHEAL_MIX}))
    edf_dir = path_root / EDF_DIR / night_id
    edf_dir.mkdir(parents=True)
    segments = []
    for k, offset in enumerate(range(0, duration_s, part_s), start=1):
        seconds = min(part_s, duration_s - offset)

        def blocks(offset: int = offset, seconds: int = seconds):
            at = offset
            for n, mic, tracheal in _part_blocks(audio, seconds, mic_fs, tracheal_fs):
                flow = airflow(plan, DEMO_FLOW_FS, subject, at * DEMO_FLOW_FS, (at + n) * DEMO_FLOW_FS)
                yield n, mic, tracheal, flow
                at += n

        _write_edf_part(edf_dir / f"{night_id}[{k:03d}].edf", start + timedelta(seconds=offset), blocks(),
                        mic_fs, tracheal_fs)
        segments.append(float(seconds))
    awakenings = [e * EPOCH_S for e in range(1, n_epochs)
                  if stages[e] == 0 and stages[e - 1] > 0 and e * EPOCH_S < duration_s]
    events = [ev for ev in plan.events if ev[2] < duration_s]
    (path_root / RML_DIR).mkdir(exist_ok=True)
    (path_root / RML_DIR / f"{night_id}.rml").write_bytes(_rml_xml(start, segments, stages, events, awakenings))
    return stages


def demo(out_dir: Path, n_records: int = 20, seed: int = 0, *, minutes: tuple[float, float] | float = (30, 45),
         part_minutes: float = 10, mic_fs: int = DEMO_FS, tracheal_fs: int = DEMO_TRACHEAL_FS) -> Path:
    """Write a PSG-Audio-format tree of ``n_records`` synthetic nights (seeded): EDF+ parts of ``part_minutes``
    (the last one shorter) with ``Mic`` (``mic_fs``, default 4 kHz; the release: 48 kHz), ``Tracheal``
    (``tracheal_fs``, default 2 kHz; a louder, darker take of the same breathing) and ``Flow Patient`` (100 Hz),
    and an RML per night with segments, user staging (the hypnogram's change points) and Respiratory/Nasal events
    (apnoeas, hypopnoeas, snore runs) plus Neuro arousals. Nights last ``minutes`` (uniform, whole seconds).
    Real-size trees (8-hour nights of one-hour parts at 48 kHz) are written part by part and block by block."""
    rng = np.random.default_rng(seed)
    part_s = max(1, int(round(part_minutes * 60)))
    lo, hi = (float(minutes), float(minutes)) if np.isscalar(minutes) else (float(minutes[0]), float(minutes[1]))
    start = datetime(2019, 3, 4, 22, 0, 0)
    with atomic_dir(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True)
        for k in tqdm(range(n_records), desc="psg_audio demo", unit="night"):
            night_id = f"{995 + 131 * k:08d}-{100507 + k:06d}"
            duration = int(rng.integers(int(lo * 60), int(hi * 60) + 1))
            night_start = start + timedelta(days=k, minutes=int(rng.integers(0, 90)))
            demo_night(tmp, night_id, rng, duration, part_s, night_start, int(mic_fs), int(tracheal_fs))
    return Path(out_dir)
