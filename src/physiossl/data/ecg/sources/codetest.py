"""The CODE test set (Ribeiro et al. 2020, Nat Commun 11:1760; Zenodo 10.5281/zenodo.3625006): 827 exams
annotated by cardiologists, the evaluation set of the ECG SSL paper. Download, demo tree, conversion.

Tree layout (the Zenodo ``data`` folder)::

    ecg_tracings.hdf5                 dataset ``tracings`` (827, 4096, 12) float32, 400 Hz, no exam ids
    attributes.csv                    age, sex ('M'/'F'); line i+1 describes tracing i
    annotations/gold_standard.csv     1dAVb, RBBB, LBBB, SB, AF, ST (0/1), row i = tracing i
    annotations/<other>.csv           the same columns from cardiologists, residents, students, the DNN

Rows line up by position only, so the row counts of the three files must agree: a mismatch is a
:class:`ConversionError` naming the files and their counts. The signal helpers are those of CODE-15%
(:mod:`.code15`): padding removal (valid span stored left-aligned, ``lengths`` = its resampled length),
resampling 400 Hz → ``fs`` with ``resample_poly``, amplitude-unit inference (attrs ``amplitude_unit``), the
limb-lead check and the record quarantine (non-finite samples, all-zero, shorter than ``min_seconds``,
implausible amplitude, invalid gold-standard labels).

Store: ``record_id`` = ``patient_id`` = the row index as a string ('0'..'826': every exam is a different
patient), ``fold = 1 + sha256(record_id) mod 10``, ``source`` = ``codetest``; label set ``all`` = the gold
standard; every other annotation file with the six columns, the same row count and 0/1 values becomes a
label set named after the file (e.g. ``dnn``, ``cardiologist1``; skipped files are listed in attrs
``annotations_skipped``) so the paper's human and DNN baselines can be scored against ``all``.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Sequence
from urllib.parse import unquote, urlsplit

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from ... import checks, hosts
from ...convert import Conversion, ConversionError
from ...fetch import DownloadError, download_file, fetch_archive_tree
from ...files import atomic_dir
from ...resample import resampled_length
from ...sources import register
from ..store import EcgStoreWriter
from ._code import (
    BLOCK_ROWS,
    CLASSES,
    DEFAULT_MIN_SECONDS,
    MAX_ABS_MV,
    N_LEADS,
    N_RAW_SAMPLES,
    NATIVE_FS,
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

NAME = "codetest"
ZENODO_RECORD = "3625006"
SOURCE_VERSION = f"zenodo-{ZENODO_RECORD}"
#: The record's zip of the ``data`` folder. The file name is as published when this was written; a URL
#: ending in ``.hdf5`` (the tracings alone) also works: the CSVs then come from :data:`METADATA_URL`.
URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/data.zip?download=1"
#: The same metadata in the authors' repository (antonior92/automatic-ecg-diagnosis, MIT), pinned commit.
METADATA_URL = ("https://raw.githubusercontent.com/antonior92/automatic-ecg-diagnosis/"
                "403934867cea25a85b54faca025ac65b1ac18a45/data")
#: sha256 of the metadata files at that commit (equal to tests/fixtures/code15_related)
METADATA_SHA256 = {
    "attributes.csv": "b73740ae175d320beb5c85d3e300798a0e51a493f5887c9755cfa63b9480485a",
    "annotations/gold_standard.csv": "4a0ed70593339c915c18187f3d4298a540db60db2563f1e17f2226f6302ba7bd",
}
N_EXAMS = 827
TRACINGS, ATTRIBUTES, GOLD = "ecg_tracings.hdf5", "attributes.csv", "gold_standard.csv"
DEFAULT_NORM_FOLDS = tuple(range(1, 9))
PROBE_ROWS = 1024
_HINT = "is it the CODE test set's data folder? `physiossl download codetest`"


# --------------------------------------------------------------------------------------------- download
def download(out_dir: Path, url: str = URL, progress: bool = True, *, api: str = hosts.ZENODO_API,
             verify: bool = True, metadata_url: str = METADATA_URL) -> Path:
    """Fetch the CODE test set into ``out_dir``.

    ``url`` names a file of a Zenodo record (default: ``data.zip`` of record 3625006). Zenodo's API (``api``) lists
    the record's files with their size and MD5 (:func:`physiossl.data.hosts.zenodo_files`); the file is
    downloaded resumably and checked against them (``verify=False`` skips that). A ``.zip`` is extracted safely
    (a single top folder such as ``data/`` becomes the tree root) and installed atomically; an ``.hdf5`` is the
    tracings alone, saved as ``ecg_tracings.hdf5``. Either way, ``attributes.csv`` and
    ``annotations/gold_standard.csv`` are fetched from ``metadata_url`` (checked against pinned SHA-256) when the
    tree lacks them; the API's answer is saved as ``HOST_MANIFEST.json`` and ``SHA256SUMS.txt`` records the files
    as installed.
    """
    out_dir = Path(out_dir)
    record = hosts.zenodo_record_id(url)
    if record is None:
        raise DownloadError(f"{url}: not a file of a Zenodo record (like {URL}); for a copy on disk use the "
                            f"dataset's mode: local")
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    listed, answer = hosts.zenodo_files(record, api)
    [remote] = hosts.select(listed, [name], f"Zenodo record {record} ({api})")
    checks = {"expected_md5": remote.md5, "expected_size": remote.size} if verify else {}
    if verify and not remote.md5:
        raise DownloadError(f"Zenodo record {record} publishes no checksum for {name}: set download.verify: false "
                            f"to install it unverified")
    if name.lower().endswith((".hdf5", ".h5")):
        with atomic_dir(out_dir) as tmp:
            tmp.mkdir(parents=True, exist_ok=True)
            cached = download_file(remote.url, out_dir.parent / ".downloads" / NAME / TRACINGS, progress=progress,
                                   **checks)
            shutil.copyfile(cached, tmp / TRACINGS)
            _fetch_metadata(tmp, metadata_url, progress)
            hosts.write_manifest(tmp, "zenodo", url, [remote], answer)
            (tmp / "SHA256SUMS.txt").write_text(sha256sums_text(tmp))
        return out_dir
    tree = fetch_archive_tree(remote.url, out_dir, sums_file=None, archive_name=name, progress=progress, **checks)
    _fetch_metadata(tree, metadata_url, progress)
    hosts.write_manifest(tree, "zenodo", url, [remote], answer)
    (tree / "SHA256SUMS.txt").write_text(sha256sums_text(tree))
    return tree


def _fetch_metadata(tree: Path, metadata_url: str, progress: bool) -> None:
    for rel, digest in METADATA_SHA256.items():
        if not any(tree.rglob(Path(rel).name)):
            download_file(f"{metadata_url.rstrip('/')}/{rel}", tree / rel, expected_sha256=digest, progress=progress)


# --------------------------------------------------------------------------------------------- demo
def demo(out_dir: Path, n_records: int = 60, seed: int = 0) -> Path:
    """Write a CODE-test-format tree of ``n_records`` synthetic exams (seeded): ``ecg_tracings.hdf5``
    (``tracings`` only, (N, 4096, 12) float32 mV, 400 Hz, centred zero padding), ``attributes.csv`` and
    ``annotations/{gold_standard,cardiologist1,dnn}.csv`` (the latter two disagree with the gold standard
    on a few rows)."""
    rng = np.random.default_rng(seed)
    with atomic_dir(Path(out_dir)) as tmp:
        (tmp / "annotations").mkdir(parents=True)
        specs = []
        with h5py.File(tmp / TRACINGS, "w") as fh:   # record by record: the tracings are never held at once
            tracings = fh.create_dataset("tracings", shape=(n_records, N_RAW_SAMPLES, N_LEADS), dtype="float32")
            for i, (record, spec) in enumerate(tqdm(iter_demo_tracings(rng, n_records), total=n_records,
                                                    desc="codetest demo", unit="rec")):
                tracings[i] = record
                specs.append(spec)
        gold = np.array([[c in spec_labels(s) for c in CLASSES] for s in specs], dtype=int).reshape(-1, len(CLASSES))
        pd.DataFrame({"age": rng.integers(16, 95, n_records),
                      "sex": rng.choice(["M", "F"], n_records)}).to_csv(tmp / ATTRIBUTES, index=False)
        pd.DataFrame(gold, columns=list(CLASSES)).to_csv(tmp / "annotations" / GOLD, index=False)
        for name, p_flip in (("cardiologist1", 0.02), ("dnn", 0.03)):
            flips = rng.random(gold.shape) < p_flip
            pd.DataFrame(np.where(flips, 1 - gold, gold), columns=list(CLASSES)).to_csv(
                tmp / "annotations" / f"{name}.csv", index=False)
        (tmp / "SHA256SUMS.txt").write_text(sha256sums_text(tmp))
    return Path(out_dir)


# --------------------------------------------------------------------------------------------- convert


def _label_rows(df: pd.DataFrame) -> list[list[str] | str]:
    """Per row: the present classes, or the defect (str) when a value is not 0/1."""
    out: list[list[str] | str] = []
    for row in df[list(CLASSES)].itertuples(index=False):
        labels, problem = [], None
        for c, value in zip(CLASSES, row):
            try:
                flag = parse_bool(value)
            except ValueError as exc:
                problem = checks.reason_or_refuse("unknown_code", f"label column {c}: {exc}")
                break
            if flag is None:
                problem = f"label column {c} is empty"
                break
            if flag:
                labels.append(c)
        out.append(problem if problem else labels)
    return out


def _extra_annotations(gold_path: Path, n: int) -> tuple[dict[str, tuple[Path, list]], dict[str, str]]:
    """The other annotation files next to the gold standard usable as label sets, and the skipped ones."""
    extras, skipped = {}, {}
    for path in sorted(gold_path.parent.glob("*.csv")):
        if path == gold_path:
            continue
        name = re.sub(r"\W", "_", path.stem)
        try:
            df = read_table(path, CLASSES)
        except ConversionError as exc:
            skipped[path.name] = str(exc)
            continue
        if len(df) != n:
            skipped[path.name] = f"{len(df)} rows, the tracings have {n}"
            continue
        rows = _label_rows(df)
        bad = [r for r in rows if isinstance(r, str)]
        if bad or name == "all":
            skipped[path.name] = bad[0] if bad else "name clashes with the label set 'all'"
            continue
        extras[name] = (path, rows)
    return extras, skipped


@register("codetest")
def convert(raw_dir: Path, out: Path, fs: int = 100, max_quarantine_fraction: float = 0.01,
            norm_folds: Sequence[int] = DEFAULT_NORM_FOLDS, progress: bool = True, *,
            amplitude_scale: float | None = None, min_seconds: float = DEFAULT_MIN_SECONDS,
            max_abs_mv: float = MAX_ABS_MV, block_rows: int = BLOCK_ROWS, probe_rows: int = PROBE_ROWS,
            workers: int = 1) -> dict:
    """CODE test set tree → ECG store at ``fs`` Hz (see the module docstring)."""
    raw_dir, out = Path(raw_dir), Path(out)
    if not raw_dir.is_dir():
        raise ConversionError(f"{raw_dir}: raw tree not found")
    h5_path = find_one(raw_dir, TRACINGS, _HINT)
    attrs_path = find_one(raw_dir, ATTRIBUTES, _HINT)
    gold_path = find_one(raw_dir, GOLD, _HINT)
    n, n_raw, _ = open_tracings(h5_path, with_exam_id=False)
    attributes = read_table(attrs_path, ("age", "sex"))
    gold = read_table(gold_path, CLASSES)
    if not n == len(attributes) == len(gold):
        raise ConversionError(
            f"{raw_dir}: row counts disagree: {h5_path.name} has {n} tracings, {attrs_path.name} has "
            f"{len(attributes)} rows, {gold_path.relative_to(raw_dir).as_posix()} has {len(gold)} rows (row i of "
            f"each file is exam i, so they must be equal)")
    if n == 0:
        raise ConversionError(f"{h5_path}: no tracings")
    extras, skipped = _extra_annotations(gold_path, n)
    hasher = BackgroundHasher([h5_path, attrs_path, gold_path, *(p for p, _ in extras.values())])
    try:
        return _convert(raw_dir, out, fs, max_quarantine_fraction, norm_folds, progress, h5_path, n, n_raw,
                        attributes, gold, extras, skipped, amplitude_scale, min_seconds, max_abs_mv, block_rows,
                        probe_rows, hasher, workers)
    except BaseException:
        hasher.cancel()
        raise


def _convert(raw_dir, out, fs, max_quarantine_fraction, norm_folds, progress, h5_path, n, n_raw, attributes,
             gold, extras, skipped, amplitude_scale, min_seconds, max_abs_mv, block_rows, probe_rows,
             hasher, workers) -> dict:
    conversion = Conversion(raw_dir, out, n, max_fraction=max_quarantine_fraction, desc=NAME, unit="exams",
                            progress=progress)
    gold_rows = _label_rows(gold)
    candidates = []
    for i, labels in enumerate(gold_rows):
        if isinstance(labels, str):
            conversion.quarantine(str(i), f"{GOLD} line {i + 2}: {labels}")
        else:
            candidates.append(i)
    amps, spans = probe_records(h5_path, candidates, probe_rows)
    decision = resolve_amplitude_unit([amps], {h5_path.name: amps}, amplitude_scale, raw_dir)
    lead_check = lead_check_or_fail(spans, raw_dir)
    n_samples = resampled_length(n_raw or N_RAW_SAMPLES, NATIVE_FS, fs)
    prepare = {"factor": decision["factor"], "fs": fs,
               "min_samples": max(1, int(math.ceil(min_seconds * NATIVE_FS))), "max_abs_mv": max_abs_mv}
    norm_folds = set(int(f) for f in norm_folds)
    ages, sexes = attributes["age"].tolist(), attributes["sex"].tolist()
    n_padded = 0
    with EcgStoreWriter.open(out, capacity=len(candidates), n_samples=n_samples, fs=fs, workers=workers) as writer:
        records = iter_hdf5_records(h5_path, candidates, block_rows=block_rows, **prepare)
        for row, result in conversion.track(records, total=len(candidates)):
            rid = str(row)
            with conversion.record(rid):
                if isinstance(result, str):
                    raise ValueError(f"{h5_path.name} row {row}: {result}")
                fold = fold_of(rid)
                age = pd.to_numeric(ages[row], errors="coerce")
                sex = str(sexes[row]).strip().upper() if isinstance(sexes[row], str) else ""
                writer.append(
                    result,
                    meta={"record_id": rid, "patient_id": rid, "fold": fold,
                          "age": float(age) if np.isfinite(age) else None, "sex": sex if sex in ("M", "F") else "",
                          "source": NAME},
                    labels={"all": gold_rows[row], **{name: rows[row] for name, (_, rows) in extras.items()}},
                    norm=fold in norm_folds,
                )
                n_padded += result.shape[1] < n_samples
        conversion.entries.sort(key=lambda e: int(e[0]))      # the quarantine list in row order
        hashes = hasher.result()
        provenance = {
            **tracings_provenance(raw_dir, ZENODO_RECORD, hashes, fs, decision, lead_check,
                                  min_seconds, max_abs_mv, dataset=NAME),
            "rows": f"row i of {TRACINGS}, {ATTRIBUTES} and {GOLD} is exam i; record_id = i",
            "folds": "1 + sha256(record_id) mod 10",
            "label_sets": {"all": GOLD, **{name: p.name for name, (p, _) in extras.items()}},
        }
        conversion.finish(
            writer.finish, dataset=NAME, source_version=SOURCE_VERSION,
            label_sets={"all": list(CLASSES), **{name: list(CLASSES) for name in extras}},
            provenance=provenance, norm_folds=sorted(norm_folds),
            extra_attrs={"amplitude_unit": decision, "native_fs": NATIVE_FS, "lead_check": lead_check,
                         "n_padded": n_padded, "annotations_skipped": skipped},
        )
    return conversion.summary(padded=n_padded, amplitude_factor=decision["factor"], fs=fs)
