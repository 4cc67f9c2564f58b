"""CODE-15% (Ribeiro et al.; Zenodo record 4916206, version 1.0.0): download, demo tree, conversion.

Tree layout (the Zenodo files, with the zips extracted)::

    exams.csv                 exam_id, age, is_male, nn_predicted_age, 1dAVb, RBBB, LBBB, SB, AF, ST,
                              patient_id, normal_ecg, death, timey, trace_file   (one row per exam)
    exams_part{0..17}.hdf5    ``tracings`` (N, 4096, 12) float32 and ``exam_id`` (N,); one per
                              ``exams_part{k}.zip``; the real parts reportedly end with a padding row
                              (exam_id 0, all-zero tracing)
    SHA256SUMS.txt            optional; written by :func:`download` over the files as fetched

What this release shares with the CODE test set (:mod:`.codetest`) — the HDF5 tracings, padding removal, the
amplitude unit, the lead check, the tables — is in :mod:`._code`.

Conversion decisions (all recorded in the store attrs and provenance):

- **Matching**: exams are matched between ``exams.csv`` and the HDF5 parts by ``exam_id`` only, never by row
  order. HDF5 rows with ``exam_id`` 0 are padding rows: skipped and counted per part
  (provenance ``hdf5_padding_rows``). Quarantined (``<store>.quarantine.csv``, record = exam_id): an exam in
  an HDF5 part without a CSV row; a CSV row whose ``trace_file`` is absent from the tree or does not hold
  the exam; an exam found in another part than its ``trace_file``; an exam_id on several CSV rows or
  several HDF5 rows (every copy); an exam_id that is not an integer (record = ``exams.csv line N``); invalid
  label values or a missing patient_id; non-finite samples; an all-zero tracing or a lead constant over the
  valid span (``flat record``/``flat lead``, :mod:`._checks`); less than ``min_seconds`` of signal; an amplitude
  above ``max_abs_mv`` after unit scaling (a third-party audit reports a raw record with NaNs and values ~1e38).
- **Padding**: records shorter than 4096 samples are zero-padded on both sides. The valid span of a
  record runs from the first to the last sample at which any lead is non-zero; it is resampled alone
  (``scipy.signal.resample_poly``, 400 Hz → ``fs``) and stored left-aligned, ``lengths`` = its resampled
  length (a full 4096-sample record gives 1024 samples at 100 Hz).
- **Amplitude unit**: sources disagree (mV vs 1e-4 V), so the unit is measured, not assumed:
  :func:`infer_amplitude_scale` (rule :data:`AMPLITUDE_RULE`) on the first ``probe_rows`` usable records of
  every part; parts that disagree fail the conversion. The decision (factor to mV, measured median,
  rule) is stored in attrs ``amplitude_unit`` and in the provenance; ``amplitude_scale=`` overrides it.
- **Lead order**: the files are taken to hold I, II, III, aVR, aVL, aVF, V1–V6 (REFERENCE.md; one copy of the
  dataset README lists DI, DII, DIII, AVL, AVF, AVR). :func:`check_limb_leads` tests the Goldberger relations on the
  probe records; a clear contradiction fails the conversion, the result is in attrs ``lead_check``.
- **Labels and meta**: label set ``all`` = 1dAVb, RBBB, LBBB, SB, AF, ST from the boolean columns;
  ``record_id`` = exam_id, ``patient_id`` from the CSV, ``age``, ``sex`` = M/F from ``is_male``,
  ``source`` = ``code15``; ``fold = 1 + sha256(patient_id) mod 10`` (all exams of a patient share a fold).
  Targets: ``nn_predicted_age``, ``normal_ecg`` (0/1), ``death`` (0/1, NaN where the CSV leaves it empty:
  only a patient's first exam has it) and ``timey`` (years).
- **Order**: records are stored in HDF5 order (parts by number, rows in file order), read in blocks of
  ``block_rows`` rows. Size: the full release at 100 Hz is 345,779 × 12 × 1024 float32 ≈ 17 GB before
  compression.
- **Provenance**: sha256 of ``exams.csv`` and of every part read (hashed in a background thread while the
  conversion runs); when the tree has a ``SHA256SUMS.txt`` the hashes must match it, or the conversion is refused
  before the store is published (docs/data-quality.md).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from ... import checks, hosts
from ...convert import Conversion, ConversionError, float_or_none, refuse_with_quarantine
from ...fetch import CorruptArchiveError, DownloadError, safe_extract_zip
from ...files import atomic_dir, replace_path
from ...resample import resampled_length
from ...sources import register
from .. import synth
from ..store import EcgStoreWriter
from ._code import (
    BLOCK_ROWS,
    CLASSES,
    DEFAULT_MIN_SECONDS,
    MAX_ABS_MV,
    N_LEADS,
    N_RAW_SAMPLES,
    NATIVE_FS,
    PROBE_ROWS,
    BackgroundHasher,
    find_one,
    fold_of,
    iter_demo_tracings,
    iter_hdf5_records,
    lead_check_or_fail,
    open_tracings,
    parse_bool,
    probe_records,
    read_table,
    resolve_amplitude_unit,
    sha256sums_text,
    spec_labels,
    tracings_provenance,
)

log = logging.getLogger(__name__)


NAME = "code15"


SOURCE_VERSION = "1.0.0"


ZENODO_RECORD = "4916206"


#: Base URL of the record's files; ``download`` fetches ``<URL>/exams.csv`` and ``<URL>/exams_part{k}.zip``.
URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files"


N_PARTS = 18


CSV_COLUMNS = ("exam_id", "age", "is_male", "nn_predicted_age", *CLASSES, "patient_id", "normal_ecg", "death",
               "timey", "trace_file")


REQUIRED_COLUMNS = ("exam_id", "age", "is_male", *CLASSES, "patient_id", "trace_file")


TARGETS = ("nn_predicted_age", "normal_ecg", "death", "timey")


DEFAULT_NORM_FOLDS = tuple(range(1, 9))


#: Zenodo publishes md5 checksums only; no hash is pinned here. Pass ``sha256=``/``md5=`` to download() to pin.
_PART = re.compile(r"^exams_part(\d+)\.hdf5$")


DEMO_COPY_ROWS = 256    # records per block when the demo copies its spilled tracings into an HDF5 part


def _spill_demo_tracings(rng: np.random.Generator, n: int, path: Path, desc: str) -> list[synth.EcgSpec]:
    """Write the records of :func:`iter_demo_tracings` one after the other to ``path`` (raw float32, (n, 4096, 12))
    and return their specs: the demo's tracings on disk, never in memory."""
    specs = []
    with open(path, "wb") as fh:
        for record, spec in tqdm(iter_demo_tracings(rng, n), total=n, desc=desc, unit="rec"):
            fh.write(record.tobytes())
            specs.append(spec)
    return specs


