"""Chapman–Shaoxing source: the genuine figshare record and spreadsheets, the ECGData header variant, the demo
tree, quarantine, folds, download from a local stand-in host, CLI, and the PhysioNet WFDB release."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.io import loadmat
from scipy.signal import resample_poly

from helpers import (
    CANONICAL,
    assert_cli_converts,
    assert_fraction_failure,
    assert_missing_input_fails,
    copy_tree,
    leftovers,
    read_quarantine,
    sha256,
)
from physiossl.data.convert import ConversionError
from physiossl.data.ecg.sources import chapman
from physiossl.data.ecg.store import open_store, read_labels, read_meta
from physiossl.data.fetch import DownloadError, verify_sha256sums

RECORD = "MUSE_20180111_155115_19000"


# --------------------------------------------------------------------------------------------- helpers
def present(root, label_set: str) -> list[list[str]]:
    hot, classes = read_labels(root, label_set)
    return [[classes[j] for j in np.nonzero(row)[0]] for row in hot]


def table_codes(path: Path) -> list[str]:
    return sorted(str(c).strip() for c in pd.read_excel(path)["Acronym Name"])


@pytest.fixture(scope="module")
def chapman_fixtures(fixtures) -> Path:
    return fixtures / "chapman"


@pytest.fixture(scope="module")
def diagnostics(chapman_fixtures) -> pd.DataFrame:
    return pd.read_excel(chapman_fixtures / "Diagnostics.xlsx")


@pytest.fixture(scope="module")
def real_tree(chapman_fixtures, diagnostics, tmp_path_factory) -> Path:
    """The genuine CSV, the genuine name tables and the genuine Diagnostics.xlsx cut to that CSV's row."""
    raw = tmp_path_factory.mktemp("chapman_real") / "raw"
    (raw / "ECGDataDenoised").mkdir(parents=True)
    shutil.copyfile(chapman_fixtures / "ECGDataDenoised" / f"{RECORD}.csv", raw / "ECGDataDenoised" / f"{RECORD}.csv")
    diagnostics[diagnostics.FileName == RECORD].to_excel(raw / "Diagnostics.xlsx", index=False)
    for name in ("RhythmNames.xlsx", "ConditionNames.xlsx"):
        shutil.copyfile(chapman_fixtures / name, raw / name)
    return raw


@pytest.fixture(scope="module")
def csv_mv(chapman_fixtures) -> np.ndarray:
    """The genuine record as (12, 5000) float64 mV, read independently of the module."""
    return pd.read_csv(chapman_fixtures / "ECGDataDenoised" / f"{RECORD}.csv", header=None).to_numpy().T / 1000.0


