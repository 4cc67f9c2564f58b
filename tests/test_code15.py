"""CODE-15% and the CODE test set: the real CODE test metadata with synthetic tracings, matching by exam_id,
padding removal, amplitude-unit inference, the limb-lead check, quarantine, row-count checks, download
from a local server and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy.signal import resample_poly

from helpers import read_quarantine
from physiossl.cli import main
from physiossl.data.convert import ConversionError
from physiossl.data.ecg.sources import _code as code_format
from physiossl.data.ecg.sources import code15, codetest
from physiossl.data.ecg.store import open_store, read_labels, read_meta
from physiossl.data.fetch import DownloadError
from physiossl.data.sources import available
from physiossl.data.store import quarantine_path, refused_quarantine_path

CLASSES = ["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]
N_DEMO = 90


# --------------------------------------------------------------------------------------------- helpers
def read_parts(tree: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{part name: (tracings, exam ids)} read with h5py, independently of the package."""
    out = {}
    for path in sorted(tree.glob("exams_part*.hdf5")):
        with h5py.File(path, "r") as fh:
            out[path.name] = (fh["tracings"][()], fh["exam_id"][()])
    return out


def write_part(path: Path, tracings: np.ndarray, ids: np.ndarray) -> None:
    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("tracings", data=np.asarray(tracings, np.float32))
        fh.create_dataset("exam_id", data=np.asarray(ids, np.int64))


def editable_copy(tree: Path, dst: Path) -> Path:
    """A copy of a demo tree to modify; its SHA256SUMS.txt would (rightly) reject modified files."""
    shutil.copytree(tree, dst)
    (dst / "SHA256SUMS.txt").unlink()
    return dst


def by_exam(tree: Path) -> dict[int, np.ndarray]:
    out = {}
    for tracings, ids in read_parts(tree).values():
        for x, i in zip(tracings, ids):
            if i != 0:
                out[int(i)] = x
    return out