def _write_demo_part(path: Path, spill: Path, members: np.ndarray, ids: np.ndarray, padding_row: bool) -> None:
    """An HDF5 part whose ``tracings`` are the spilled records ``members`` (in that order; plus a zero padding row)
    and whose ``exam_id`` is ``ids`` (plus 0), copied block by block: the same file as writing the whole array."""
    shape = (N_RAW_SAMPLES, N_LEADS)
    size = N_RAW_SAMPLES * N_LEADS
    n = len(members) + int(padding_row)
    with h5py.File(path, "w") as fh, open(spill, "rb") as src:
        tracings = fh.create_dataset("tracings", shape=(n, *shape), dtype="float32")
        for j0 in range(0, len(members), DEMO_COPY_ROWS):
            rows = members[j0:j0 + DEMO_COPY_ROWS]
            block = np.empty((len(rows), *shape), np.float32)
            for k, row in enumerate(rows):
                src.seek(int(row) * size * 4)
                block[k] = np.fromfile(src, dtype=np.float32, count=size).reshape(shape)
            tracings[j0:j0 + len(rows)] = block
        if padding_row:
            tracings[n - 1] = np.zeros(shape, np.float32)
        fh.create_dataset("exam_id", data=np.concatenate([ids, np.zeros(int(padding_row), np.int64)]).astype(np.int64),
                          dtype="int64")