@pytest.fixture(scope="module")
def store100(real_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chapman100") / "chapman_100hz.zarr"
    summary = chapman.convert(real_tree, out, fs=100, progress=False)
    assert summary == {**summary, "records": 1, "quarantined": 0}
    return out


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    return chapman.demo(tmp_path_factory.mktemp("chapman_small") / "raw", n_records=12, seed=7)


@pytest.fixture
def demo_copy(small_demo, tmp_path) -> Path:
    """A copy of the demo tree to modify; its SHA256SUMS.txt would (rightly) refuse modified files."""
    raw = copy_tree(small_demo, tmp_path / "raw")
    (raw / "SHA256SUMS.txt").unlink()
    return raw


# --------------------------------------------------------------------------------------------- real files
def test_fixture_diagnostics_is_the_full_release(diagnostics):
    assert len(diagnostics) == 10646 and diagnostics.FileName.is_unique
    assert list(diagnostics.columns) == list(chapman.DIAGNOSTICS_COLUMNS)
    row = diagnostics[diagnostics.FileName == RECORD].iloc[0]
    assert (row.Rhythm, row.Beat, int(row.PatientAge), row.Gender) == ("ST", "AQW RBBB", 88, "MALE")


def test_real_record_100hz_is_polyphase_resampled(store100, csv_mv):
    root = open_store(store100)
    sig = root["signals"][:]
    assert sig.dtype == np.float32 and sig.shape == (1, 12, 1000)
    assert root["lengths"][:].tolist() == [1000]
    expected = resample_poly(csv_mv, 1, 5, axis=1)
    np.testing.assert_allclose(sig[0], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(sig[0], csv_mv[:, ::5], atol=1e-3)  # anti-aliased, not plain subsampling
    # mV, not µV: a QRS of a few mV in lead II
    assert 0.3 < np.ptp(sig[0, 1]) < 10
    prov = root.attrs["provenance"]
    assert prov["resampling"] == "resample_poly 500 Hz → 100 Hz"
    assert prov["records_from"] == "ECGDataDenoised" and prov["layout"] == "figshare"


def test_real_record_500hz_is_the_csv_in_mv(real_tree, csv_mv, tmp_path):
    out = tmp_path / "chapman_500hz.zarr"
    chapman.convert(real_tree, out, fs=500, progress=False)
    root = open_store(out)
    assert root.attrs["fs"] == 500 and root.attrs["provenance"]["resampling"] == "none"
    sig = root["signals"][:]
    assert sig.shape == (1, 12, 5000)
    np.testing.assert_array_equal(sig[0], csv_mv.astype(np.float32))
    # column 0 is lead I, column 11 is V6 (the documented order of the headerless files)
    first_line = (real_tree / "ECGDataDenoised" / f"{RECORD}.csv").read_text().splitlines()[0].split(",")
    assert sig[0, 0, 0] == np.float32(float(first_line[0]) / 1000) and first_line[0] == "-165.33"
    assert sig[0, 11, 0] == np.float32(float(first_line[11]) / 1000)


def test_real_record_meta_labels_targets(store100, real_tree, chapman_fixtures):
    root = open_store(store100)
    meta = read_meta(root)
    assert [str(x) for x in meta["record_id"]] == [RECORD]
    assert [str(x) for x in meta["patient_id"]] == [RECORD]
    assert meta["age"].tolist() == [88.0]
    assert [str(x) for x in meta["sex"]] == ["M"]
    assert [str(x) for x in meta["source"]] == ["chapman"]
    assert 1 <= int(meta["fold"][0]) <= 10
    assert present(root, "rhythm") == [["ST"]]
    assert present(root, "condition") == [["AQW", "RBBB"]]
    assert present(root, "all") == [["AQW", "RBBB", "ST"]]
    assert root["targets/ventricular_rate"][:].tolist() == [126.0]
    assert root["targets/qrs_duration_ms"][:].tolist() == [178.0]
    assert abs(float(root["targets/heart_rate"][0]) - 126.0) <= 3.0  # derived from the signal by the writer


def test_real_record_attrs_and_classes_from_name_tables(store100, real_tree, chapman_fixtures):
    root = open_store(store100)
    attrs = dict(root.attrs)
    assert attrs["schema"] == "physiossl.ecg/1" and attrs["units"] == "mV" and attrs["leads"] == CANONICAL
    assert attrs["dataset"] == "chapman" and attrs["source_version"] == chapman.SOURCE_VERSION
    rhythms = table_codes(chapman_fixtures / "RhythmNames.xlsx")
    conditions = table_codes(chapman_fixtures / "ConditionNames.xlsx")
    assert len(rhythms) == 11 and len(conditions) == 56
    assert attrs["label_sets"] == {"rhythm": rhythms, "condition": conditions, "all": sorted(rhythms + conditions)}
    assert "SI" in rhythms and "SA" not in rhythms
    assert attrs["provenance"]["code_aliases"] == {"rhythm": {"SA": "SI"}}
    files = attrs["provenance"]["files_sha256"]
    assert files == {name: sha256(real_tree / name)
                     for name in ("Diagnostics.xlsx", "RhythmNames.xlsx", "ConditionNames.xlsx")}
    assert files["RhythmNames.xlsx"] == sha256(chapman_fixtures / "RhythmNames.xlsx")
    assert attrs["provenance"]["class_names"]["rhythm"]["SI"] == "Sinus Irregularity"


def test_full_real_diagnostics_sa_alias_and_missing_csvs(chapman_fixtures, diagnostics, tmp_path):
    """The genuine tree as shipped here: one CSV for 10,646 rows. Every other row is quarantined for its
    missing CSV, none for its codes (the 399 'SA' rows map to the name table's 'SI')."""
    assert (diagnostics.Rhythm == "SA").sum() == 399
    out = tmp_path / "s" / "chapman.zarr"
    with pytest.raises(ConversionError, match="10645 of 10646"):
        chapman.convert(chapman_fixtures, out, fs=100, progress=False)
    assert not out.exists() and not leftovers(out.parent)
    summary = chapman.convert(chapman_fixtures, out, fs=100, max_quarantine_fraction=1.0, progress=False)
    assert summary == {**summary, "records": 1, "quarantined": 10645}
    q = read_quarantine(out)
    assert len(q) == 10645 and RECORD not in q
    assert all(reason.startswith("missing CSV ECGDataDenoised/") for reason in q.values())
    folds = read_meta(open_store(out))["fold"]
    assert 1 <= int(folds[0]) <= 10


def test_header_variant_gives_the_same_signal(real_tree, store100, tmp_path):
    """ECGData CSVs carry a lead-name header row; with the columns permuted, the names set the order."""
    raw = copy_tree(real_tree, tmp_path / "raw")
    src = raw / "ECGDataDenoised" / f"{RECORD}.csv"
    data = pd.read_csv(src, header=None, dtype=str).to_numpy()
    (raw / "ECGData").mkdir()
    perm = [11, 3, 0, 7, 5, 1, 9, 4, 2, 10, 6, 8]
    lines = [",".join(CANONICAL[k] for k in perm)] + [",".join(row[perm]) for row in data]
    (raw / "ECGData" / f"{RECORD}.csv").write_text("\n".join(lines) + "\n")
    shutil.rmtree(raw / "ECGDataDenoised")
    out = tmp_path / "hdr.zarr"
    assert chapman.convert(raw, out, fs=100, max_quarantine_fraction=0.0, progress=False)["records"] == 1
    root = open_store(out)
    assert root.attrs["provenance"]["records_from"] == "ECGData"
    np.testing.assert_array_equal(root["signals"][:], open_store(store100)["signals"][:])


def test_header_row_in_canonical_order(real_tree, csv_mv):
    path = real_tree.parent / "with_header.csv"
    text = (real_tree / "ECGDataDenoised" / f"{RECORD}.csv").read_text()
    path.write_text(",".join(CANONICAL) + "\n" + text)
    assert len(path.read_text()) == 441786  # the size of the published ECGData-style copy of this record
    np.testing.assert_array_equal(chapman.read_csv_record(path), csv_mv)


# --------------------------------------------------------------------------------------------- demo tree
@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory) -> Path:
    return chapman.demo(tmp_path_factory.mktemp("chapman_demo") / "raw", n_records=80, seed=3)


def test_demo_tree_has_the_real_format(demo_tree, chapman_fixtures, diagnostics):
    diag = pd.read_excel(demo_tree / "Diagnostics.xlsx")
    assert list(diag.columns) == list(diagnostics.columns)
    assert len(diag) == 80 and diag.FileName.is_unique
    assert all(re.fullmatch(r"MUSE_\d{8}_\d{6}_\d{5}", f) for f in diag.FileName)
    for name in ("RhythmNames.xlsx", "ConditionNames.xlsx"):
        pd.testing.assert_frame_equal(pd.read_excel(demo_tree / name), pd.read_excel(chapman_fixtures / name))
    rhythms = set(table_codes(chapman_fixtures / "RhythmNames.xlsx")) | {"SA"}
    conditions = set(table_codes(chapman_fixtures / "ConditionNames.xlsx")) | {"NONE"}
    assert set(diag.Rhythm) <= rhythms and {c for b in diag.Beat for c in b.split()} <= conditions
    assert set(diag.Gender) == {"MALE", "FEMALE"}
    path = demo_tree / "ECGDataDenoised" / f"{diag.FileName[0]}.csv"
    assert re.fullmatch(r"[-0-9.e+]+(,[-0-9.e+]+){11}", path.read_text().splitlines()[0])  # no header row
    x = pd.read_csv(path, header=None).to_numpy()
    assert x.shape == (5000, 12) and 100 < np.abs(x).max() < 20000  # µV


def test_demo_tree_converts(demo_tree, tmp_path):
    out = tmp_path / "demo.zarr"
    summary = chapman.convert(demo_tree, out, fs=100, progress=False)
    assert summary == {**summary, "records": 80, "quarantined": 0}
    assert read_quarantine(out) == {}
    root = open_store(out)
    assert sorted(set(read_meta(root)["fold"].tolist())) == list(range(1, 11))
    rhythm, _ = read_labels(root, "rhythm")
    condition, _ = read_labels(root, "condition")
    assert (rhythm.sum(axis=0) > 0).sum() >= 4 and (rhythm.sum(axis=1) == 1).all()
    assert (condition.sum(axis=0) > 0).sum() >= 5 and (condition.sum(axis=1) > 1).any()
    assert "SI" in {c for row in present(root, "rhythm") for c in row}  # demo writes SA like the real file
    hr = root["targets/ventricular_rate"][:]
    rows = present(root, "rhythm")
    st = [h for h, r in zip(hr, rows) if r == ["ST"]]
    sb = [h for h, r in zip(hr, rows) if r == ["SB"]]
    assert st and sb and min(st) > max(sb)
    folds = read_meta(root)["fold"]
    norm = root.attrs["norm"]
    assert norm["folds"] == list(range(1, 9))
    assert norm["n_samples"] == 1000 * int(np.isin(folds, range(1, 9)).sum())


def test_demo_is_seeded(tmp_path):
    a = chapman.demo(tmp_path / "a", n_records=3, seed=5)
    b = chapman.demo(tmp_path / "b", n_records=3, seed=5)
    c = chapman.demo(tmp_path / "c", n_records=3, seed=6)
    da, db, dc = (pd.read_excel(t / "Diagnostics.xlsx") for t in (a, b, c))
    pd.testing.assert_frame_equal(da, db)
    assert not da.equals(dc)
    rel = f"ECGDataDenoised/{da.FileName[1]}.csv"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()


# --------------------------------------------------------------------------------------------- folds
def test_stratified_folds_balance_and_determinism():
    rng = np.random.default_rng(0)
    ids = [f"r{i:04d}" for i in range(600)]
    labels = [[str(rng.choice(["SR", "SB", "AFIB", "ST"], p=[0.4, 0.3, 0.2, 0.1]))]
              + (["RBBB"] if rng.random() < 0.15 else []) + (["TWC"] if rng.random() < 0.3 else []) for _ in ids]
    folds = chapman.stratified_folds(ids, labels)
    assert set(folds.values()) == set(range(1, 11))
    per_fold = np.bincount(list(folds.values()), minlength=11)[1:]
    assert per_fold.max() - per_fold.min() <= 2
    for code in ("SR", "SB", "AFIB", "ST", "RBBB", "TWC"):
        counts = np.bincount([folds[i] for i, lab in zip(ids, labels) if code in lab], minlength=11)[1:]
        assert counts.max() - counts.min() <= 2, (code, counts)
    shuffled = rng.permutation(len(ids))
    assert chapman.stratified_folds([ids[i] for i in shuffled], [labels[i] for i in shuffled]) == folds
    assert chapman.stratified_folds(ids, labels, seed=1) != folds


# --------------------------------------------------------------------------------------------- quarantine
def _edit_diagnostics(raw: Path, edit) -> pd.DataFrame:
    diag = pd.read_excel(raw / "Diagnostics.xlsx")
    diag = edit(diag)
    diag.to_excel(raw / "Diagnostics.xlsx", index=False)
    return diag


def _csv(raw: Path, k: int) -> Path:
    name = pd.read_excel(raw / "Diagnostics.xlsx").FileName[k]
    return raw / "ECGDataDenoised" / f"{name}.csv"


def _damage_missing(raw):
    _csv(raw, 4).unlink()


def _damage_truncated(raw):
    path = _csv(raw, 4)
    path.write_text("\n".join(path.read_text().splitlines()[:3100]) + "\n")


def _damage_columns(raw):
    path = _csv(raw, 4)
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in path.read_text().splitlines()) + "\n")


