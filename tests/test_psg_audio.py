"""PSG-Audio source: RML parsing (stage change points, events per epoch), EDF reading on the genuine Sleep-EDF
files, block-wise resampling, demo → store round trip, night quarantine, workers, download from a local host."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyedflib
import pytest

from helpers import copy_tree, leftovers, read_quarantine, sha256
from physiossl.data.convert import ConversionError
from physiossl.data.fetch import DownloadError
from physiossl.data.resample import resample
from physiossl.data.sleep.features import epoch_features, mix_channels
from physiossl.data.sleep.sources import psg_audio
from physiossl.data.sleep.store import open_sleep_store
from physiossl.data.sources import source_kind
from physiossl.data.store import refused_quarantine_path

FEATURES = {"audio_fs": 2000, "n_mels": 16, "n_fft": 256, "win": 200, "hop": 400, "fmin": 30, "fmax": 990}
NS = "http://www.respironics.com/PatientStudy.xsd"


def rml_text(stages: str, events: str = "", segments=(120, 180), staging: bool = True) -> str:
    segs = "".join(f"<Segment><StartTime>2020-01-01T22:00:00</StartTime><Duration>{d}</Duration></Segment>"
                   for d in segments)
    staging_xml = (f"<StagingData><UserStaging><NeuroAdultAASMStaging>{stages}</NeuroAdultAASMStaging>"
                   f"</UserStaging></StagingData>") if staging else ""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<PatientStudy xmlns="{NS}" Version="6"><Acquisition><Sessions>'
            f"<Session><RecordingStart>2020-01-01T22:00:00</RecordingStart><Duration>{sum(segments)}</Duration>"
            f"<Segments>{segs}</Segments></Session></Sessions></Acquisition><ScoringData><Events>{events}</Events>"
            f"{staging_xml}</ScoringData></PatientStudy>")


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    root = open_sleep_store(path)
    keys = ["features", "labels/stage", "epochs/night", "epochs/index", "nights/offsets", "nights/id",
            "nights/labeled"] + [f"events/{e}" for e in root.attrs["events"]]
    return {k: root[k][:] for k in keys}


# --------------------------------------------------------------------------------------------- RML
def test_parse_rml_stages_and_events(tmp_path):
    stages = ('<Stage Type="NotScored" Start="0" /><Stage Type="Wake" Start="30" /><Stage Type="NonREM1" Start="90" />'
              '<Stage Type="NonREM2" Start="120" /><Stage Type="REM" Start="195" />')
    events = ('<Event Family="Respiratory" Type="ObstructiveApnea" Start="50" Duration="20"><Input>Flow</Input></Event>'
              '<Event Family="Nasal" Type="Snore" Start="100" Duration="5" />'
              '<Event Family="Nasal" Type="Snore" Start="102" Duration="6" />'
              '<Event Family="Respiratory" Type="Hypopnea" Start="280" Duration="40" />'
              '<Event Family="Respiratory" Type="PeriodicBreathing" Start="10" Duration="30" />'
              '<Event Family="Neuro" Type="Arousal" Start="40" Duration="5" />')
    path = tmp_path / "n.rml"
    path.write_text(rml_text(stages, events))
    scoring = psg_audio.parse_rml(path)
    assert scoring.segments_s == [120.0, 180.0] and scoring.duration_s == 300.0
    assert scoring.recording_start == "2020-01-01T22:00:00"
    assert [t for _, t, _, _ in scoring.events] == ["ObstructiveApnea", "Snore", "Snore", "Hypopnea",
                                                    "PeriodicBreathing"]

    epochs, misaligned = psg_audio.stage_epochs(scoring.stage_changes, 10)
    # NotScored → -1; REM's Start 195 lies inside epoch 6 (180-210), which takes it; REM holds to the end
    assert epochs.tolist() == [-1, 0, 0, 1, 2, 2, 4, 4, 4, 4]
    assert epochs.dtype == np.int8 and misaligned == 1
    assert psg_audio.stage_epochs(scoring.stage_changes, 4)[0].tolist() == [-1, 0, 0, 1]   # cut

    seconds = psg_audio.event_seconds(scoring.events, 10)
    assert set(seconds) == set(psg_audio.EVENT_TYPES)
    assert seconds["ObstructiveApnea"][:4].tolist() == [0, 10, 10, 0]    # 50-70 s spans epochs 1 and 2
    assert seconds["Snore"][3] == pytest.approx(8.0)                       # overlapping snores count once
    assert seconds["Hypopnea"][9] == pytest.approx(20.0)                  # cut at the end of the night
    assert seconds["CentralApnea"].sum() == 0 and all(v.dtype == np.float32 for v in seconds.values())


def test_stage_epochs_without_leading_change_point():
    epochs, _ = psg_audio.stage_epochs([(60.0, 2), (120.0, 3)], 6)
    assert epochs.tolist() == [-1, -1, 2, 2, 3, 3]


@pytest.mark.parametrize("text, message", [
    ("<PatientStudy", "not well-formed XML"),
    (rml_text('<Stage Type="Wake" Start="0" />', segments=()), "Segments"),
    (rml_text("", staging=False), "NeuroAdultAASMStaging"),
    (rml_text('<Stage Type="Wake" Start="0" /><Stage Type="Stage5" Start="30" />'), "unknown stage Type 'Stage5'"),
    (rml_text('<Stage Type="Wake" Start="soon" />'), "is not a number"),
    ('<Study xmlns="x"/>', "PatientStudy"),
])
def test_rml_errors_name_file_and_problem(tmp_path, text, message):
    path = tmp_path / "night7.rml"
    path.write_text(text)
    with pytest.raises(psg_audio.RmlError, match=message) as info:
        psg_audio.parse_rml(path)
    assert "night7.rml" in str(info.value)


# --------------------------------------------------------------------------------------------- EDF
def test_sleep_edf_psg_through_the_edf_reader(fixtures):
    path = fixtures / "psg_audio" / "sleep-edf" / "short_psg.edf"
    info = psg_audio.read_edf_info(path)
    assert info.labels == ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental",
                           "Temp rectal", "Event marker"]
    assert [info.rates[c] for c in info.labels] == [100.0] * 3 + [1.0] * 4
    assert info.duration_s == 300.0 and info.record_s == 30.0
    assert info.n_samples["EEG Fpz-Cz"] == 30000 and info.n_samples["Temp rectal"] == 300
    x, fs = psg_audio.read_edf_channel(path, "EEG Fpz-Cz", block_s=7)       # several blocks
    reader = pyedflib.EdfReader(str(path))
    try:
        expected = reader.readSignal(0)
    finally:
        reader.close()
    assert fs == 100.0 and x.dtype == np.float32
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-4)
    y, _ = psg_audio.read_edf_channel(path, "eeg fpz-cz", fs_out=50)         # label matched without case
    np.testing.assert_allclose(y, resample(np.asarray(expected, np.float32), 100, 50), atol=1e-3)
    with pytest.raises(ValueError, match="channel 'Mic' missing in short_psg.edf"):
        psg_audio.read_edf_channel(path, "Mic")


def test_sleep_edf_hypnogram_annotations(fixtures):
    path = fixtures / "psg_audio" / "sleep-edf" / "SC4001EC-Hypnogram.edf"
    info = psg_audio.read_edf_info(path)
    assert info.labels == [] and info.filetype == pyedflib.FILETYPE_EDFPLUS
    annotations = psg_audio.read_edf_annotations(path)
    assert len(annotations) == 154
    assert annotations[0] == (0.0, 30630.0, "Sleep stage W")
    assert {text for _, _, text in annotations} >= {"Sleep stage W", "Sleep stage 1", "Sleep stage 2",
                                                    "Sleep stage R"}


def test_sleep_edf_recording_converts_as_a_psg_audio_night(fixtures, tmp_path):
    """The genuine EDF as the single part of a night, its EEG channel as the 'audio' at 100 Hz."""
    night = "SC4001E0-000000"
    (tmp_path / "raw" / "APNEA_EDF" / night).mkdir(parents=True)
    shutil.copyfile(fixtures / "psg_audio" / "sleep-edf" / "short_psg.edf",
                    tmp_path / "raw" / "APNEA_EDF" / night / f"{night}[001].edf")
    (tmp_path / "raw" / "APNEA_RML").mkdir()
    (tmp_path / "raw" / "APNEA_RML" / f"{night}.rml").write_text(
        rml_text('<Stage Type="Wake" Start="0" /><Stage Type="NonREM1" Start="240" />', segments=(300,)))
    features = {"audio_fs": 100, "n_mels": 8, "n_fft": 128, "win": 100, "hop": 50, "fmin": 0.5, "fmax": 45}
    out = psg_audio.convert(tmp_path / "raw", tmp_path / "s.zarr", features=features, channels=["EEG Fpz-Cz"],
                            max_quarantine_fraction=0.0, progress=False)
    root = open_sleep_store(out)
    assert root.attrs["channels"] == ["EEG Fpz-Cz"]
    assert root["labels/stage"][:].tolist() == [0] * 8 + [1] * 2
    reader = pyedflib.EdfReader(str(fixtures / "psg_audio" / "sleep-edf" / "short_psg.edf"))
    try:
        eeg = reader.readSignal(0)
    finally:
        reader.close()
    np.testing.assert_allclose(root["features"][:].astype(np.float32), epoch_features(eeg, features),
                               atol=0.05, rtol=2e-3)


# --------------------------------------------------------------------------------------------- demo
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Three demo nights of 3-4 min in parts of 1 min; returns (tree, {night id: hypnogram written})."""
    hypnograms = []
    original = psg_audio.synth_hypnogram

    def recording(*args, **kwargs):
        hypnograms.append(original(*args, **kwargs))
        return hypnograms[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(psg_audio, "synth_hypnogram", recording)
        raw = psg_audio.demo(tmp_path_factory.mktemp("psg_audio") / "raw", n_records=3, seed=3, minutes=(3, 4),
                             part_minutes=1)
    ids = sorted(p.name for p in (raw / "APNEA_EDF").iterdir())
    return raw, dict(zip(ids, hypnograms))


@pytest.fixture(scope="module")
def demo_store(demo, tmp_path_factory) -> Path:
    raw, _ = demo
    return psg_audio.convert(raw, tmp_path_factory.mktemp("psg_store") / "psg_audio_sleep.zarr", features=FEATURES,
                             max_quarantine_fraction=0.0, progress=False)


@pytest.fixture
def demo_copy(demo, tmp_path) -> Path:
    return copy_tree(demo[0], tmp_path / "raw")


def test_demo_tree_has_the_real_format(demo):
    raw, hypnograms = demo
    night = sorted(hypnograms)[0]
    parts = sorted((raw / "APNEA_EDF" / night).iterdir())
    assert [p.name for p in parts][:2] == [f"{night}[001].edf", f"{night}[002].edf"]
    info = psg_audio.read_edf_info(parts[0])
    assert info.labels == ["Mic", "Tracheal", "Flow Patient"] and info.filetype == pyedflib.FILETYPE_EDFPLUS
    assert info.rates == {"Mic": psg_audio.DEMO_FS, "Tracheal": 2000.0, "Flow Patient": 100.0}
    assert info.duration_s == 60.0
    scoring = psg_audio.parse_rml(raw / "APNEA_RML" / f"{night}.rml")
    assert len(scoring.segments_s) == len(parts) and scoring.segments_s[:-1] == [60.0] * (len(parts) - 1)
    assert scoring.segments_s[-1] == psg_audio.read_edf_info(parts[-1]).duration_s <= 60
    assert scoring.stage_changes[0] == (0.0, -1)                         # unscored epochs at the start
    text = (raw / "APNEA_RML" / f"{night}.rml").read_text()
    assert f'<PatientStudy xmlns="{NS}" Version="6">' in text
    hyp = hypnograms[night]
    assert set(hyp.tolist()) <= {-1, 0, 1, 2, 3, 4} and hyp[0] == -1


def test_demo_round_trip(demo, demo_store):
    raw, hypnograms = demo
    root = open_sleep_store(demo_store)
    attrs = dict(root.attrs)
    ids = [str(i) for i in root["nights/id"][:]]
    assert ids == sorted(hypnograms) and root["nights/labeled"][:].all()
    assert attrs["channels"] == ["Mic"] and attrs["events"] == list(psg_audio.EVENT_TYPES)
    assert attrs["dataset"] == "psg_audio" and attrs["audio_fs"] == 2000
    offsets = root["nights/offsets"][:]
    stages = root["labels/stage"][:]
    frames = 1 + (30 * 2000 - 256) // 400
    assert root["features"].shape == (offsets[-1], 16, frames)
    for k, night in enumerate(ids):
        prov = attrs["provenance"]["nights"][night]
        duration = sum(psg_audio.read_edf_info(p).duration_s for p in (raw / "APNEA_EDF" / night).iterdir())
        n = offsets[k + 1] - offsets[k]
        assert n == math.floor(duration / 30) == prov["epochs"]
        assert prov["dropped_s"] == pytest.approx(duration - 30 * n)
        assert stages[offsets[k]:offsets[k + 1]].tolist() == hypnograms[night][:n].tolist()
        for part in prov["parts"]:
            assert part["sha256"] == sha256(raw / part["file"])
        assert prov["rates_hz"] == {"Mic": psg_audio.DEMO_FS}
        for kind in psg_audio.EVENT_TYPES:     # the demo's events of one type never overlap
            scored = [(s, d) for _, t, s, d in psg_audio.parse_rml(raw / "APNEA_RML" / f"{night}.rml").events
                      if t == kind]
            covered = sum(max(0.0, min(s + d, 30 * n) - s) for s, d in scored)
            assert root[f"events/{kind}"][offsets[k]:offsets[k + 1]].sum() == pytest.approx(covered, abs=1e-3)
    assert root["events/Snore"][:].sum() > 0
    assert read_quarantine(demo_store) == {}


def test_store_features_equal_the_definition(demo, demo_store):
    """Store features = epoch_features of the whole night's Mic, read at once and resampled at once."""
    raw, hypnograms = demo
    night = sorted(hypnograms)[1]
    signals = []
    for part in sorted((raw / "APNEA_EDF" / night).iterdir()):
        reader = pyedflib.EdfReader(str(part))
        try:
            signals.append(resample(reader.readSignal(0).astype(np.float32), psg_audio.DEMO_FS, 2000))
        finally:
            reader.close()
    expected = epoch_features(np.concatenate(signals), FEATURES)
    root = open_sleep_store(demo_store)
    offsets = root["nights/offsets"][:]
    got = root["features"][offsets[1]:offsets[2]].astype(np.float32)
    np.testing.assert_allclose(got, expected, atol=0.05, rtol=2e-3)


def test_two_channels_are_mixed(demo, tmp_path):
    raw, hypnograms = demo
    out = psg_audio.convert(raw, tmp_path / "both.zarr", features=FEATURES, channels=["Mic", "Tracheal"],
                            progress=False)
    root = open_sleep_store(out)
    assert root.attrs["channels"] == ["Mic", "Tracheal"]
    night = sorted(hypnograms)[0]
    assert root.attrs["provenance"]["nights"][night]["rates_hz"] == {"Mic": 4000.0, "Tracheal": 2000.0}
    part = sorted((raw / "APNEA_EDF" / night).iterdir())[0]
    mic = psg_audio.read_edf_channel(part, "Mic", 2000)[0]
    tracheal = psg_audio.read_edf_channel(part, "Tracheal", 2000)[0]
    np.testing.assert_allclose(root["features"][0:2].astype(np.float32),
                               epoch_features(mix_channels([mic, tracheal]), FEATURES)[:2], atol=0.05, rtol=2e-3)


def test_workers_give_the_identical_store(demo, demo_store, tmp_path):
    out = psg_audio.convert(demo[0], tmp_path / "w2.zarr", features=FEATURES, workers=2, progress=False)
    a, b = store_arrays(demo_store), store_arrays(out)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    pa, pb = open_sleep_store(demo_store).attrs["provenance"], open_sleep_store(out).attrs["provenance"]
    assert pa["nights"] == pb["nights"]


def test_demo_is_seeded(tmp_path):
    a = psg_audio.demo(tmp_path / "a", n_records=1, seed=3, minutes=1, part_minutes=1)
    b = psg_audio.demo(tmp_path / "b", n_records=1, seed=3, minutes=1, part_minutes=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all(sha256(a / f) == sha256(b / f) for f in files)


# --------------------------------------------------------------------------------------------- quarantine
def _night(raw: Path, k: int = 1) -> tuple[str, list[Path]]:
    night = sorted(p.name for p in (raw / "APNEA_EDF").iterdir())[k]
    return night, sorted((raw / "APNEA_EDF" / night).iterdir())


def _truncate_edf(path: Path, drop_records: int) -> None:
    """Remove the last data records of an EDF and fix the record count in its header."""
    data = bytearray(path.read_bytes())
    header_bytes, n_records = int(data[184:192]), int(data[236:244])
    size = (len(data) - header_bytes) // n_records
    data[236:244] = f"{n_records - drop_records:<8d}".encode()
    path.write_bytes(bytes(data[:header_bytes + size * (n_records - drop_records)]))


def _rename_label(path: Path, old: str, new: str) -> None:
    data = bytearray(path.read_bytes())
    ns = int(data[252:256])
    for i in range(ns):
        at = 256 + 16 * i
        if data[at:at + 16].decode().strip() == old:
            data[at:at + 16] = f"{new:<16s}".encode()
    path.write_bytes(bytes(data))


def _damage(case: str, raw: Path) -> tuple[str, str]:
    night, parts = _night(raw)
    if case == "gap":
        parts[1].unlink()
        return night, r"missing EDF part\(s\) \[002\]"
    if case == "fewer_parts":
        parts[-1].unlink()
        return night, rf"missing EDF part\(s\): {len(parts) - 1} EDF parts but the RML lists {len(parts)} segments"
    if case == "short_part":
        _truncate_edf(parts[0], 5)
        return night, rf"{night}\[001\]\.edf lasts 55 s but its RML segment 60 s"
    if case == "broken_rml":
        (raw / "APNEA_RML" / f"{night}.rml").write_text("<PatientStudy><Acquisition>")
        return night, rf"{night}\.rml: not well-formed XML"
    if case == "missing_rml":
        (raw / "APNEA_RML" / f"{night}.rml").unlink()
        return night, rf"missing RML APNEA_RML/{night}\.rml"
    if case == "missing_channel":
        _rename_label(parts[2], "Mic", "Mike")
        return night, rf"channel 'Mic' missing in {night}\[003\]\.edf"
    if case == "unreadable_edf":
        parts[0].write_bytes(b"0       not an EDF header" * 20)
        return night, rf"unreadable EDF {night}\[001\]\.edf"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["gap", "fewer_parts", "short_part", "broken_rml", "missing_rml",
                                  "missing_channel", "unreadable_edf"])
def test_quarantine(case, demo, demo_copy, tmp_path):
    night, reason = _damage(case, demo_copy)
    out = psg_audio.convert(demo_copy, tmp_path / "s.zarr", features=FEATURES, max_quarantine_fraction=0.5,
                            progress=False)
    quarantine = read_quarantine(out)
    assert list(quarantine) == [night]
    assert re.search(reason, quarantine[night]), quarantine[night]
    root = open_sleep_store(out)
    assert sorted(str(i) for i in root["nights/id"][:]) == sorted(set(demo[1]) - {night})
    assert root.attrs["provenance"]["quarantined"] == 1


def test_above_fraction_fails_and_leaves_no_store(demo_copy, tmp_path):
    _damage("broken_rml", demo_copy)
    out = tmp_path / "s.zarr"
    with pytest.raises(ConversionError) as info:
        psg_audio.convert(demo_copy, out, features=FEATURES, max_quarantine_fraction=0.1, progress=False)
    assert str(demo_copy) in str(info.value) and str(refused_quarantine_path(out)) in str(info.value)
    assert "1 of 3 nights" in str(info.value)
    assert not out.exists() and not leftovers(tmp_path)
    assert len(read_quarantine(out, refused=True)) == 1


def test_not_a_psg_audio_tree(tmp_path):
    with pytest.raises(ConversionError, match="APNEA_EDF"):
        psg_audio.convert(tmp_path, tmp_path / "s.zarr", features=FEATURES, progress=False)
    with pytest.raises(ValueError, match="features.fmax"):
        psg_audio.convert(tmp_path, tmp_path / "s.zarr", features={**FEATURES, "fmax": 1500}, progress=False)


# --------------------------------------------------------------------------------------------- download
DATASET_ID = "778740145531650048"      # PSG-Audio's numeric dataSetId on Science Data Bank


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    return psg_audio.demo(tmp_path_factory.mktemp("psg_tiny") / "raw", n_records=2, seed=2, minutes=1.5,
                          part_minutes=1)


def serve_scidb(tree: Path, host, extra: dict[str, bytes] | None = None) -> list[str]:
    """Science Data Bank for ``tree``: the DOI redirects to the landing page with the dataset id, the Croissant
    export of V3 lists every file (name, contentSize "<n> B", md5, contentUrl with fileId, path=/V3/<path> and
    fileName); other versions, a version without its V and other ids answer HTTP 200 with an empty distribution.
    Returns the relative paths served."""
    files = {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()
             and p.name != "SHA256SUMS.txt"}
    files.update(extra or {})
    distribution = []
    for i, (rel, data) in enumerate(files.items()):
        fid = f"61a0ca3f89f14b48842c{i:04x}"
        name = rel.rsplit("/", 1)[-1]
        url = host.file(f"/download?fileId={fid}", data)
        distribution.append({"@type": "cr:FileObject", "@id": fid, "name": name, "contentSize": f"{len(data)} B",
                             "encodingFormat": "application/octet-stream", "md5": hashlib.md5(data).hexdigest(),
                             "contentUrl": f"{url}&path=/V3/{rel}&fileName={quote(name)}"})
    empty = {"@type": "sc:Dataset", "name": "", "distribution": []}
    host.json("/api/gin-sdb-croissant/public/exportCroissant",
              lambda q: {"@type": "sc:Dataset", "name": "PSG-Audio", "version": "V3", "distribution": distribution}
              if q.get("datasetId") == [DATASET_ID] and q.get("version") == ["V3"] else empty)
    host.redirect("/doi/10.11922/sciencedb.00345", f"{host.base}/en/detail?dataSetId={DATASET_ID}")
    host.file(f"/en/detail?dataSetId={DATASET_ID}", b"<!DOCTYPE html><html>PSG-Audio</html>")
    return list(files)


def test_download_from_science_data_bank_then_convert(tiny_tree, fake_host, tmp_path):
    names = serve_scidb(tiny_tree, fake_host)
    nights = sorted(p.name for p in (tiny_tree / "APNEA_EDF").iterdir())
    out = tmp_path / "data" / "psg_audio"
    got = psg_audio.download(out, url=f"{fake_host.base}/doi/10.11922/sciencedb.00345", api=fake_host.base,
                             version="3", nights=1, progress=False)      # "3" is read as V3
    assert got == out
    installed = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    first = [n for n in names if nights[0] in n]
    assert installed == sorted([*first, "HOST_MANIFEST.json"]) and len(first) == 3
    assert all(sha256(out / n) == sha256(tiny_tree / n) for n in first)
    manifest = json.loads((out / "HOST_MANIFEST.json").read_text())
    assert manifest["host"] == "scidb" and len(manifest["answer"]["distribution"]) == len(names)
    assert not leftovers(out.parent)
    store = psg_audio.convert(out, tmp_path / "s.zarr", features=FEATURES, max_quarantine_fraction=0.0,
                              progress=False)
    root = open_sleep_store(store)
    assert root.attrs["n_epochs"] == 3 and "host_manifest_sha256" in root.attrs["provenance"]
    # every night, by id
    every = psg_audio.download(tmp_path / "all" / "psg_audio", api=fake_host.base, dataset_id=DATASET_ID,
                               nights=nights[::-1], progress=False)
    assert sorted(p.name for p in (every / "APNEA_EDF").iterdir()) == nights


def test_download_explains_an_empty_distribution(tiny_tree, fake_host, tmp_path):
    serve_scidb(tiny_tree, fake_host)
    with pytest.raises(DownloadError, match=r"empty distribution.*dataset id \(123; set download\.dataset_id\)"):
        psg_audio.download(tmp_path / "psg_audio", api=fake_host.base, dataset_id="123", progress=False)
    with pytest.raises(DownloadError, match=r"V4; the V prefix"):
        psg_audio.download(tmp_path / "psg_audio", api=fake_host.base, dataset_id=DATASET_ID, version="V4",
                           progress=False)
    assert not (tmp_path / "psg_audio").exists()


@pytest.mark.parametrize("fault, words", [("altered", "md5"), ("truncated", "bytes, expected"), ("html", "HTML page")])
def test_download_refuses_a_bad_file_and_resumes(tiny_tree, fake_host, tmp_path, fault, words):
    names = serve_scidb(tiny_tree, fake_host)
    edf = next(n for n in names if n.endswith("[002].edf"))
    export = fake_host.routes["/api/gin-sdb-croissant/public/exportCroissant"][1]({"datasetId": [DATASET_ID],
                                                                                  "version": ["V3"]})
    route = next(e["contentUrl"] for e in export["distribution"]
                 if e["contentUrl"].endswith(quote(edf.rsplit("/")[-1])))
    route = "/download?" + route.split("?")[1].split("&")[0]
    fake_host.fault[route] = fault
    out = tmp_path / "data" / "psg_audio"
    with pytest.raises(DownloadError, match=words) as info:
        psg_audio.download(out, api=fake_host.base, dataset_id=DATASET_ID, progress=False)
    assert edf.rsplit("/")[-1] in str(info.value) and "rerun" in str(info.value)
    assert not out.exists() and not leftovers(out.parent)
    # the host is repaired: a rerun fetches the bad file again and none of those fetched before
    fake_host.fault.clear()
    before = len(fake_host.requests)
    psg_audio.download(out, api=fake_host.base, dataset_id=DATASET_ID, progress=False)
    fetched = [r for r in fake_host.requests[before:] if r.startswith("/download?")]
    assert fetched[0] == route and len(fetched) == len(names) - names.index(edf)


def test_download_selects_complete_nights_only(tiny_tree, fake_host, tmp_path, caplog):
    serve_scidb(tiny_tree, fake_host, extra={"APNEA_EDF/00009999-100507/00009999-100507[001].edf": b"0" * 256,
                                             "APNEA_RML_clean/x.rml": b"<x/>"})
    with pytest.raises(DownloadError, match="no complete night 00009999-100507"):
        psg_audio.download(tmp_path / "a", api=fake_host.base, dataset_id=DATASET_ID, nights=["00009999-100507"],
                           progress=False)
    with pytest.raises(DownloadError, match="nights must be"):
        psg_audio.download(tmp_path / "b", api=fake_host.base, dataset_id=DATASET_ID, nights=0, progress=False)
    out = psg_audio.download(tmp_path / "c" / "psg_audio", api=fake_host.base, dataset_id=DATASET_ID, progress=False)
    assert len(list((out / "APNEA_EDF").iterdir())) == 2 and not (out / "APNEA_RML_clean").exists()
    assert "00009999-100507" in caplog.text


def test_download_refuses_paths_outside_the_tree(fake_host, tmp_path):
    fake_host.json("/api/gin-sdb-croissant/public/exportCroissant", {"distribution": [
        {"name": "evil.edf", "contentSize": "3 B", "md5": "0" * 32,
         "contentUrl": f"{fake_host.base}/download?fileId=1&path=/V3/../evil.edf&fileName=evil.edf"}]})
    with pytest.raises(DownloadError, match="outside the release tree"):
        psg_audio.download(tmp_path / "psg_audio", api=fake_host.base, dataset_id=DATASET_ID, progress=False)


def test_module_declares_a_sleep_source():
    assert source_kind("psg_audio") == "sleep"
    assert json.loads(json.dumps(list(psg_audio.EVENT_TYPES))) == ["ObstructiveApnea", "CentralApnea", "MixedApnea",
                                                                    "Hypopnea", "Snore"]


# --------------------------------------------------------------------------------------------- synthesis
def test_synthetic_hypnogram_has_sleep_architecture():
    from physiossl.data.sleep.synth import synth_hypnogram

    hyp = synth_hypnogram(960, np.random.default_rng(0))          # 8 h
    assert hyp.dtype == np.int8 and len(hyp) == 960
    assert hyp[0] == -1 and hyp[-1] == 0 and set(hyp.tolist()) == {-1, 0, 1, 2, 3, 4}
    first, second = hyp[:480], hyp[480:]
    assert (first == 3).sum() > (second == 3).sum()               # deep sleep early in the night
    assert (second == 4).sum() > (first == 4).sum()               # REM late
    short = synth_hypnogram(100, np.random.default_rng(1))         # 50 min: cycles shrink, every stage occurs
    assert set(short.tolist()) >= {0, 1, 2, 3, 4}


def test_breathing_depends_on_the_stage():
    from physiossl.data.sleep.synth import breathing_audio, ood_noise, plan_breaths, synth_subject

    rng = np.random.default_rng(0)
    stages = np.repeat(np.array([0, 3, 4, 2], dtype=np.int8), 40)    # 20 min of each
    subject = synth_subject(rng)
    plan = plan_breaths(stages, rng, subject)
    stage_of = stages[np.minimum((plan.onset // 30).astype(int), len(stages) - 1)]
    dur = {s: plan.dur[stage_of == s] for s in (0, 3, 4)}
    cv = {s: d.std() / d.mean() for s, d in dur.items()}
    assert dur[3].mean() > dur[0].mean()                           # N3 breathes slower than wake
    assert cv[3] < cv[4] and cv[3] < cv[0]                         # and more regularly than REM and wake
    audio = breathing_audio(stages[:8], 4000, rng, subject)
    assert audio.dtype == np.float32 and audio.shape == (8 * 30 * 4000,) and np.isfinite(audio).all()
    noise = ood_noise(123457, 22050, rng)
    assert noise.dtype == np.float32 and noise.shape == (123457,) and np.isfinite(noise).all()