# ============================================================================================ download
def download(out_dir: Path, url: str = URL, progress: bool = True, *, parts: Iterable[int] = range(N_PARTS),
             api: str = hosts.ZENODO_API, verify: bool = True, keep_archives: bool = False) -> Path:
    """Fetch ``exams.csv`` and ``exams_part{k}.zip`` (k in ``parts``) of the Zenodo record that ``url`` names
    (default: record 4916206) and install the tree at ``out_dir``.

    Zenodo's API (``api``) lists the record's files with their size and MD5
    (:func:`physiossl.data.hosts.zenodo_files`); every file is downloaded resumably into
    ``out_dir.parent/.downloads/code15/`` and checked against them (``verify=False`` skips that); each zip is
    extracted safely into a staging tree there and deleted once its ``.hdf5`` is in place (``keep_archives=True``
    keeps it), so a rerun resumes where it stopped. Once every file is present, the API's answer is saved as
    ``HOST_MANIFEST.json``, ``SHA256SUMS.txt`` (the hashes of the files as installed) is written and the staging
    tree replaces ``out_dir`` atomically.
    """
    out_dir = Path(out_dir)
    parts = sorted(set(int(k) for k in parts))
    names = ["exams.csv", *(f"exams_part{k}.hdf5" for k in parts)]
    if out_dir.is_dir() and all((out_dir / n).is_file() for n in names):
        log.info("%s already holds %s; nothing to download", out_dir, ", ".join(names))
        return out_dir
    record = hosts.zenodo_record_id(url)
    if record is None:
        raise DownloadError(f"{url}: not a Zenodo record URL (like {URL}); for a copy on disk use the dataset's "
                            f"mode: local")
    listed, answer = hosts.zenodo_files(record, api)
    wanted = hosts.select(listed, ["exams.csv", *(f"exams_part{k}.zip" for k in parts)], f"Zenodo record {record}")
    remote = {f.path: f for f in wanted}
    cache = out_dir.parent / ".downloads" / NAME
    staging = cache / "tree"
    staging.mkdir(parents=True, exist_ok=True)
    for k in parts:
        target = staging / f"exams_part{k}.hdf5"
        if target.is_file():
            continue
        zip_name = f"exams_part{k}.zip"
        archive = hosts.fetch_files([remote[zip_name]], cache, verify=verify, progress=progress)[zip_name]
        tmp = cache / f".extract-{k}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            try:
                safe_extract_zip(archive, tmp)
            except CorruptArchiveError as exc:
                if verify:     # the host's own copy is bad: fetching it again would not help
                    raise CorruptArchiveError(f"{exc} (from {remote[zip_name].url}, matching the host's MD5)") from exc
                archive.unlink(missing_ok=True)
                raise CorruptArchiveError(f"{exc} (from {remote[zip_name].url}; removed so a rerun fetches it "
                                          f"again)") from exc
            found = sorted(tmp.rglob("*.hdf5"))
            exact = [p for p in found if p.name == target.name]
            if len(exact) != 1 and len(found) != 1:
                raise DownloadError(f"{archive}: expected one {target.name} inside, found "
                                    f"{[p.relative_to(tmp).as_posix() for p in found]}")
            os.replace(exact[0] if len(exact) == 1 else found[0], target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not keep_archives:
            archive.unlink(missing_ok=True)
    if not (staging / "exams.csv").is_file():
        hosts.fetch_files([remote["exams.csv"]], staging, verify=verify, progress=progress)
    hosts.write_manifest(staging, "zenodo", url, wanted, answer)
    (staging / "SHA256SUMS.txt").write_text(sha256sums_text(staging))
    replace_path(staging, out_dir)
    log.info("installed CODE-15%% parts %s at %s", parts, out_dir)
    return out_dir


# ============================================================================================ demo
def demo(out_dir: Path, n_records: int = 300, seed: int = 0, n_parts: int = 2) -> Path:
    """Write a CODE-15%-format tree of ``n_records`` synthetic exams (seeded): ``exams.csv`` with the real
    columns and ``exams_part{0..n_parts-1}.hdf5`` in the real layout ((N, 4096, 12) float32 mV at 400 Hz,
    7–10 s records centred with zero padding, ``exam_id`` int64). Several exams per patient; the HDF5 rows
    are in another order than the CSV rows; the last part ends with a padding row (exam_id 0, zeros)."""
    rng = np.random.default_rng(seed)
    n_parts = max(1, min(int(n_parts), max(n_records, 1)))
    n_patients = max(1, int(round(n_records / 2.5)))
    patient_of = np.concatenate([np.arange(min(n_patients, n_records)),
                                 rng.integers(0, n_patients, max(n_records - n_patients, 0))])
    rng.shuffle(patient_of)
    patient_ids = 10_000 + rng.choice(900_000, size=n_patients, replace=False)
    exam_ids = 1 + rng.choice(3_000_000, size=n_records, replace=False)
    with atomic_dir(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        # the tracings go to a scratch file as they are drawn (a real part is 3.8 GB) and are copied into the
        # parts in their shuffled order once the rows have been drawn
        spill = tmp / ".tracings.f32"
        specs = _spill_demo_tracings(rng, n_records, spill, "code15 demo")
        part_of = np.sort(np.arange(n_records) % n_parts)
        base_age = rng.integers(18, 90, n_patients)
        first_exam: set[int] = set()
        rows = []
        for i in range(n_records):
            patient = int(patient_of[i])
            labels = spec_labels(specs[i])
            age = int(base_age[patient] + rng.integers(0, 3))
            first = patient not in first_exam
            first_exam.add(patient)
            row = {
                "exam_id": int(exam_ids[i]), "age": age, "is_male": bool(patient % 2 == 0),
                "nn_predicted_age": round(float(age + rng.normal(0, 8)), 4),
                **{c: c in labels for c in CLASSES},
                "patient_id": int(patient_ids[patient]),
                "normal_ecg": bool(specs[i].rhythm == "SR" and not specs[i].morphologies),
                "death": bool(rng.random() < 0.05) if first else None,
                "timey": round(float(rng.uniform(0.5, 8.0)), 4) if first else None,
                "trace_file": f"exams_part{part_of[i]}.hdf5",
            }
            rows.append(row)
        csv_order = rng.permutation(n_records)
        pd.DataFrame([rows[i] for i in csv_order], columns=list(CSV_COLUMNS)).to_csv(tmp / "exams.csv", index=False)
        for k in range(n_parts):
            members = np.flatnonzero(part_of == k)
            members = members[rng.permutation(len(members))]        # another order than the CSV's
            # the last part ends with a padding row (exam_id 0, zeros), as in the real parts
            _write_demo_part(tmp / f"exams_part{k}.hdf5", spill, members, exam_ids[members].astype(np.int64),
                             padding_row=k == n_parts - 1)
        spill.unlink()
        (tmp / "SHA256SUMS.txt").write_text(sha256sums_text(tmp))
    return Path(out_dir)


# ============================================================================================ convert
def _int_id(value) -> int | None:
    """An integer id from a CSV/HDF5 value (int, integral float or digit string); None otherwise."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != round(number):
        return None
    return int(number)


def read_exams(path: Path) -> pd.DataFrame:
    return read_table(path, REQUIRED_COLUMNS, dtype={"trace_file": str})


def exam_fields(row: dict) -> tuple[dict, list[str], dict[str, float]]:
    """(meta, labels, targets) of one ``exams.csv`` row; ValueError naming the defect."""
    patient = _int_id(row["patient_id"])
    if patient is None:
        text = "" if pd.isna(row["patient_id"]) else str(row["patient_id"]).strip()
        if not text:
            raise ValueError("missing patient_id")
        patient_id = text
    else:
        patient_id = str(patient)
    labels = []
    for c in CLASSES:
        try:
            value = parse_bool(row[c])
        except ValueError as exc:
            raise checks.defect("unknown_code", f"label column {c}: {exc}") from exc
        if value is None:
            raise ValueError(f"label column {c} is empty")
        if value:
            labels.append(c)
    try:
        male = parse_bool(row["is_male"])
    except ValueError:
        male = None
    targets = {}
    for name in TARGETS:
        if name not in row:
            continue
        if name in ("normal_ecg", "death"):
            try:
                flag = parse_bool(row[name])
            except ValueError:
                flag = None
            targets[name] = float("nan") if flag is None else float(flag)
        else:
            value = float_or_none(row[name])
            targets[name] = float("nan") if value is None else value
    age = float_or_none(row["age"])
    meta = {"patient_id": patient_id, "fold": fold_of(patient_id), "age": age,
            "sex": "" if male is None else ("M" if male else "F"), "source": NAME}
    return meta, labels, targets


def find_parts(raw_dir: Path) -> dict[str, Path]:
    """``exams_part{k}.hdf5`` files below ``raw_dir`` by name, in part order; ConversionError on duplicates."""
    found: dict[str, Path] = {}
    for path in sorted(Path(raw_dir).rglob("exams_part*.hdf5")):
        if not _PART.match(path.name):
            continue
        if path.name in found:
            raise ConversionError(f"{raw_dir}: {path.name} found twice ({found[path.name]} and {path})")
        found[path.name] = path
    return dict(sorted(found.items(), key=lambda kv: int(_PART.match(kv[0]).group(1))))


@register("code15")
def convert(raw_dir: Path, out: Path, fs: int = 100, max_quarantine_fraction: float = 0.01,
            norm_folds: Sequence[int] = DEFAULT_NORM_FOLDS, progress: bool = True, *,
            parts: Iterable[int] | None = None, amplitude_scale: float | None = None,
            min_seconds: float = DEFAULT_MIN_SECONDS, max_abs_mv: float = MAX_ABS_MV,
            block_rows: int = BLOCK_ROWS, probe_rows: int = PROBE_ROWS,
            workers: int = 1) -> dict:
    """CODE-15% tree → ECG store at ``fs`` Hz (see the module docstring for every decision).

    ``parts``: convert only the exams whose ``trace_file`` is one of these parts (the others are out of
    scope and counted, not quarantined). ``amplitude_scale``: the factor to mV, instead of inferring it.
    """
    raw_dir, out = Path(raw_dir), Path(out)
    if not raw_dir.is_dir():
        raise ConversionError(f"{raw_dir}: raw tree not found")
    if block_rows < 1 or probe_rows < 1:
        raise ValueError("block_rows and probe_rows must be positive")
    csv_path = find_one(raw_dir, "exams.csv", f"is {raw_dir} a CODE-15% tree? `physiossl download code15`")
    exams = read_exams(csv_path)
    all_parts = find_parts(raw_dir)
    selected = None if parts is None else {f"exams_part{int(k)}.hdf5" for k in parts}
    part_files = {n: p for n, p in all_parts.items() if selected is None or n in selected}
    hasher = BackgroundHasher([csv_path, *part_files.values()])
    try:
        summary = _convert(raw_dir, out, fs, max_quarantine_fraction, norm_folds, progress, exams, csv_path,
                           part_files, selected, amplitude_scale, min_seconds, max_abs_mv, block_rows,
                           probe_rows, hasher, workers)
    except BaseException:
        hasher.cancel()
        raise
    return summary


def _convert(raw_dir, out, fs, max_quarantine_fraction, norm_folds, progress, exams, csv_path, part_files,
             selected, amplitude_scale, min_seconds, max_abs_mv, block_rows, probe_rows, hasher, workers) -> dict:
    # ---- HDF5 index: exam_id → [(part, row)]
    locations: dict[int, list[tuple[str, int]]] = {}
    padding_rows: dict[str, int] = {}
    n_raw = 0
    for name, path in part_files.items():
        n_rows, n_samples_raw, ids = open_tracings(path, with_exam_id=True)
        n_raw = max(n_raw, n_samples_raw)
        padding_rows[name] = int((ids == 0).sum())
        for row in np.flatnonzero(ids != 0):
            locations.setdefault(int(ids[row]), []).append((name, int(row)))
    # ---- CSV index: exam_id → [row]
    quarantine: list[tuple[str, str]] = []
    trace_files = [("" if pd.isna(v) else str(v).strip()) for v in exams["trace_file"]]

    def in_scope(i: int) -> bool:
        return selected is None or trace_files[i] in selected

    csv_rows: dict[int, list[int]] = {}
    for i, value in enumerate(exams["exam_id"]):
        key = _int_id(value)
        if key is None:
            if in_scope(i):
                quarantine.append((f"exams.csv line {i + 2}", f"exam_id {value!r} is not an integer"))
        else:
            csv_rows.setdefault(key, []).append(i)
    keys = sorted({k for k, rs in csv_rows.items() if any(in_scope(i) for i in rs)} | set(locations))
    n_total = len(keys) + len(quarantine)
    n_out_of_scope = sum(1 for rs in csv_rows.values() if not any(in_scope(i) for i in rs))
    if n_total == 0:
        raise ConversionError(f"{raw_dir}: no exams in {csv_path.name} or in the HDF5 parts "
                              f"({', '.join(part_files) or 'none found'})")
    # ---- resolve every exam: plan[part][row] = csv row
    plan: dict[str, dict[int, int]] = {name: {} for name in part_files}
    columns = {c: exams[c].to_numpy() for c in exams.columns}     # row i = {c: columns[c][i]}, no copies
    for key in keys:
        rid, rows, locs = str(key), csv_rows.get(key, []), locations.get(key, [])
        where = ", ".join(f"{n} row {r}" for n, r in locs)
        if len(rows) > 1:
            quarantine.append((rid, f"exam_id on {len(rows)} rows of {csv_path.name} (lines "
                                    f"{', '.join(str(i + 2) for i in rows)})"))
        elif len(locs) > 1:
            quarantine.append((rid, f"exam_id on {len(locs)} HDF5 rows ({where})"))
        elif not rows:
            quarantine.append((rid, f"in {where} but not in {csv_path.name}"))
        elif not locs:
            tf = trace_files[rows[0]]
            if not tf:
                quarantine.append((rid, f"no trace_file in {csv_path.name} and not in any HDF5 part"))
            elif tf not in part_files:
                quarantine.append((rid, f"trace_file {tf} not found under {raw_dir}"))
            else:
                quarantine.append((rid, f"exam_id not found in its trace_file {tf}"))
        elif trace_files[rows[0]] != locs[0][0]:
            quarantine.append((rid, f"{csv_path.name} gives trace_file {trace_files[rows[0]]!r}, but the exam is "
                                    f"in {where}"))
        else:
            plan[locs[0][0]][locs[0][1]] = rows[0]
    if not any(plan.values()):
        raise refuse_with_quarantine(out, quarantine, f"{raw_dir}: none of the {n_total} exams could be matched "
                                                      f"between {csv_path.name} and the HDF5 parts")
    # ---- amplitude unit and lead check, from the first probe_rows planned records of every part
    per_part, all_amps, lead_spans = {}, [], []
    for name, rows_of in plan.items():
        if rows_of:
            amps, spans = probe_records(part_files[name], list(rows_of), probe_rows)
            per_part[name] = amps
            all_amps.append(amps)
            lead_spans.extend(spans)
    decision = resolve_amplitude_unit(all_amps, per_part, amplitude_scale, raw_dir)
    lead_check = lead_check_or_fail(lead_spans, raw_dir)
    # ---- stream the parts block by block
    n_planned = sum(len(v) for v in plan.values())
    n_samples = resampled_length(n_raw or N_RAW_SAMPLES, NATIVE_FS, fs)
    min_samples = max(1, int(math.ceil(min_seconds * NATIVE_FS)))
    norm_folds = set(int(f) for f in norm_folds)
    n_padded = 0
    prepare = {"factor": decision["factor"], "fs": fs, "min_samples": min_samples, "max_abs_mv": max_abs_mv}
    conversion = Conversion(raw_dir, out, n_total, max_fraction=max_quarantine_fraction, desc=NAME, unit="exams",
                            progress=progress)
    for rid, reason in quarantine:
        conversion.quarantine(rid, reason)

    def planned():
        for name, rows_of in plan.items():
            for row, result in iter_hdf5_records(part_files[name], rows_of, block_rows=block_rows, **prepare):
                yield name, row, rows_of[row], result

    with EcgStoreWriter.open(out, capacity=n_planned, n_samples=n_samples, fs=fs, workers=workers) as writer:
        for name, row, i, result in conversion.track(planned(), total=n_planned):
            rid = str(_int_id(columns["exam_id"][i]))
            with conversion.record(rid):
                try:
                    meta, labels, targets = exam_fields({c: v[i] for c, v in columns.items()})
                except ValueError as exc:
                    raise ValueError(f"{csv_path.name} line {i + 2}: {exc}") from exc
                if isinstance(result, str):
                    raise ValueError(f"{name} row {row}: {result}")
                writer.append(result, meta={"record_id": rid, **meta}, labels={"all": labels}, targets=targets,
                              norm=meta["fold"] in norm_folds)
                n_padded += result.shape[1] < resampled_length(n_raw, NATIVE_FS, fs)
        hashes = hasher.result()
        provenance = {
            **tracings_provenance(raw_dir, ZENODO_RECORD, hashes, fs, decision, lead_check,
                                  min_seconds, max_abs_mv, dataset=NAME),
            "folds": "1 + sha256(patient_id) mod 10",
            "matching": "exams.csv and the HDF5 parts matched by exam_id",
            "hdf5_padding_rows": padding_rows,
            "parts": list(part_files),
            "exams_out_of_scope": n_out_of_scope,
        }
        conversion.finish(
            writer.finish, dataset=NAME, source_version=SOURCE_VERSION, label_sets={"all": list(CLASSES)},
            provenance=provenance, norm_folds=sorted(norm_folds),
            extra_attrs={"amplitude_unit": decision, "native_fs": NATIVE_FS, "lead_check": lead_check,
                         "n_padded": n_padded, "store_order": "HDF5 order: parts by number, rows in file order"},
        )
    return conversion.summary(padded=n_padded, amplitude_factor=decision["factor"], fs=fs)