def _damage_header_lead(raw):
    path = _csv(raw, 4)
    path.write_text(",".join(CANONICAL[:-1] + ["X6"]) + "\n" + path.read_text())


def _damage_nan(raw):
    path = _csv(raw, 4)
    lines = path.read_text().splitlines()
    fields = lines[250].split(",")
    fields[7] = ""
    lines[250] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def _damage_rhythm(raw):
    _edit_diagnostics(raw, lambda d: d.assign(Rhythm=[("XYZ" if i == 4 else r) for i, r in enumerate(d.Rhythm)]))


def _damage_condition(raw):
    _edit_diagnostics(raw, lambda d: d.assign(Beat=[("RBBB FOO" if i == 4 else b) for i, b in enumerate(d.Beat)]))


DAMAGES = {
    "missing_csv": (_damage_missing, r"missing CSV"),
    "truncated_csv": (_damage_truncated, r"truncated.*3100 rows"),
    "wrong_column_count": (_damage_columns, r"11 columns, expected 12"),
    "header_missing_lead": (_damage_header_lead, r"missing lead.*V6"),
    "nan_sample": (_damage_nan, r"NaN.*row 251, column 8"),
    "unknown_rhythm": (_damage_rhythm, r"unknown label code: rhythm code 'XYZ'"),
    "unknown_condition": (_damage_condition, r"unknown label code: condition code 'FOO'"),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_quarantine(case, demo_copy, tmp_path):
    names = pd.read_excel(demo_copy / "Diagnostics.xlsx").FileName.tolist()
    damage, pattern = DAMAGES[case]
    damage(demo_copy)
    out = tmp_path / "stores" / "chapman.zarr"
    summary = chapman.convert(demo_copy, out, fs=100, max_quarantine_fraction=0.1, progress=False)
    q = read_quarantine(out)
    assert list(q) == [names[4]], q
    assert re.search(pattern, q[names[4]]), q[names[4]]
    root = open_store(out)
    assert [str(x) for x in read_meta(root)["record_id"]] == names[:4] + names[5:]
    assert summary["records"] == 11 and summary["quarantined"] == 1
    assert np.isfinite(root["signals"][:]).all()


def test_quarantine_duplicate_filename(demo_copy, tmp_path):
    diag = _edit_diagnostics(demo_copy, lambda d: pd.concat([d, d.iloc[[2]].assign(Rhythm="AFIB")], ignore_index=True))
    out = tmp_path / "dup.zarr"
    summary = chapman.convert(demo_copy, out, fs=100, max_quarantine_fraction=0.1, progress=False)
    dup = diag.FileName[2]
    q = read_quarantine(out)
    assert list(q) == [dup] and "duplicate FileName" in q[dup]
    root = open_store(out)
    ids = [str(x) for x in read_meta(root)["record_id"]]
    assert ids == diag.FileName[:12].tolist() and summary["records"] == 12
    assert present(root, "rhythm")[2] == [chapman.RHYTHM_ALIASES.get(diag.Rhythm[2], diag.Rhythm[2])]  # the first row's


def test_above_fraction_fails_and_leaves_no_store(demo_copy, tmp_path):
    _damage_truncated(demo_copy)
    quarantined = assert_fraction_failure(chapman.convert, demo_copy, tmp_path / "stores" / "chapman.zarr", 0.05)
    assert len(quarantined) == 1


@pytest.mark.parametrize("name", ["Diagnostics.xlsx", "RhythmNames.xlsx", "ConditionNames.xlsx"])
def test_missing_spreadsheet(demo_copy, tmp_path, name):
    assert_missing_input_fails(chapman.convert, demo_copy, name, tmp_path / "x.zarr")


def test_missing_diagnostics_column(demo_copy, tmp_path):
    _edit_diagnostics(demo_copy, lambda d: d.drop(columns=["Beat"]))
    with pytest.raises(ConversionError, match=r"Diagnostics.xlsx: missing columns \['Beat'\]"):
        chapman.convert(demo_copy, tmp_path / "x.zarr", fs=100, progress=False)


def _write_sheets(path: Path, sheets: dict[str, pd.DataFrame]) -> None:
    with pd.ExcelWriter(path) as writer:
        for name, table in sheets.items():
            table.to_excel(writer, sheet_name=name, index=False)


def test_diagnostics_sheet_is_chosen_by_its_columns_not_its_position(demo_copy, tmp_path):
    path = demo_copy / "Diagnostics.xlsx"
    diag = pd.read_excel(path)
    _write_sheets(path, {"Notes": pd.DataFrame({"note": ["exported from the hospital system"]}), "Sheet1": diag})
    chapman.convert(demo_copy, tmp_path / "x.zarr", fs=100, progress=False)
    assert open_store(tmp_path / "x.zarr").attrs["n_records"] == len(diag)


def test_a_filtered_copy_of_the_diagnostics_sheet_is_refused(demo_copy, tmp_path):
    path = demo_copy / "Diagnostics.xlsx"
    diag = pd.read_excel(path)
    _write_sheets(path, {"AFIB only": diag[diag.Rhythm == "AFIB"], "Sheet1": diag})
    with pytest.raises(ConversionError, match=r"Diagnostics.xlsx: 2 sheets \('AFIB only', 'Sheet1'\), 2 of them with "
                                              r"the expected columns"):
        chapman.convert(demo_copy, tmp_path / "x.zarr", fs=100, progress=False)


# --------------------------------------------------------------------------------------------- CLI
def test_cli_convert(real_tree, tmp_path, capsys):
    assert_cli_converts(capsys, "chapman", real_tree, tmp_path / "cli.zarr", 1, "--fs", "100")


def test_cli_convert_derives_heart_rates_in_worker_processes(real_tree, tmp_path, capsys):
    root = assert_cli_converts(capsys, "chapman", real_tree, tmp_path / "workers.zarr", 1, "--fs", "100",
                               "--workers", "2")
    assert abs(float(root["targets/heart_rate"][0]) - float(root["targets/ventricular_rate"][0])) < 3


# --------------------------------------------------------------------------------------------- download
#: figshare file ids of collection 4560497 (ndownloader/files/<id>)
FIGSHARE_IDS = {"Diagnostics.xlsx": 15653771, "RhythmNames.xlsx": 15651296, "ConditionNames.xlsx": 15651293,
                "ECGDataDenoised.zip": 15652862}


def serve_figshare(real_tree: Path, host, md5: dict | None = None) -> tuple[str, str]:
    """The real files (one record's CSV in the zip) behind a figshare API of the real shape: the collection lists
    two articles, each article's files come with size, computed_md5 and download_url. Returns (collection URL,
    API base). AttributesDictionary.xlsx (optional) is not served."""
    data = {name: (real_tree / name).read_bytes() for name in ("Diagnostics.xlsx", "RhythmNames.xlsx",
                                                              "ConditionNames.xlsx")}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(real_tree / "ECGDataDenoised" / f"{RECORD}.csv", f"ECGDataDenoised/{RECORD}.csv")
    data["ECGDataDenoised.zip"] = buffer.getvalue()
    articles = {1: ["Diagnostics.xlsx", "RhythmNames.xlsx", "ConditionNames.xlsx"], 2: ["ECGDataDenoised.zip"]}
    host.json("/v2/collections/4560497/articles", [
        {"id": aid, "title": f"article {aid}", "url_public_api": f"https://api.figshare.com/v2/articles/{aid}"}
        for aid in articles])
    for aid, names in articles.items():
        entries = []
        for name in names:
            fid = FIGSHARE_IDS[name]
            digest = (md5 or {}).get(name, hashlib.md5(data[name]).hexdigest())
            entries.append({"id": fid, "name": name, "size": len(data[name]), "is_link_only": False,
                            "download_url": host.file(f"/ndownloader/files/{fid}", data[name]),
                            "supplied_md5": digest, "computed_md5": digest, "mimetype": "application/octet-stream"})
        host.json(f"/v2/articles/{aid}/files", entries)
    return "https://figshare.com/collections/ChapmanECG/4560497/2", f"{host.base}/v2"


def test_download_from_figshare_verified_then_convert(real_tree, fake_host, tmp_path):
    url, api = serve_figshare(real_tree, fake_host)
    out = tmp_path / "data" / "chapman"
    assert chapman.download(out, url=url, api=api, progress=False) == out
    assert sha256(out / "ECGDataDenoised" / f"{RECORD}.csv") == sha256(real_tree / "ECGDataDenoised" / f"{RECORD}.csv")
    assert sha256(out / "Diagnostics.xlsx") == sha256(real_tree / "Diagnostics.xlsx")
    manifest = json.loads((out / "HOST_MANIFEST.json").read_text())
    assert manifest["host"] == "figshare" and len(manifest["answer"]["articles"]) == 2
    assert {f["path"]: f["md5"] for f in manifest["files"]}["Diagnostics.xlsx"] == \
        hashlib.md5((real_tree / "Diagnostics.xlsx").read_bytes()).hexdigest()
    assert verify_sha256sums(out) == 5
    assert not leftovers(out.parent)
    summary = chapman.convert(out, tmp_path / "s.zarr", fs=100, max_quarantine_fraction=0.0, progress=False)
    assert summary["records"] == 1


@pytest.mark.parametrize("fault, words", [("altered", "md5"), ("truncated", "bytes, expected"),
                                          ("html", "HTML page")])
def test_download_refuses_what_figshare_does_not_vouch_for(real_tree, fake_host, tmp_path, fault, words):
    """Other bytes than the listed MD5, a truncated body, an HTML error page with status 200: refused, naming the
    file and what to do; nothing is installed and no bad file stays in the download cache."""
    url, api = serve_figshare(real_tree, fake_host)
    fake_host.fault[f"/ndownloader/files/{FIGSHARE_IDS['Diagnostics.xlsx']}"] = fault
    out = tmp_path / "data" / "chapman"
    with pytest.raises(DownloadError, match=words) as info:
        chapman.download(out, url=url, api=api, progress=False)
    assert "Diagnostics.xlsx" in str(info.value) and "rerun" in str(info.value)
    assert not out.exists()
    assert not list((tmp_path / "data" / ".downloads" / "chapman").glob("Diagnostics.xlsx*"))
    fake_host.fault.clear()                     # the host is fixed: a rerun installs the release
    assert chapman.download(out, url=url, api=api, progress=False) == out


def test_download_without_checksums_needs_an_opt_out(real_tree, fake_host, tmp_path):
    url, api = serve_figshare(real_tree, fake_host, md5={"RhythmNames.xlsx": ""})
    out = tmp_path / "data" / "chapman"
    with pytest.raises(DownloadError, match=r"no checksum for RhythmNames\.xlsx.*verify: false"):
        chapman.download(out, url=url, api=api, progress=False)
    assert chapman.download(out, url=url, api=api, progress=False, verify=False) == out
    with pytest.raises(DownloadError, match="lists no Diagnostics.xlsx"):
        fake_host.json("/v2/articles/1/files", [])
        chapman.download(tmp_path / "other" / "chapman", url=url, api=api, progress=False)


def test_cli_download_reads_the_options_from_the_config(real_tree, fake_host, tmp_path, capsys):
    """What the download rule runs: `physiossl download <dataset> --configfile C --out DIR`, the dataset's
    download options (url, api) from the config; an option the source does not take is named."""
    import yaml

    from physiossl.cli import main
    from test_pretrain import REPO

    url, api = serve_figshare(real_tree, fake_host)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["shaoxing"] = {"source": "chapman", "mode": "download", "fs": 100,
                                      "max_quarantine_fraction": 0.01, "download": {"url": url, "api": api}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "data" / "raw" / "shaoxing"
    assert main(["download", "shaoxing", "--configfile", str(path), "--out", str(out), "--no-progress"]) == 0
    assert (out / "HOST_MANIFEST.json").is_file() and (out / "ECGDataDenoised" / f"{RECORD}.csv").is_file()
    capsys.readouterr()
    config["datasets"]["shaoxing"]["download"]["nights"] = 2
    path.write_text(yaml.safe_dump(config))
    assert main(["download", "shaoxing", "--configfile", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "datasets.shaoxing.download" in err and "nights" in err and "with_raw_ecg" in err


def test_download_refuses_corrupt_archive(real_tree, fake_host, tmp_path):
    """figshare vouches for a zip that fails its CRC: refused, naming the archive (kept: the host's own copy is
    bad, fetching it again would not help); unverified, the archive is deleted so that a rerun fetches it."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(real_tree / "ECGDataDenoised" / f"{RECORD}.csv", f"ECGDataDenoised/{RECORD}.csv")
    data = bytearray(archive.getvalue())
    data[100:110] = b"\xff" * 10  # inside the deflated member: fails its CRC
    url, api = serve_figshare(real_tree, fake_host, md5={"ECGDataDenoised.zip": hashlib.md5(bytes(data)).hexdigest()})
    fake_host.file(f"/ndownloader/files/{FIGSHARE_IDS['ECGDataDenoised.zip']}", bytes(data))
    fake_host.fault.clear()
    out = tmp_path / "data" / "chapman"
    cached = tmp_path / "data" / ".downloads" / "chapman" / "ECGDataDenoised.zip"
    with pytest.raises(DownloadError, match="ECGDataDenoised.zip"):
        chapman.download(out, url=url, api=api, progress=False)
    assert not out.exists() and not leftovers(out.parent) and cached.exists()
    with pytest.raises(DownloadError, match="removed"):
        chapman.download(out, url=url, api=api, progress=False, verify=False)
    assert not cached.exists()


# --------------------------------------------------------------------------------------------- WFDB release
def test_wfdb_release_record_converts(chapman_fixtures, tmp_path):
    challenge = pytest.importorskip(
        "physiossl.data.ecg.sources._challenge",
        reason="physiossl.data.ecg.sources._challenge (the challenge-format reader) is not in this tree yet")
    raw = tmp_path / "raw"
    shutil.copytree(chapman_fixtures / "WFDBRecords", raw / "WFDBRecords", copy_function=shutil.copyfile)
    out = tmp_path / "wfdb.zarr"
    summary = chapman.convert(raw, out, fs=500, max_quarantine_fraction=0.0, progress=False)
    assert summary == {**summary, "records": 1, "quarantined": 0}
    root = open_store(out)
    assert root.attrs["source_version"] == chapman.WFDB_SOURCE_VERSION
    meta = read_meta(root)
    assert [str(x) for x in meta["record_id"]] == ["JS00001"]
    assert meta["age"].tolist() == [85.0] and [str(x) for x in meta["sex"]] == ["M"]
    assert present(root, "all") == [["164889003", "164934002", "59118001"]]
    assert present(root, "rhythm") == [[chapman.RHYTHM_SNOMED["AFIB"]]]
    assert present(root, "condition") == [["164934002", "59118001"]]
    # the header: 12 canonical leads, gain 1000/mV, baseline 0 → mV = val / 1000
    val = loadmat(raw / "WFDBRecords/01/010/JS00001.mat")["val"].astype(np.float64)
    np.testing.assert_allclose(root["signals"][0], val / 1000.0, rtol=1e-6, atol=1e-7)
    rec = challenge.read_challenge_record(raw / "WFDBRecords/01/010/JS00001.hea")
    assert sorted(rec.dx) == ["164889003", "164934002", "59118001"]
    out100 = tmp_path / "wfdb100.zarr"
    chapman.convert(raw, out100, fs=100, max_quarantine_fraction=0.0, progress=False)
    np.testing.assert_allclose(open_store(out100)["signals"][0], resample_poly(val / 1000.0, 1, 5, axis=1),
                               rtol=1e-5, atol=1e-6)
    # the same record name twice in the tree: the second is quarantined, the first kept
    copy = raw / "WFDBRecords" / "02" / "020"
    copy.mkdir(parents=True)
    for ext in (".hea", ".mat"):
        shutil.copyfile(raw / "WFDBRecords/01/010" / f"JS00001{ext}", copy / f"JS00001{ext}")
    out_dup = tmp_path / "dup.zarr"
    summary = chapman.convert(raw, out_dup, fs=100, max_quarantine_fraction=0.5, progress=False)
    assert summary == {**summary, "records": 1, "quarantined": 1}
    q = read_quarantine(out_dup)
    assert list(q) == ["JS00001"] and "duplicate record name" in q["JS00001"] and "02/020" in q["JS00001"]
