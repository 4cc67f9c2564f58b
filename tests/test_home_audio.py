"""Home-recording source: demo → store round trip (unlabeled nights), features against a whole-file reference,
channel selection, quarantine of corrupt, short and non-finite files, and the download refusal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from helpers import copy_tree, leftovers, read_quarantine
from physiossl.data.convert import ConversionError
from physiossl.data.fetch import DownloadError
from physiossl.data.resample import resample
from physiossl.data.sleep.features import epoch_features, read_audio_file
from physiossl.data.sleep.sources import home_audio, psg_audio
from physiossl.data.sleep.store import open_sleep_store
from physiossl.data.sources import source_kind
from physiossl.data.store import refused_quarantine_path

FEATURES = {"audio_fs": 2000, "n_mels": 16, "n_fft": 256, "win": 200, "hop": 400, "fmin": 30, "fmax": 990}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return home_audio.demo(tmp_path_factory.mktemp("home") / "raw", n_records=3, seed=4, minutes=(1.1, 1.9))


@pytest.fixture(scope="module")
def demo_store(demo, tmp_path_factory) -> Path:
    return home_audio.convert(demo, tmp_path_factory.mktemp("home_store") / "home_sleep.zarr", features=FEATURES,
                              max_quarantine_fraction=0.0, progress=False)


@pytest.fixture
def demo_copy(demo, tmp_path) -> Path:
    return copy_tree(demo, tmp_path / "raw")


def recordings(raw: Path) -> dict[str, Path]:
    return {p.relative_to(raw).with_suffix("").as_posix(): p for p in sorted(raw.rglob("*")) if p.is_file()}


def test_demo_recordings_vary_in_format_rate_and_channels(demo):
    files = recordings(demo)
    infos = {k: soundfile.info(str(p)) for k, p in files.items()}
    assert {p.suffix for p in files.values()} == {".wav", ".flac"}
    assert {i.channels for i in infos.values()} == {1, 2}
    assert {i.samplerate for i in infos.values()} <= set(home_audio.DEMO_RATES)
    assert all(66 <= i.duration <= 114 for i in infos.values())


def test_demo_round_trip(demo, demo_store):
    root = open_sleep_store(demo_store)
    files = recordings(demo)
    ids = [str(i) for i in root["nights/id"][:]]
    assert ids == sorted(files)
    assert not root["nights/labeled"][:].any() and (root["labels/stage"][:] == -1).all()
    assert root.attrs["n_labeled_nights"] == 0 and root.attrs["channels"] == ["all"]
    assert root.attrs["events"] == list(psg_audio.EVENT_TYPES)              # the same arrays as PSG-Audio stores
    assert all((root[f"events/{e}"][:] == 0).all() for e in psg_audio.EVENT_TYPES)
    offsets = root["nights/offsets"][:]
    for k, night in enumerate(ids):
        info = soundfile.info(str(files[night]))
        assert offsets[k + 1] - offsets[k] == math.floor(info.frames / info.samplerate / 30)
        prov = root.attrs["provenance"]["nights"][night]
        assert prov["rate_hz"] == info.samplerate and prov["channels"] == info.channels
    assert read_quarantine(demo_store) == {}


def test_store_features_equal_the_definition(demo, demo_store):
    """Features = epoch_features of the whole file, mixed to mono and resampled at once."""
    root = open_sleep_store(demo_store)
    offsets = root["nights/offsets"][:]
    for k, (night, path) in enumerate(sorted(recordings(demo).items())):
        x, fs = read_audio_file(path)
        expected = epoch_features(resample(x.mean(axis=1).astype(np.float32), fs, 2000), FEATURES)
        got = root["features"][offsets[k]:offsets[k + 1]].astype(np.float32)
        np.testing.assert_allclose(got, expected, atol=0.05, rtol=2e-3, err_msg=night)


def test_channel_selection(demo, tmp_path):
    assert home_audio.parse_channels(["left", "Right", 3, "2"]) == [0, 1, 3, 2]
    with pytest.raises(ValueError, match="'centre'"):
        home_audio.parse_channels(["centre"])
    out = home_audio.convert(demo, tmp_path / "right.zarr", features=FEATURES, channels=["right"],
                             max_quarantine_fraction=1.0, progress=False)
    files = recordings(demo)
    stereo = [k for k, p in files.items() if soundfile.info(str(p)).channels == 2]
    root = open_sleep_store(out)
    assert [str(i) for i in root["nights/id"][:]] == stereo and root.attrs["channels"] == ["1"]
    quarantine = read_quarantine(out)
    assert sorted(quarantine) == sorted(set(files) - set(stereo))
    assert all("channel(s) [1] requested but" in r and "has 1 channel(s)" in r for r in quarantine.values())
    x, fs = read_audio_file(files[stereo[0]])
    np.testing.assert_allclose(root["features"][:].astype(np.float32),
                               epoch_features(resample(x[:, 1].astype(np.float32), fs, 2000), FEATURES),
                               atol=0.05, rtol=2e-3)


def test_quarantine_of_corrupt_short_and_non_finite_files(demo_copy, demo, tmp_path):
    (demo_copy / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
    t = np.arange(10 * 8000) / 8000
    (demo_copy / "extra").mkdir()
    soundfile.write(str(demo_copy / "extra" / "short.flac"), (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32),
                    8000)
    noisy = np.full(40 * 8000, 0.01, dtype=np.float32)
    noisy[35 * 8000] = np.nan
    soundfile.write(str(demo_copy / "nan.wav"), noisy, 8000, subtype="FLOAT")
    (demo_copy / ".hidden.wav").write_bytes(b"not audio")                       # hidden: not a recording
    out = home_audio.convert(demo_copy, tmp_path / "s.zarr", features=FEATURES, max_quarantine_fraction=0.5,
                             progress=False)
    quarantine = read_quarantine(out)
    assert sorted(quarantine) == ["broken", "extra/short", "nan"]
    assert quarantine["broken"].startswith("unreadable audio file broken.wav")
    assert quarantine["extra/short"] == "short.flac lasts 10.0 s, shorter than one 30 s epoch"
    assert quarantine["nan"] == "nan.wav: 1 non-finite samples (first at sample 280000)"
    root = open_sleep_store(out)
    assert sorted(str(i) for i in root["nights/id"][:]) == sorted(recordings(demo))


def test_above_fraction_fails_and_leaves_no_store(demo_copy, tmp_path):
    (demo_copy / "broken.flac").write_bytes(b"fLaC but not really")
    out = tmp_path / "s.zarr"
    with pytest.raises(ConversionError) as info:
        home_audio.convert(demo_copy, out, features=FEATURES, max_quarantine_fraction=0.2, progress=False)
    assert str(demo_copy) in str(info.value) and str(refused_quarantine_path(out)) in str(info.value)
    assert not out.exists() and not leftovers(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(ConversionError, match="no .wav/.flac recordings"):
        home_audio.convert(tmp_path, tmp_path / "s.zarr", features=FEATURES, progress=False)


def test_download_says_there_is_nothing_to_download(tmp_path):
    assert source_kind("home_audio") == "sleep"
    with pytest.raises(DownloadError, match="nothing to download") as info:
        home_audio.download(tmp_path / "home")
    assert "local" in str(info.value) and "demo" in str(info.value)
    assert not (tmp_path / "home").exists()