def expected_signal(raw: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """The valid span (first to last sample with any non-zero lead) resampled 400 → 100 Hz, (12, t)."""
    nz = np.flatnonzero(np.any(raw != 0, axis=1))
    span = raw[nz[0]:nz[-1] + 1].astype(np.float64)
    return (resample_poly(span, 1, 4, axis=0) * factor).T


@pytest.fixture(scope="module")
def code15_tree(tmp_path_factory) -> Path:
    return code15.demo(tmp_path_factory.mktemp("code15") / "raw", n_records=N_DEMO, seed=3)


@pytest.fixture(scope="module")
def code15_store(code15_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("code15_store") / "code15_100hz.zarr"
    code15.convert(code15_tree, out, fs=100, progress=False)
    return out


def synthetic_code_tracings(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4096, 12) CODE-layout tracings, quickly: 24 synth.py records (7-10 s, centred padding) reused with
    random gains."""
    rng = np.random.default_rng(seed)
    bases, _ = code_format.demo_tracings(rng, 24)
    gains = rng.uniform(0.8, 1.25, n).astype(np.float32)
    return bases[np.arange(n) % len(bases)] * gains[:, None, None]


# --------------------------------------------------------------------------------------------- CODE test set
def test_sources_are_registered():
    assert {"code15", "codetest"} <= set(available())


def test_codetest_real_metadata_converts_row_by_row(fixtures, tmp_path):
    meta_dir = fixtures / "code15_related" / "automatic-ecg-diagnosis"
    raw = tmp_path / "raw"
    (raw / "annotations").mkdir(parents=True)
    shutil.copyfile(meta_dir / "attributes.csv", raw / "attributes.csv")
    shutil.copyfile(meta_dir / "gold_standard.csv", raw / "annotations" / "gold_standard.csv")
    attributes = pd.read_csv(raw / "attributes.csv")
    gold = pd.read_csv(raw / "annotations" / "gold_standard.csv")
    assert len(attributes) == len(gold) == codetest.N_EXAMS == 827
    tracings = synthetic_code_tracings(827)
    with h5py.File(raw / "ecg_tracings.hdf5", "w") as fh:       # the real layout: 'tracings' only
        fh.create_dataset("tracings", data=tracings)

    out = tmp_path / "codetest_100hz.zarr"
    summary = codetest.convert(raw, out, fs=100, progress=False)
    assert summary["records"] == 827 and summary["quarantined"] == 0
    root = open_store(out)
    meta = read_meta(root)
    assert list(meta["record_id"]) == [str(i) for i in range(827)]
    assert list(meta["patient_id"]) == [str(i) for i in range(827)]
    np.testing.assert_array_equal(meta["age"], attributes["age"].to_numpy(np.float32))
    assert list(meta["sex"]) == list(attributes["sex"])
    assert set(meta["source"]) == {"codetest"}
    assert list(meta["fold"]) == [code15.fold_of(str(i)) for i in range(827)]
    assert set(meta["fold"]) == set(range(1, 11))
    labels, classes = read_labels(root, "all")
    assert classes == list(gold.columns) == CLASSES
    np.testing.assert_array_equal(labels, gold.to_numpy(np.uint8))
    attrs = dict(root.attrs)
    assert attrs["amplitude_unit"]["factor"] == 1.0 and attrs["lead_check"]["consistent"]
    assert attrs["provenance"]["files_sha256"]["attributes.csv"] == codetest.METADATA_SHA256["attributes.csv"]
    assert attrs["provenance"]["files_sha256"]["annotations/gold_standard.csv"] == \
        codetest.METADATA_SHA256["annotations/gold_standard.csv"]
    for i in (0, 5, 826):   # padding removed and resampled, left-aligned
        expected = expected_signal(tracings[i])
        length = int(root["lengths"][i])
        assert length == expected.shape[1]
        np.testing.assert_allclose(root["signals"][i, :, :length], expected, atol=1e-5)
    assert read_quarantine(out) == {}


@pytest.mark.parametrize("shortened", ["tracings", "attributes", "gold"])
def test_codetest_row_count_mismatch_is_an_error(tmp_path, shortened):
    raw = codetest.demo(tmp_path / "raw", n_records=12, seed=1)
    if shortened == "tracings":
        with h5py.File(raw / "ecg_tracings.hdf5", "r") as fh:
            x = fh["tracings"][()]
        with h5py.File(raw / "ecg_tracings.hdf5", "w") as fh:
            fh.create_dataset("tracings", data=x[:-1])
    else:
        path = raw / ("attributes.csv" if shortened == "attributes" else "annotations/gold_standard.csv")
        pd.read_csv(path).iloc[:-1].to_csv(path, index=False)
    out = tmp_path / "ct.zarr"
    with pytest.raises(ConversionError) as err:
        codetest.convert(raw, out, progress=False)
    message = str(err.value)
    for text in ("ecg_tracings.hdf5", "attributes.csv", "gold_standard.csv", "11", "12"):
        assert text in message
    assert not out.exists()


def test_codetest_demo_extra_annotation_sets(tmp_path):
    raw = codetest.demo(tmp_path / "raw", n_records=20, seed=2)
    out = tmp_path / "ct.zarr"
    codetest.convert(raw, out, progress=False)
    root = open_store(out)
    assert set(root.attrs["label_sets"]) == {"all", "cardiologist1", "dnn"}
    for name in ("all", "dnn"):
        labels, _ = read_labels(root, name)
        file = "gold_standard" if name == "all" else name
        np.testing.assert_array_equal(labels, pd.read_csv(raw / "annotations" / f"{file}.csv").to_numpy(np.uint8))


# --------------------------------------------------------------------------------------------- CODE-15%
def test_code15_demo_layout(code15_tree):
    exams = pd.read_csv(code15_tree / "exams.csv")
    assert list(exams.columns) == list(code15.CSV_COLUMNS)
    parts = read_parts(code15_tree)
    assert list(parts) == ["exams_part0.hdf5", "exams_part1.hdf5"]
    for tracings, ids in parts.values():
        assert tracings.dtype == np.float32 and tracings.shape[1:] == (4096, 12) and len(ids) == len(tracings)
    assert parts["exams_part1.hdf5"][1][-1] == 0 and not parts["exams_part1.hdf5"][0][-1].any()
    assert 0 not in parts["exams_part0.hdf5"][1]
    hdf5_order = np.concatenate([ids[ids != 0] for _, ids in parts.values()])
    assert sorted(hdf5_order) == sorted(exams.exam_id)
    assert list(hdf5_order) != list(exams.exam_id)           # the converter must match by exam_id
    assert exams.patient_id.value_counts().max() >= 2         # several exams per patient


def test_code15_labels_and_meta_match_csv_by_exam_id(code15_tree, code15_store):
    exams = pd.read_csv(code15_tree / "exams.csv").set_index("exam_id")
    root = open_store(code15_store)
    meta = read_meta(root)
    labels, classes = read_labels(root, "all")
    assert classes == CLASSES and root.attrs["n_records"] == N_DEMO
    parts = read_parts(code15_tree)
    hdf5_order = [str(i) for _, ids in parts.values() for i in ids if i != 0]
    assert list(meta["record_id"]) == hdf5_order               # stored in HDF5 order
    for k, rid in enumerate(meta["record_id"]):
        row = exams.loc[int(rid)]
        np.testing.assert_array_equal(labels[k], row[CLASSES].to_numpy(np.uint8))
        assert meta["patient_id"][k] == str(row.patient_id)
        assert meta["age"][k] == row.age
        assert meta["sex"][k] == ("M" if row.is_male else "F")
        assert meta["fold"][k] == code15.fold_of(str(row.patient_id))
        assert meta["source"][k] == "code15"
    folds = pd.Series(meta["fold"]).groupby(pd.Series(meta["patient_id"])).nunique()
    assert (folds == 1).all()
    death = root["targets/death"][:]
    expected = exams.loc[[int(r) for r in meta["record_id"]], "death"].map(
        lambda v: np.nan if pd.isna(v) else float(v)).to_numpy(np.float32)
    np.testing.assert_array_equal(death, expected)
    assert np.isnan(death).any() and not np.isnan(death).all()
    provenance = root.attrs["provenance"]
    assert provenance["hdf5_padding_rows"] == {"exams_part0.hdf5": 0, "exams_part1.hdf5": 1}
    assert provenance["sha256sums"].startswith("3 files match")
    assert read_quarantine(code15_store) == {}


def test_code15_centred_padding_is_removed(code15_tree, code15_store):
    raws = by_exam(code15_tree)
    root = open_store(code15_store)
    signals, lengths = root["signals"][:], root["lengths"][:]
    assert signals.shape == (N_DEMO, 12, 1024)
    short = 0
    for k, rid in enumerate(root["meta/record_id"][:]):
        raw = raws[int(rid)]
        nz = np.flatnonzero(np.any(raw != 0, axis=1))
        assert abs(nz[0] - (4096 - 1 - nz[-1])) <= 1              # the demo pads both sides (centred)
        expected = expected_signal(raw)
        assert lengths[k] == expected.shape[1] == -(-(nz[-1] + 1 - nz[0]) // 4)
        np.testing.assert_allclose(signals[k, :, :lengths[k]], expected, atol=1e-5)
        assert not signals[k, :, lengths[k]:].any()
        short += lengths[k] < 1000
    assert short > 0 and (lengths == 1000).any()                 # 7-9 s and 10 s records
    assert root.attrs["n_padded"] == N_DEMO


def test_infer_amplitude_scale_units(code15_tree):
    tracings = read_parts(code15_tree)["exams_part0.hdf5"][0]
    expected = {1.0: 1.0, 10.0: 0.1, 1000.0: 1e-3, 1e-3: 1e3}   # mV, 1e-4 V, uV, V
    for scale, factor in expected.items():
        decision = code_format.infer_amplitude_scale(tracings * np.float32(scale))
        assert decision["factor"] == pytest.approx(factor)
        assert 0.5 < decision["median_qrs_p2p_mV"] < 4.7
    assert code_format.infer_amplitude_scale(tracings)["raw_unit"] == "mV"
    assert code_format.infer_amplitude_scale(tracings * 10)["raw_unit"] == "1e-4 V"
    store_layout = np.ascontiguousarray(tracings.transpose(0, 2, 1))
    assert code_format.infer_amplitude_scale(store_layout, channel_axis=1)["factor"] == 1.0
    with pytest.raises(ValueError):
        code_format.infer_amplitude_scale(np.zeros((3, 4096, 12), np.float32))


def test_code15_1e4_volt_units_are_detected_and_stored_in_mv(code15_tree, code15_store, tmp_path):
    raw = editable_copy(code15_tree, tmp_path / "raw")
    for name, (tracings, ids) in read_parts(code15_tree).items():
        write_part(raw / name, tracings * np.float32(10.0), ids)       # 1e-4 V units
    out = tmp_path / "scaled.zarr"
    summary = code15.convert(raw, out, progress=False)
    assert summary["amplitude_factor"] == pytest.approx(0.1)
    scaled, reference = open_store(out), open_store(code15_store)
    decision = dict(scaled.attrs)["amplitude_unit"]
    assert decision["factor"] == pytest.approx(0.1) and decision["raw_unit"] == "1e-4 V"
    assert decision["median_qrs_p2p_raw"] == pytest.approx(10 * reference.attrs["amplitude_unit"]["median_qrs_p2p_raw"])
    assert "rule" in decision and decision["n_records"] == N_DEMO
    assert dict(scaled.attrs)["provenance"]["amplitude_unit"] == decision
    np.testing.assert_array_equal(scaled["lengths"][:], reference["lengths"][:])
    np.testing.assert_allclose(scaled["signals"][:], reference["signals"][:], rtol=1e-5, atol=1e-6)

    forced = tmp_path / "forced.zarr"                                  # an explicit factor overrides the rule
    code15.convert(code15_tree, forced, amplitude_scale=0.5, progress=False)
    np.testing.assert_allclose(open_store(forced)["signals"][:], 0.5 * reference["signals"][:], rtol=1e-5, atol=1e-6)
    assert "given" in open_store(forced).attrs["amplitude_unit"]["rule"]


def test_code15_quarantine_cases(code15_tree, tmp_path):
    raw = editable_copy(code15_tree, tmp_path / "raw")
    exams = pd.read_csv(raw / "exams.csv")
    (t0, ids0), (t1, ids1) = read_parts(code15_tree).values()
    missing, nan_exam, zero_exam, dup_hdf5 = (int(i) for i in ids0[:4])
    csv_dup, bad_label, no_patient = (int(i) for i in ids1[:3])
    orphan, lost = 99_999_991, 99_999_992
    keep = ids0 != missing
    t0 = t0.copy()
    t0[ids0 == nan_exam, 2000, 3] = np.nan
    t0[ids0 == zero_exam] = 0.0
    write_part(raw / "exams_part0.hdf5", t0[keep], ids0[keep])
    body, pad = t1[:-1], t1[-1:]
    extra = np.stack([t0[ids0 == dup_hdf5][0], t1[1]])
    write_part(raw / "exams_part1.hdf5", np.concatenate([body, extra, pad]),
               np.concatenate([ids1[:-1], [dup_hdf5, orphan], [0]]))
    exams["AF"] = exams["AF"].astype(object)
    exams.loc[exams.exam_id == bad_label, "AF"] = "maybe"
    exams.loc[exams.exam_id == no_patient, "patient_id"] = np.nan
    lost_row = exams.iloc[[0]].assign(exam_id=lost, trace_file="exams_part7.hdf5")
    dup_row = exams[exams.exam_id == csv_dup]
    pd.concat([exams, lost_row, dup_row]).to_csv(raw / "exams.csv", index=False)

    out = tmp_path / "q.zarr"
    summary = code15.convert(raw, out, max_quarantine_fraction=0.5, progress=False)
    reasons = read_quarantine(out)
    expected = {missing: "not found in its trace_file exams_part0.hdf5", orphan: "not in exams.csv",
                lost: "trace_file exams_part7.hdf5 not found", dup_hdf5: "on 2 HDF5 rows",
                csv_dup: "on 2 rows of exams.csv", nan_exam: "non-finite", zero_exam: "all-zero",
                bad_label: "label column AF: 'maybe' is not a boolean", no_patient: "missing patient_id"}
    assert set(reasons) == {str(k) for k in expected}
    for exam, text in expected.items():
        assert text in reasons[str(exam)], (exam, reasons[str(exam)])
    assert summary["quarantined"] == len(expected)
    root = open_store(out)
    stored = set(root["meta/record_id"][:])
    assert root.attrs["n_records"] == N_DEMO - 7 and not stored & {str(k) for k in expected}

    strict = tmp_path / "strict.zarr"
    with pytest.raises(ConversionError, match="quarantined"):
        code15.convert(raw, strict, progress=False)
    assert not strict.exists() and refused_quarantine_path(strict).is_file() and not quarantine_path(strict).exists()


def test_code15_changed_file_fails_against_sha256sums(code15_tree, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(code15_tree, raw)
    exams = pd.read_csv(raw / "exams.csv")
    exams.loc[0, "age"] = exams.loc[0, "age"] + 1
    exams.to_csv(raw / "exams.csv", index=False)
    out = tmp_path / "s.zarr"
    with pytest.raises(ConversionError, match="exams.csv"):
        code15.convert(raw, out, progress=False)
    assert not out.exists()


def test_limb_lead_check(code15_tree, tmp_path):
    tracings = read_parts(code15_tree)["exams_part0.hdf5"][0][:20]
    spans = [x[np.any(x != 0, axis=1)] for x in tracings]
    assert code_format.check_limb_leads(spans)["consistent"]
    swapped = [x[:, [0, 1, 2, 4, 5, 3]] for x in spans]                 # aVL, aVF, aVR order
    result = code_format.check_limb_leads(swapped)
    assert result["contradiction"] and not result["consistent"]
    raw = editable_copy(code15_tree, tmp_path / "raw")
    order = [0, 1, 2, 4, 5, 3, 6, 7, 8, 9, 10, 11]
    for name, (x, ids) in read_parts(code15_tree).items():
        write_part(raw / name, x[:, :, order], ids)
    with pytest.raises(ConversionError, match="lead order"):
        code15.convert(raw, tmp_path / "l.zarr", progress=False)


# --------------------------------------------------------------------------------------------- download, CLI
def serve_zenodo(host, record: str, files: dict[str, bytes], endpoint: str = "record") -> None:
    """Zenodo's API for ``record``: ``/api/records/<id>`` with files[] (key, size, checksum "md5:..", links.self
    ending in /content, the key not URL-encoded), or the ``/files`` endpoint's {"entries": [...]}."""
    entries = []
    for key, data in files.items():
        host.file(f"/api/records/{record}/files/{key}/content", data)
        entries.append({"id": f"uuid-{key}", "key": key, "size": len(data),
                        "checksum": f"md5:{hashlib.md5(data).hexdigest()}",
                        "links": {"self": f"{host.base}/api/records/{record}/files/{key}/content"}})
    doc = {"id": int(record), "recid": record, "files": entries} if endpoint == "record" else \
        {"id": int(record), "files": {"enabled": True, "entries": entries}}
    host.json(f"/api/records/{record}", doc)


def test_download_code15_from_zenodo(code15_tree, fake_host, tmp_path):
    files = {"exams.csv": (code15_tree / "exams.csv").read_bytes()}
    for k in range(2):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.write(code15_tree / f"exams_part{k}.hdf5", f"exams_part{k}.hdf5")
        files[f"exams_part{k}.zip"] = buffer.getvalue()
    serve_zenodo(fake_host, "4916206", files)
    api = f"{fake_host.base}/api"
    fake_host.fault["/api/records/4916206/files/exams_part0.zip/content"] = "altered"
    with pytest.raises(DownloadError, match=r"exams_part0\.zip.*md5.*rerun"):
        code15.download(tmp_path / "bad" / "code15", parts=range(2), api=api, progress=False)
    fake_host.fault.clear()
    out = tmp_path / "data" / "code15"
    tree = code15.download(out, parts=range(2), api=api, progress=False)
    for name in ("exams.csv", "exams_part0.hdf5", "exams_part1.hdf5"):
        assert (tree / name).read_bytes() == (code15_tree / name).read_bytes()
    assert (tree / "SHA256SUMS.txt").is_file()
    assert json.loads((tree / "HOST_MANIFEST.json").read_text())["host"] == "zenodo"
    assert not list((tmp_path / "data" / ".downloads" / "code15").glob("*.zip"))   # archives removed
    assert code15.convert(tree, tmp_path / "c.zarr", progress=False)["records"] == N_DEMO
    with pytest.raises(DownloadError, match="lists no exams_part5.zip"):
        code15.download(tmp_path / "more" / "code15", parts=[5], api=api, progress=False)


@pytest.fixture
def codetest_zip(tmp_path) -> tuple[Path, bytes]:
    demo_tree = codetest.demo(tmp_path / "demo", n_records=10, seed=4)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in demo_tree.rglob("*"):
            if path.is_file() and path.name != "SHA256SUMS.txt":
                zf.write(path, f"data/{path.relative_to(demo_tree).as_posix()}")
    return demo_tree, buffer.getvalue()


@pytest.mark.parametrize("endpoint", ["record", "files"])
def test_download_codetest_from_zenodo(codetest_zip, fake_host, tmp_path, endpoint):
    demo_tree, data = codetest_zip
    serve_zenodo(fake_host, "3625006", {"data.zip": data, "old data.zip": b"x"}, endpoint)
    tree = codetest.download(tmp_path / "raw" / "codetest", api=f"{fake_host.base}/api", progress=False,
                             metadata_url=f"{fake_host.base}/nowhere")
    assert (tree / "ecg_tracings.hdf5").read_bytes() == (demo_tree / "ecg_tracings.hdf5").read_bytes()
    assert (tree / "annotations" / "gold_standard.csv").is_file() and (tree / "SHA256SUMS.txt").is_file()
    manifest = json.loads((tree / "HOST_MANIFEST.json").read_text())
    assert manifest["files"] == [{"path": "data.zip",
                                  "url": f"{fake_host.base}/api/records/3625006/files/data.zip/content",
                                  "size": len(data), "md5": hashlib.md5(data).hexdigest(), "sha256": None}]
    assert codetest.convert(tree, tmp_path / "ct.zarr", progress=False)["records"] == 10


@pytest.mark.parametrize("fault, words", [("altered", "md5"), ("truncated", "bytes, expected"), ("html", "HTML page")])
def test_download_codetest_refuses_what_zenodo_does_not_vouch_for(codetest_zip, fake_host, tmp_path, fault, words):
    _, data = codetest_zip
    serve_zenodo(fake_host, "3625006", {"data.zip": data})
    fake_host.fault["/api/records/3625006/files/data.zip/content"] = fault
    out = tmp_path / "raw" / "codetest"
    with pytest.raises(DownloadError, match=words) as info:
        codetest.download(out, api=f"{fake_host.base}/api", progress=False, metadata_url=f"{fake_host.base}/x")
    assert "data.zip" in str(info.value) and "rerun" in str(info.value)
    assert not out.exists() and not (tmp_path / "raw" / ".downloads" / "data.zip").exists()


def test_cli_convert_code15_and_codetest(code15_tree, tmp_path):
    out = tmp_path / "stores" / "code15_100hz.zarr"
    assert main(["convert", "code15", "--raw", str(code15_tree), "--out", str(out)]) == 0
    assert open_store(out).attrs["n_records"] == N_DEMO
    raw = tmp_path / "raw" / "codetest"
    assert main(["demo", "codetest", "--out", str(raw), "--n-records", "15"]) == 0
    out = tmp_path / "stores" / "codetest_100hz.zarr"
    assert main(["convert", "codetest", "--raw", str(raw), "--out", str(out)]) == 0
    assert open_store(out).attrs["n_records"] == 15
