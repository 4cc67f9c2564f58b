"""The sizing rehearsal's parts: the sizing tables from Snakemake benchmark files, the demo options of a config, and
the streaming of the real-size demo generators and of the sleep conversion (bounded memory, same content)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
import zarr

from physiossl.cli import main
from physiossl.config import ConfigError, load_config
from physiossl.report import sizing
from physiossl.stages.sizing import run as write_sizing

REPO = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench_file(path: Path, *rows: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def run_config(root: Path, name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["name"] = name
    config["paths"] = {"data": str(root / "data"), "results": str(root / "results")}
    return config


# --------------------------------------------------------------------------------------------- benchmark files
def test_read_benchmark_takes_the_median_time_and_the_peak_memory(tmp_path):
    path = bench_file(tmp_path / "b.tsv",
                      "12.5\t0:00:12\t300.1\t900.0\t250.0\t260.0\t10.0\t20.0\t95.0\t11.9",
                      "10.0\t0:00:10\t350.0\t950.0\t280.0\t290.0\t11.0\t21.0\t90.0\t9.5",
                      "11.0\t0:00:11\t320.0\tNA\t260.0\t270.0\t12.0\t22.0\t92.0\t10.1")
    b = sizing.read_benchmark(path)
    assert b["s"] == 11.0 and b["cpu_time"] == 10.1 and b["repeats"] == 3
    assert b["max_rss"] == 350.0 and b["max_vms"] == 950.0
    short = sizing.read_benchmark(bench_file(tmp_path / "c.tsv", "0.8\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t0.5"))
    assert short["max_rss"] is None and short["s"] == 0.8


def test_read_benchmark_names_a_bad_file(tmp_path):
    (tmp_path / "empty.tsv").write_text(HEADER)
    with pytest.raises(sizing.SizingError, match="empty.tsv: no benchmark row"):
        sizing.read_benchmark(tmp_path / "empty.tsv")
    (tmp_path / "other.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(sizing.SizingError, match="other.tsv: not a Snakemake benchmark file"):
        sizing.read_benchmark(tmp_path / "other.tsv")
    bench_file(tmp_path / "text.tsv", "x\t0:00:00\t1\t1\t1\t1\t1\t1\t1\t1")
    with pytest.raises(sizing.SizingError, match="column 's'"):
        sizing.read_benchmark(tmp_path / "text.tsv")


# --------------------------------------------------------------------------------------------- tables
@pytest.fixture
def runs(tmp_path, demo_store):
    """Two fabricated runs (full, tenth) of a conversion whose store is the real 240-record demo store, plus a
    pretraining job, as `physiossl sizing` finds them."""
    configs = {}
    for name, rss, seconds in (("full", 520.0, 100.0), ("tenth", 400.0, 10.0)):
        root = tmp_path / name
        config = run_config(root, name)
        shutil.copytree(demo_store, root / "data" / "stores" / "ptbxl_100hz.zarr")
        (root / "data" / "stores" / "ptbxl_100hz.zarr.quarantine.csv").write_text("record,reason\n")
        (root / "data" / "raw" / "ptbxl").mkdir(parents=True)
        (root / "data" / "raw" / "ptbxl" / "ptbxl_database.csv").write_bytes(b"x" * 5000)
        bench = root / "results" / "benchmarks"
        bench_file(bench / "convert" / "ptbxl_100hz.tsv",
                   f"{seconds}\t0:01:40\t{rss}\t900\t{rss - 50}\t{rss - 40}\t100\t50\t180\t{2 * seconds}")
        bench_file(bench / "demo_data" / "ptbxl.tsv", "5.0\t0:00:05\t200\t500\t150\t160\t0\t30\t99\t4.9")
        pre = root / "results" / "pretrain" / "simclr"
        pre.mkdir(parents=True)
        (pre / "encoder.pt").write_bytes(b"\0" * 4096)
        (pre / "encoder.json").write_text(json.dumps({"n_records": 180, "crop_samples": 250, "batch_size": 64,
                                                      "epochs": 1, "steps": 2}))
        bench_file(bench / "pretrain" / "simclr.tsv", "60\t0:01:00\t2500\t5000\t2400\t2410\t10\t5\t190\t114")
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        configs[name] = path
    return configs


def test_collect_reads_the_jobs_with_their_data_and_output_sizes(runs):
    rows = sizing.collect(load_config(runs["full"]))
    assert [(r.rule, r.job) for r in rows] == [("demo_data", "ptbxl"), ("convert", "ptbxl_100hz"),
                                              ("pretrain", "simclr")]
    demo, convert, pretrain = rows
    assert demo.data == "1,500 records" and demo.output_mb > 0     # n_records of the config's demo section
    assert convert.data == "240 records × 12 × 1,000 @ 100 Hz" and convert.records == 240
    assert convert.seconds == 100.0 and convert.max_rss_mb == 520.0 and convert.cpu_s == 200.0
    store_bytes = sum(p.stat().st_size for p in Path(convert.outputs[0]).rglob("*") if p.is_file())
    assert store_bytes / 2**20 <= convert.output_mb < store_bytes / 2**20 + 1 + 0.01 * len(convert.outputs)
    assert pretrain.data.startswith("180 records × 250-sample crops, batch 64, 1 epoch(s)")
    assert pretrain.output_mb == pytest.approx(4096 / 2**20, abs=0.01)


def test_streaming_check_compares_peak_rss_with_the_baseline_run(runs):
    full, tenth = (sizing.collect(load_config(runs[n])) for n in ("full", "tenth"))
    checks = sizing.streaming_check(full, tenth, limit=1.5)
    assert [(c.rule, c.job) for c in checks] == [("convert", "ptbxl_100hz")]       # conversions only
    assert checks[0].rss_ratio == pytest.approx(1.3) and checks[0].passed
    assert not sizing.streaming_check(full, tenth, limit=1.2)[0].passed


def test_cache_sizes_per_pool_and_rate(runs):
    config = load_config(runs["full"])
    config["pools"] = {"pool": ["ptbxl"]}
    caches = sizing.cache_sizes(config)
    pool = [c for c in caches if c.what == "pool pool"]
    assert [(c.fs, c.measured) for c in pool] == [(100.0, True), (500.0, False)]
    assert pool[0].records == 240 and pool[0].gb == pytest.approx(240 * 12 * 1000 * 4 / 1e9)
    assert pool[1].gb == pytest.approx(5 * pool[0].gb)
    store = [c for c in caches if c.what == "store ptbxl_100hz.zarr"]
    assert store and store[0].records == 240


def test_sizing_cli_writes_the_tables_into_the_document_and_keeps_its_prose(runs, tmp_path, capsys):
    doc = tmp_path / "docs" / "sizing.md"
    doc.parent.mkdir()
    doc.write_text(f"# Sizing\n\nprose before\n\n{sizing.BEGIN}\nold tables\n{sizing.END}\n\nprose after\n")
    args = ["sizing", "--configfile", str(runs["full"]), "--configfile", str(runs["tenth"]), "--baseline", "tenth",
            "--out", str(doc)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["jobs"] == 6 and summary["streaming_checked"] == 1 and summary["streaming_failed"] == []
    text = doc.read_text()
    assert "prose before" in text and "prose after" in text and "old tables" not in text
    assert "### Run `full`" in text and "### Run `tenth`" in text
    assert "| convert | ptbxl_100hz | 240 records × 12 × 1,000 @ 100 Hz | 100 | 520 | 200 |" in text
    assert "| convert | ptbxl_100hz | 1.0 | 520 | 400 | 1.30 | yes |" in text
    lines = (tmp_path / "docs" / "sizing.csv").read_text().splitlines()
    assert lines[0].startswith("run,rule,job,data,records") and len(lines) == 7
    assert main(args + ["--limit", "1.2"]) == 0
    assert json.loads(capsys.readouterr().out)["streaming_failed"] == ["full: convert ptbxl_100hz (1.30x)"]
    assert main(args[:-4] + ["--baseline", "nope", "--out", str(doc)]) == 1
    assert "not the name of a config" in capsys.readouterr().err


def test_sizing_needs_a_run(tmp_path):
    with pytest.raises(sizing.SizingError, match="no benchmark folder"):
        write_sizing([run_config(tmp_path, "none")], tmp_path / "s.md")


def test_every_rule_declares_a_benchmark_file():
    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    rules = [line.split()[1].rstrip(":") for line in text.splitlines() if line.strip().startswith("rule ")]
    assert len(rules) >= 10
    assert text.count("benchmark:") == len(rules), rules


# --------------------------------------------------------------------------------------------- demo options
def test_demo_options_are_checked_against_the_source(tmp_path):
    config = run_config(tmp_path, "opts")
    config["datasets"]["ptbxl"]["demo"]["options"] = {"n_parts": 2}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"datasets.ptbxl.demo.options.n_parts': the demo of source 'ptbxl' takes "
                                          r"no option 'n_parts'"):
        load_config(path)


def test_demo_command_passes_the_config_options(tmp_path, capsys):
    config = run_config(tmp_path, "opts")
    config["datasets"]["code15"] = {"source": "code15", "mode": "demo", "fs": 100, "max_quarantine_fraction": 0.01,
                                    "demo": {"n_records": 50, "options": {"n_parts": 3}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "raw"
    assert main(["demo", "code15", "--out", str(out), "--n-records", "12", "--seed", "1", "--configfile", str(path),
                 "--dataset", "code15"]) == 0
    assert sorted(p.name for p in out.glob("*.hdf5")) == [f"exams_part{k}.hdf5" for k in range(3)]
    assert main(["demo", "ptbxl", "--out", str(tmp_path / "x"), "--configfile", str(path), "--dataset", "code15"]) == 2
    assert "has source 'code15', not 'ptbxl'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- streaming demos
def test_streamed_code15_and_codetest_demos_hold_the_drawn_tracings(tmp_path):
    from physiossl.data.ecg.sources import _code, code15, codetest

    expected, specs = _code.demo_tracings(np.random.default_rng(4), 9)
    streamed = list(_code.iter_demo_tracings(np.random.default_rng(4), 9))
    assert all(np.array_equal(rec, expected[i]) and spec == specs[i] for i, (rec, spec) in enumerate(streamed))
    raw = codetest.demo(tmp_path / "codetest", n_records=9, seed=4)
    with h5py.File(raw / "ecg_tracings.hdf5") as fh:
        assert np.array_equal(fh["tracings"][:], expected)
    # a code15 part is copied from the spill file in blocks: every exam's tracing is one drawn record
    raw = code15.demo(tmp_path / "code15", n_records=40, seed=4, n_parts=1)
    assert not list(raw.glob(".tracings*"))                  # the spill file is gone
    with h5py.File(raw / "exams_part0.hdf5") as fh:
        tracings, ids = fh["tracings"][:], fh["exam_id"][:]
    assert tracings.shape == (41, 4096, 12) and ids[-1] == 0 and not tracings[-1].any()
    assert len({t.tobytes() for t in tracings[:-1]}) == 40


def test_demo_part_blocks_join_seamlessly():
    from physiossl.data.sleep.sources import psg_audio
    from physiossl.data.sleep.synth import (
        MIC_MIX,
        TRACHEAL_MIX,
        plan_breaths,
        render_breathing,
        synth_hypnogram,
        synth_subject,
    )

    def take(block_s):
        rng = np.random.default_rng(0)
        stages = synth_hypnogram(20, rng)
        subject = synth_subject(rng)
        plan = plan_breaths(stages, rng, subject)
        audio = psg_audio._Take(render_breathing(plan, 4000, rng, subject, {"mic": MIC_MIX, "tracheal": TRACHEAL_MIX}))
        blocks = list(psg_audio._part_blocks(audio, 500, 4000, 1000, block_s=block_s))
        return blocks, rng.random()

    whole, after_whole = take(600)
    parts, after_parts = take(90)
    assert len(whole) == 1 and [n for n, _, _ in parts] == [90] * 5 + [50]
    assert after_parts == after_whole                     # the same draws: later nights are unchanged
    assert np.array_equal(np.concatenate([m for _, m, _ in parts]), whole[0][1])
    tracheal = np.concatenate([t for _, _, t in parts])
    assert len(tracheal) == len(whole[0][2]) == 500 * 1000
    np.testing.assert_allclose(tracheal, whole[0][2], atol=1e-6)


def test_psg_demo_writes_the_configured_rates(tmp_path):
    import pyedflib

    from physiossl.data.sleep.sources import psg_audio

    raw = psg_audio.demo(tmp_path / "raw", n_records=1, seed=1, minutes=1.5, part_minutes=1, mic_fs=8000,
                         tracheal_fs=8000)
    parts = sorted((raw / "APNEA_EDF").rglob("*.edf"))
    assert len(parts) == 2
    reader = pyedflib.EdfReader(str(parts[0]))
    try:
        assert list(reader.getSampleFrequencies()) == [8000.0, 8000.0, 100.0]
        assert reader.getFileDuration() == 60
    finally:
        reader.close()


# --------------------------------------------------------------------------------------------- streaming conversion
FEATURES = {"audio_fs": 2000, "n_mels": 16, "n_fft": 256, "win": 200, "hop": 200, "fmin": 30, "fmax": 990}


def test_sleep_conversion_streams_nights_through_scratch_files_with_the_same_store(tmp_path, monkeypatch):
    from physiossl.data.sleep.sources import psg_audio
    from physiossl.data.sleep.store import SleepStoreWriter

    raw = psg_audio.demo(tmp_path / "raw", n_records=3, seed=2, minutes=(2, 3), part_minutes=1)
    streamed = psg_audio.convert(raw, tmp_path / "a" / "psg_sleep.zarr", features=FEATURES, progress=False,
                                 max_quarantine_fraction=0.0)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]    # scratch folder removed
    blocks = []
    original = SleepStoreWriter.add_night_blocks

    def spy(self, night_id, night_blocks, n_epochs, *args, **kwargs):
        night_blocks = list(night_blocks)
        blocks.append([len(b) for b in night_blocks])
        return original(self, night_id, iter(night_blocks), n_epochs, *args, **kwargs)

    monkeypatch.setattr(SleepStoreWriter, "add_night_blocks", spy)
    monkeypatch.setattr(psg_audio.SpilledFeatures.blocks, "__defaults__", (2,))
    psg_audio.convert(raw, tmp_path / "b" / "psg_sleep.zarr", features=FEATURES, progress=False,
                      max_quarantine_fraction=0.0)
    assert len(blocks) == 3 and all(max(b) <= 2 and len(b) > 1 for b in blocks)
    # the in-memory path (no scratch folder) gives the same store
    monkeypatch.setattr(psg_audio, "write_nights", _in_memory(psg_audio.write_nights))
    in_memory = psg_audio.convert(raw, tmp_path / "c" / "psg_sleep.zarr", features=FEATURES, progress=False,
                                  max_quarantine_fraction=0.0)
    for other in (tmp_path / "b" / "psg_sleep.zarr", in_memory):
        a, b = zarr.open_group(str(streamed), mode="r"), zarr.open_group(str(other), mode="r")
        for key in ("features", "labels/stage", "nights/offsets", "epochs/night", "events/Snore"):
            assert np.array_equal(a[key][:], b[key][:]), key


def _in_memory(write_nights):
    from dataclasses import replace

    def wrapped(tasks, *args, **kwargs):
        return write_nights([replace(t, scratch=None) for t in tasks], *args, **kwargs)
    return wrapped


def test_add_night_blocks_rewinds_a_failed_night_across_a_shard(tmp_path):
    from physiossl.data.sleep.features import frames_per_epoch
    from physiossl.data.sleep.store import SleepStoreWriter

    shape = (FEATURES["n_mels"], frames_per_epoch(FEATURES))
    rng = np.random.default_rng(0)
    first = rng.normal(-40, 10, (50, *shape)).astype(np.float32)
    second = rng.normal(-40, 10, (30, *shape)).astype(np.float32)
    bad = second.copy()
    bad[25] = np.nan
    path = tmp_path / "s.zarr"
    with SleepStoreWriter.open(path, dataset="toy", feature=FEATURES, channels=["Mic"], shard_epochs=64) as w:
        w.add_night_blocks("a", [first[:20], first[20:]], 50, np.zeros(50, np.int8), True)
        with pytest.raises(ValueError, match="night b: features have values NaN"):   # 64-epoch shard already written
            w.add_night_blocks("b", [bad[:20], bad[20:]], 30, np.zeros(30, np.int8), True)
        with pytest.raises(ValueError, match="night b: 20 epochs of features, 30 announced"):
            w.add_night_blocks("b", [second[:20]], 30, np.zeros(30, np.int8), True)
        w.add_night("b", second, np.ones(30, np.int8), True)
        w.finish({})
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["n_epochs"] == 80 and list(root["nights/id"][:]) == ["a", "b"]
    expected = np.concatenate([first, second]).astype(np.float16)
    assert np.array_equal(root["features"][:], expected)
