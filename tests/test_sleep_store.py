"""The sleep-store layer: log-mel epoch features and audio I/O, the ``physiossl.sleep/1`` writer and validator,
and the training data path (block loads, night-bounded sequences, batched datasets, window averaging)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import zarr
from torch.utils.data import DataLoader

from physiossl.data.files import write_manifest
from physiossl.data.sleep.features import (
    FEATURE_KEYS,
    AudioError,
    check_features,
    epoch_features,
    feature_attrs,
    features_from_attrs,
    frames_per_epoch,
    mel_filterbank,
    mix_channels,
    read_audio_file,
)
from physiossl.data.sleep.loading import (
    SequenceDataset,
    SleepArrays,
    accumulate_windows,
    collate_batch,
    concat_arrays,
    load_sleep_arrays,
    normalize_nights,
    sequence_starts,
    short_nights,
)
from physiossl.data.sleep.stages import STAGES, to_view
from physiossl.data.sleep.store import (
    SLEEP_SCHEMA,
    SleepStoreWriter,
    StoreError,
    open_sleep_store,
    quarantine_path,
    validate_sleep_store,
)

# small parameters that keep stores tiny: 8 mels x 119 frames per epoch
TINY = {"audio_fs": 200, "n_mels": 8, "n_fft": 64, "win": 50, "hop": 50, "fmin": 10, "fmax": 100}
PUBLISHED = {"audio_fs": 8000, "n_mels": 48, "n_fft": 256, "win": 200, "hop": 160, "fmin": 30, "fmax": 3900}
EVENTS = ("ObstructiveApnea", "Snore")


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in Path(directory).iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _nights(lengths, seed=0, labeled=None):
    """Random feature blocks, stages and events for nights of the given lengths."""
    rng = np.random.default_rng(seed)
    frames = frames_per_epoch(TINY)
    out = []
    for k, n in enumerate(lengths):
        is_labeled = True if labeled is None else labeled[k]
        feats = rng.normal(-40, 15, (n, TINY["n_mels"], frames)).astype(np.float32)
        stages = rng.integers(-1, 5, n).astype(np.int8) if is_labeled else None
        events = {"ObstructiveApnea": rng.uniform(0, 30, n)} if k % 2 == 0 else None
        out.append((f"n{k}", feats, stages, is_labeled, events))
    return out


def write_store(path: Path, nights, shard_epochs: int = 64, dataset: str = "toy", feature=TINY) -> Path:
    with SleepStoreWriter.open(path, dataset=dataset, feature=feature, channels=["Mic"], source_version="1",
                               events=EVENTS, shard_epochs=shard_epochs) as w:
        for night_id, feats, stages, labeled, events in nights:
            w.add_night(night_id, feats, stages, labeled, events)
        w.finish({"raw": "nowhere"})
    return path


@pytest.fixture
def store(tmp_path):
    nights = _nights([70, 5, 90], labeled=[True, False, True])
    return write_store(tmp_path / "stores" / "toy_sleep.zarr", nights), nights


# --------------------------------------------------------------------------------------------- audio
def test_check_features_names_the_problems():
    assert check_features(PUBLISHED) == [] and check_features(TINY) == []
    problems = check_features({**PUBLISHED, "win": 300, "fmax": 4500, "hop": 0, "extra": 1})
    assert any("sleep.features" in p and "extra" in p for p in problems)
    assert any("sleep.features.hop" in p for p in problems)
    problems = check_features({**PUBLISHED, "win": 300, "fmax": 4500})
    assert any("sleep.features.win" in p for p in problems)
    assert any("sleep.features.fmax" in p and "Nyquist" in p for p in problems)
    assert any("fmin" in p for p in check_features({**PUBLISHED, "fmin": 4000, "fmax": 3000}, key="cfg"))
    missing = check_features({k: v for k, v in PUBLISHED.items() if k != "n_mels"})
    assert missing and "n_mels" in missing[0]
    assert any("n_mels" in p for p in check_features({**PUBLISHED, "n_mels": 200}))   # empty mel bands


def test_feature_attrs_and_frames():
    assert frames_per_epoch(PUBLISHED) == 1 + (240_000 - 256) // 160 == 1499
    attrs = feature_attrs(PUBLISHED)
    assert attrs["type"] == "log-mel" and attrs["scale"] == "dB" and attrs["frames"] == 1499
    assert attrs["epoch_s"] == 30 and attrs["center"] is False and attrs["window"] == "hann"
    assert features_from_attrs(attrs) == PUBLISHED
    with pytest.raises(ValueError, match="win"):
        feature_attrs({**PUBLISHED, "win": 512})


def _librosa_db(y, f):
    import librosa

    power = librosa.feature.melspectrogram(
        y=y, sr=f["audio_fs"], n_fft=f["n_fft"], hop_length=f["hop"], win_length=f["win"], window="hann",
        center=False, power=2.0, n_mels=f["n_mels"], fmin=f["fmin"], fmax=f["fmax"])
    return 10 * np.log10(np.maximum(power, 1e-10))


@pytest.mark.parametrize("f", [PUBLISHED, {**PUBLISHED, "audio_fs": 2000, "n_mels": 32, "hop": 200, "fmax": 990},
                               {**TINY, "win": 63}], ids=["published", "demo", "odd-window"])
def test_epoch_features_match_librosa(f):
    fs = f["audio_fs"]
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * 30 * fs)) / fs
    x = (0.3 * np.sin(2 * np.pi * fs / 8 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    feats = epoch_features(x, f)
    assert feats.shape == (2, f["n_mels"], frames_per_epoch(f)) and feats.dtype == np.float32
    for e in range(2):   # each epoch framed on its own
        expected = _librosa_db(x[e * 30 * fs:(e + 1) * 30 * fs], f)
        np.testing.assert_allclose(feats[e], expected, atol=2e-3)


def test_tone_peaks_in_nearest_mel_bin():
    import librosa

    f = PUBLISHED
    centres = librosa.mel_frequencies(n_mels=f["n_mels"] + 2, fmin=f["fmin"], fmax=f["fmax"])[1:-1]
    t = np.arange(30 * f["audio_fs"]) / f["audio_fs"]
    for tone in (300.0, 1000.0, 2500.0):
        feats = epoch_features(np.sin(2 * np.pi * tone * t).astype(np.float32), f)
        assert int(feats[0].mean(axis=1).argmax()) == int(np.abs(centres - tone).argmin()), tone


def test_epoch_features_drop_partial_epoch_and_reject_stereo():
    fs = TINY["audio_fs"]
    assert epoch_features(np.zeros(3 * 30 * fs - 1, np.float32), TINY).shape[0] == 2
    assert epoch_features(np.zeros(29 * fs, np.float32), TINY).shape == (0, 8, frames_per_epoch(TINY))
    feats = epoch_features(np.zeros(30 * fs, np.float32), TINY)
    np.testing.assert_allclose(feats, -100.0, atol=1e-4)   # silence sits at the 1e-10 power floor
    with pytest.raises(AudioError, match="mono"):
        epoch_features(np.zeros((30 * fs, 2), np.float32), TINY)
    assert mel_filterbank(8000, 256, 48, 30.0, 3900.0) is mel_filterbank(8000, 256, 48, 30.0, 3900.0)


def test_mix_channels():
    a, b = np.ones(5, np.float32), np.full(5, 3.0, np.float32)
    np.testing.assert_array_equal(mix_channels([a, b]), np.full(5, 2.0))
    with pytest.raises(AudioError, match="length"):
        mix_channels([a, np.ones(4)])
    with pytest.raises(AudioError):
        mix_channels([])


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_read_audio_file(tmp_path, fmt):
    rng = np.random.default_rng(1)
    data = rng.uniform(-0.5, 0.5, (4000, 2)).astype(np.float32)
    path = tmp_path / f"night.{fmt.lower()}"
    soundfile.write(path, data, 8000, format=fmt, subtype="PCM_16")
    x, fs = read_audio_file(path)
    assert fs == 8000.0 and x.shape == (4000, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x, data, atol=1 / 2 ** 15 + 1e-6)


def test_read_audio_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="broken.wav"):
        read_audio_file(bad)
    with pytest.raises(FileNotFoundError, match="absent.flac"):
        read_audio_file(tmp_path / "absent.flac")


# --------------------------------------------------------------------------------------------- writer
def test_writer_roundtrip(store):
    path, nights = store
    attrs = validate_sleep_store(path)
    assert attrs["schema"] == SLEEP_SCHEMA and attrs["dataset"] == "toy" and attrs["source_version"] == "1"
    assert attrs["stages"] == list(STAGES) and attrs["epoch_s"] == 30 and attrs["audio_fs"] == 200
    assert attrs["feature"] == feature_attrs(TINY) and attrs["channels"] == ["Mic"]
    assert attrs["n_nights"] == 3 and attrs["n_epochs"] == 165 and attrs["events"] == list(EVENTS)
    assert attrs["provenance"] == {"raw": "nowhere"} and attrs["created_with"].startswith("physiossl ")
    root = open_sleep_store(path)
    feats = root["features"]
    assert feats.dtype == np.float16 and feats.shape == (165, 8, frames_per_epoch(TINY))
    expected = np.concatenate([n[1] for n in nights])
    np.testing.assert_allclose(feats[:].astype(np.float32), expected, rtol=1e-3, atol=1e-3)
    assert root["nights/offsets"][:].tolist() == [0, 70, 75, 165]
    assert [str(x) for x in root["nights/id"][:]] == ["n0", "n1", "n2"]
    assert root["nights/labeled"][:].tolist() == [True, False, True]
    assert root["epochs/night"][:].tolist() == [0] * 70 + [1] * 5 + [2] * 90
    assert root["epochs/index"][:].tolist() == list(range(70)) + list(range(5)) + list(range(90))
    stage = root["labels/stage"]
    assert stage.dtype == np.int8
    np.testing.assert_array_equal(stage[:], np.concatenate([nights[0][2], np.full(5, -1), nights[2][2]]))
    apnea = root["events/ObstructiveApnea"][:]
    np.testing.assert_allclose(apnea[:70], nights[0][4]["ObstructiveApnea"], rtol=1e-6)
    assert not apnea[70:75].any()
    assert root["events/Snore"].dtype == np.float32 and not root["events/Snore"][:].any()
    assert leftovers(path.parent) == []


def test_writer_shards_features(tmp_path):
    nights = _nights([100, 40, 30])
    path = write_store(tmp_path / "s.zarr", nights, shard_epochs=64)
    root = open_sleep_store(path)
    assert root["features"].shards[0] == 64 and root["features"].chunks[0] == 64
    shard_files = os.listdir(path / "features" / "c")
    assert len(shard_files) == 3   # 170 epochs in shards of 64
    np.testing.assert_allclose(root["features"][:].astype(np.float32), np.concatenate([n[1] for n in nights]),
                               rtol=1e-3, atol=1e-3)
    with pytest.raises(StoreError, match="multiple"):
        write_store(tmp_path / "bad.zarr", nights, shard_epochs=100)


def test_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "stores" / "toy_sleep.zarr"
    night = _nights([10])[0]
    with pytest.raises(KeyError, match="boom"):
        with SleepStoreWriter.open(path, dataset="toy", feature=TINY, channels=["Mic"]) as w:
            w.add_night(*night[:4])
            raise KeyError("boom")
    assert not path.exists() and leftovers(path.parent) == []
    with pytest.raises(RuntimeError, match="finish"):
        with SleepStoreWriter.open(path, dataset="toy", feature=TINY, channels=["Mic"]) as w:
            w.add_night(*night[:4])
    assert not path.exists() and leftovers(path.parent) == []
    with pytest.raises(StoreError, match="no night"):
        with SleepStoreWriter.open(path, dataset="toy", feature=TINY, channels=["Mic"]) as w:
            w.finish({})
    assert not path.exists() and leftovers(path.parent) == []


def test_writer_failure_keeps_previous_store(store):
    path, _ = store
    with pytest.raises(RuntimeError, match="interrupted"):
        with SleepStoreWriter.open(path, dataset="other", feature=TINY, channels=["Mic"]) as w:
            w.add_night(*_nights([3])[0][:4])
            raise RuntimeError("interrupted")
    assert validate_sleep_store(path)["dataset"] == "toy"
    assert leftovers(path.parent) == []


def test_add_night_rejects_bad_input(tmp_path):
    frames = frames_per_epoch(TINY)
    good = np.zeros((4, 8, frames), np.float32)
    stages = np.array([0, 1, 2, 4], np.int8)
    with SleepStoreWriter.open(tmp_path / "a.zarr", dataset="toy", feature=TINY, channels=["Mic"],
                               events=EVENTS) as w:
        cases = [
            (("x1", np.zeros((4, 8, frames + 1), np.float32), stages, True), "x1.*shape"),
            (("x2", good.astype(np.int16), stages, True), "x2.*floating"),
            (("x3", good, np.array([0, 1, 5, 2]), True), "x3.*outside"),
            (("x4", good, stages[:3], True), "x4.*stages of shape"),
            (("x5", good, None, True), "x5.*no stages"),
            (("x6", good, stages, False), "x6.*labeled=False"),
            (("x7", good, stages.astype(np.float32), True), "x7.*integers"),
            (("x8", np.full_like(good, np.nan), stages, True), "x8.*NaN"),
            (("x9", np.zeros((0, 8, frames), np.float32), None, False), "x9.*epoch"),
        ]
        for args, message in cases:
            with pytest.raises(ValueError, match=message):
                w.add_night(*args)
        with pytest.raises(ValueError, match="y1.*unknown events"):
            w.add_night("y1", good, stages, True, {"Hypopnea": np.zeros(4)})
        with pytest.raises(ValueError, match="y2.*seconds"):
            w.add_night("y2", good, stages, True, {"Snore": np.full(4, 31.0)})
        w.add_night("ok", good, stages, True, {"Snore": np.full(4, 30.0)})
        with pytest.raises(ValueError, match="ok.*twice"):
            w.add_night("ok", good, stages, True)
        w.finish({})
    assert validate_sleep_store(tmp_path / "a.zarr")["n_nights"] == 1
    with pytest.raises(StoreError, match="fmax"):
        with SleepStoreWriter.open(tmp_path / "b.zarr", dataset="toy", feature={**TINY, "fmax": 150},
                                   channels=["Mic"]):
            pass
    assert not (tmp_path / "b.zarr").exists()


def test_writer_accepts_a_stores_feature_attr(store, tmp_path):
    path, nights = store
    attrs = validate_sleep_store(path)
    copy = write_store(tmp_path / "copy.zarr", nights[:1], feature=attrs["feature"])
    assert validate_sleep_store(copy)["feature"] == attrs["feature"]
    assert quarantine_path(copy).name == "copy.zarr.quarantine.csv"


# --------------------------------------------------------------------------------------------- validation
def _edit_attrs(path, **changes):
    zarr.open_group(str(path), mode="r+").attrs.update(changes)
    write_manifest(path)  # as if the store had been written so: the contract check refuses it


def _rewrite(path, key, values):
    arr = zarr.open_group(str(path), mode="r+")[key]
    arr[:] = values
    write_manifest(path)


@pytest.mark.parametrize("edit, problem", [
    (lambda p: _edit_attrs(p, schema="physiossl.ecg/1"), "schema"),
    (lambda p: _edit_attrs(p, n_epochs=166), "features"),
    (lambda p: _edit_attrs(p, stages=["W", "N1", "N2", "REM"]), "stages"),
    (lambda p: _rewrite(p, "nights/offsets", [0, 70, 80, 165]), "epochs/night"),
    (lambda p: _rewrite(p, "nights/offsets", [0, 80, 75, 165]), "offsets"),
    (lambda p: _rewrite(p, "epochs/index", np.arange(165)), "epochs/index"),
    (lambda p: _rewrite(p, "labels/stage", np.full(165, 7)), "outside"),
    (lambda p: _rewrite(p, "labels/stage", np.zeros(165)), "not labeled"),
    (lambda p: shutil.rmtree(p / "events" / "Snore"), "events/Snore"),
    (lambda p: shutil.rmtree(p / "nights" / "labeled"), "nights/labeled"),
], ids=["schema", "n_epochs", "stages", "offsets-vs-night", "offsets-order", "index", "label-range",
        "unlabeled-scored", "event-missing", "labeled-missing"])
def test_validation_errors(store, edit, problem):
    path, _ = store
    validate_sleep_store(path)
    edit(path)
    with pytest.raises(StoreError, match=problem) as info:
        validate_sleep_store(path)
    assert str(path) in str(info.value)
    with pytest.raises(StoreError):
        open_sleep_store(path)


def test_validation_rejects_non_store(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="zarr.json"):
        validate_sleep_store(tmp_path / "plain")


# --------------------------------------------------------------------------------------------- loading
def test_load_all_and_subset(store):
    path, nights = store
    arrays = load_sleep_arrays(path)
    assert arrays.features.dtype == np.float32 and arrays.features.shape == (165, 8, frames_per_epoch(TINY))
    assert arrays.night_ids == ["n0", "n1", "n2"] and arrays.labeled.tolist() == [True, False, True]
    assert arrays.offsets.tolist() == [0, 70, 75, 165] and arrays.n_epochs == 165 and arrays.n_nights == 3
    np.testing.assert_allclose(arrays.features, np.concatenate([n[1] for n in nights]), rtol=1e-3, atol=1e-3)
    assert set(arrays.events) == set(EVENTS)

    part = load_sleep_arrays(path, nights=["n2", "n1"])   # store order is kept
    assert part.night_ids == ["n1", "n2"] and part.offsets.tolist() == [0, 5, 95]
    assert part.night.tolist() == [0] * 5 + [1] * 90
    assert part.index.tolist() == list(range(5)) + list(range(90))
    np.testing.assert_array_equal(part.features, arrays.features[70:])
    np.testing.assert_array_equal(part.stages, arrays.stages[70:])
    np.testing.assert_array_equal(part.events["ObstructiveApnea"], arrays.events["ObstructiveApnea"][70:])
    assert part.labeled.tolist() == [False, True]
    half = load_sleep_arrays(path, nights=["n0"], dtype=np.float16)
    assert half.features.dtype == np.float16 and half.features.shape[0] == 70
    with pytest.raises(StoreError, match="nope"):
        load_sleep_arrays(path, nights=["nope"])


def test_load_reads_blocks_not_epochs(store, monkeypatch):
    path, _ = store
    calls = []
    original = zarr.Array.__getitem__

    def counting(self, key):
        if self.path == "features":
            calls.append(key)
        return original(self, key)

    monkeypatch.setattr(zarr.Array, "__getitem__", counting)
    load_sleep_arrays(path)
    assert len(calls) == 1   # 165 epochs fit one block of 16 chunks
    calls.clear()
    load_sleep_arrays(path, nights=["n2"])
    assert calls == [slice(64, 165)]   # from the chunk holding epoch 75 to the end


def test_sequence_starts_stay_within_nights_and_cover(store, caplog):
    path, _ = store
    arrays = load_sleep_arrays(path)
    with caplog.at_level(logging.WARNING):
        starts = sequence_starts(arrays, None, seq_len=6, stride=4)
    assert "n1" in caplog.text and "shorter than 6" in caplog.text
    assert short_nights(arrays, None, 6) == [1]
    ends = starts + 5
    assert (arrays.night[starts] == arrays.night[ends]).all()
    covered = np.zeros(arrays.n_epochs, bool)
    for s in starts:
        covered[s:s + 6] = True
    assert covered[:70].all() and not covered[70:75].any() and covered[75:].all()
    assert 70 - 6 in starts and 165 - 6 in starts   # last windows aligned to the night ends
    assert sequence_starts(arrays, [2], seq_len=90, stride=1).tolist() == [75]
    assert len(sequence_starts(arrays, [1], seq_len=6, stride=1)) == 0
    with pytest.raises(ValueError):
        sequence_starts(arrays, None, seq_len=6, stride=0)


def test_sequence_dataset_batches_and_views(store):
    path, _ = store
    arrays = load_sleep_arrays(path)
    starts = sequence_starts(arrays, [0, 2], seq_len=5, stride=5)
    ds = SequenceDataset(arrays, starts, seq_len=5, n_classes=4)
    x, y = ds[3]
    assert x.shape == (5, 8, frames_per_epoch(TINY)) and x.dtype == torch.float32 and y.dtype == torch.int64
    s = int(starts[3])
    np.testing.assert_array_equal(x.numpy(), arrays.features[s:s + 5])
    np.testing.assert_array_equal(y.numpy(), to_view(arrays.stages[s:s + 5], 4))
    loader = DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate_batch)
    xb, yb = next(iter(loader))
    assert xb.shape == (8, 5, 8, frames_per_epoch(TINY)) and yb.shape == (8, 5)
    np.testing.assert_array_equal(xb[3].numpy(), x.numpy())
    assert int(yb.max()) <= 3 and int(yb.min()) >= -1
    unlabeled = SequenceDataset(arrays, starts, seq_len=5, n_classes=None)
    assert (unlabeled.__getitems__([0, 1])[1] == -1).all()
    night1 = SequenceDataset(arrays, np.array([70]), seq_len=5, n_classes=5)
    assert (night1[0][1] == -1).all()   # an unlabeled night
    half = load_sleep_arrays(path, dtype=np.float16)
    assert SequenceDataset(half, starts, 5, 3)[0][0].dtype == torch.float32
    with pytest.raises(ValueError, match="cross a night"):
        SequenceDataset(arrays, np.array([68]), seq_len=5, n_classes=5)


def test_concat_arrays(store, tmp_path):
    path, _ = store
    home = write_store(tmp_path / "home.zarr", _nights([12, 8], seed=3, labeled=[False, False]), dataset="home")
    a, b = load_sleep_arrays(path), load_sleep_arrays(home)
    mixed = concat_arrays([a, b])
    assert mixed.night_ids == ["toy/n0", "toy/n1", "toy/n2", "home/n0", "home/n1"]
    assert mixed.store_ids == ["n0", "n1", "n2", "n0", "n1"] and mixed.night_datasets[-1] == "home"
    assert mixed.offsets.tolist() == [0, 70, 75, 165, 177, 185]
    assert mixed.night.tolist()[-9:] == [3] * 1 + [4] * 8
    assert mixed.labeled.tolist() == [True, False, True, False, False]
    np.testing.assert_array_equal(mixed.features[165:], b.features)
    assert (mixed.stages[165:] == -1).all() and mixed.attrs["dataset"] == "toy+home"
    assert concat_arrays([mixed]).night_ids == mixed.night_ids   # no double prefix
    starts = sequence_starts(mixed, None, seq_len=10, stride=10)
    assert (mixed.night[starts] == mixed.night[starts + 9]).all()
    with pytest.raises(ValueError, match="more than once"):
        concat_arrays([a, a])
    other = write_store(tmp_path / "other.zarr", [("m0", np.zeros((3, 8, 119), np.float32), None, False, None)],
                        feature={**TINY, "fmax": 90})
    with pytest.raises(ValueError, match=r"toy_sleep\.zarr.*other\.zarr.*fmax"):
        concat_arrays([a, load_sleep_arrays(other)])


def test_accumulate_windows_averages_overlaps():
    starts = np.array([0, 2, 6])
    values = np.zeros((3, 4, 2))
    values[0] = 1.0
    values[1] = 3.0
    values[2, :, 1] = 5.0
    out = accumulate_windows(starts, 4, values, n_epochs=11)
    assert out.shape == (11, 2)
    np.testing.assert_allclose(out[:2], 1.0)
    np.testing.assert_allclose(out[2:4], 2.0)    # windows 0 and 1
    np.testing.assert_allclose(out[4:6], 3.0)
    np.testing.assert_allclose(out[6:10], [[0.0, 5.0]] * 4)
    assert np.isnan(out[10]).all()
    torch_out = accumulate_windows(starts, 4, torch.from_numpy(values).float(), 11)
    assert torch_out.dtype == np.float32
    np.testing.assert_allclose(torch_out[:10], out[:10])
    with pytest.raises(ValueError, match="shape"):
        accumulate_windows(starts, 3, values, 11)


def test_sleep_arrays_by_hand_and_keys():
    arrays = SleepArrays(features=np.zeros((3, 1, 1), np.float32), stages=np.zeros(3, np.int8),
                         night=np.zeros(3, np.int32), index=np.arange(3, dtype=np.int32), night_ids=["a"],
                         labeled=np.array([True]), offsets=np.array([0, 3]), attrs={"dataset": "d"})
    assert arrays.night_datasets == ["d"] and arrays.store_ids == ["a"] and arrays.night_indices(["a"]) == [0]
    assert set(FEATURE_KEYS) == set(TINY)


def test_normalize_nights_removes_each_nights_per_bin_offset():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 3, 20)).astype(np.float32)
    offsets = np.array([[-40.0, -20.0, 5.0], [10.0, 0.0, -7.5]], np.float32)   # per night, per mel bin (dB)
    features = base.copy()
    features[:6] += offsets[0][None, :, None]
    features[6:] += offsets[1][None, :, None]
    arrays = SleepArrays(features=features, stages=np.zeros(10, np.int8),
                         night=np.repeat([0, 1], [6, 4]).astype(np.int32),
                         index=np.r_[np.arange(6), np.arange(4)].astype(np.int32), night_ids=["a", "b"],
                         labeled=np.array([True, True]), offsets=np.array([0, 6, 10]), attrs={"dataset": "d"})
    normalize_nights(arrays, frame_step=1)
    for a, b in ((0, 6), (6, 10)):
        medians = np.median(arrays.features[a:b].transpose(1, 0, 2).reshape(3, -1), axis=1)
        np.testing.assert_allclose(medians, 0, atol=1e-5)
    # the offsets are gone: the two nights now differ only by their noise
    for a, b in ((0, 6), (6, 10)):
        shift = arrays.features[a:b] - base[a:b]
        np.testing.assert_allclose(shift, np.broadcast_to(shift[:1, :, :1], shift.shape), atol=1e-4)
