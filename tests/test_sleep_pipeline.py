"""The sleep-staging chain: config checks, night splits, one training run per variant on a tiny demo, the CLI,
and the Snakemake grid (demo end to end, full PSG-Audio configuration as a dry run)."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from physiossl.config import ConfigError, sleep_runs, stage_keys, validate_config
from physiossl.data.files import write_manifest
from physiossl.stages.sleep import labeled_nights, split_nights

REPO = Path(__file__).resolve().parents[1]


def demo_sleep_config() -> dict:
    return yaml.safe_load((REPO / "config" / "demo_sleep.yaml").read_text())


def expect_problem(config: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        validate_config(config)


def test_shipped_sleep_configs_validate():
    for name in ("demo_sleep", "paper_sleep"):
        validate_config(yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()), name)


def test_sleep_config_errors_name_the_key():
    config = demo_sleep_config()
    bad = copy.deepcopy(config)
    bad["sleep"]["dataset"] = "nope"
    expect_problem(bad, r"'sleep.dataset': unknown dataset 'nope'")
    bad = copy.deepcopy(config)
    bad["datasets"]["psg_audio"]["fs"] = 100
    expect_problem(bad, r"'datasets.psg_audio.fs': not used by the sleep source")
    bad = copy.deepcopy(config)
    bad["sleep"]["splits"] = {"val": 0.4, "test": 0.4, "unlabeled": 0.3}
    expect_problem(bad, r"'sleep.splits': val \+ test \+ unlabeled must leave training nights")
    bad = copy.deepcopy(config)
    del bad["sleep"]["unlabeled"]
    expect_problem(bad, r"'sleep.grid.pools': pool 'ood' needs unlabeled datasets")
    bad = copy.deepcopy(config)
    bad["sleep"]["model"]["args"] = {"depth_of_field": 3}
    expect_problem(bad, r"'sleep.model.args.depth_of_field': model 'sleepformer' takes no argument")
    bad = copy.deepcopy(config)
    bad["sleep"]["augment"] = [{"gain": {"decibels": 3}}]
    expect_problem(bad, r"sleep.augment")
    bad = copy.deepcopy(config)
    bad["sleep"]["features"]["fmax"] = 5000
    expect_problem(bad, r"sleep.features")
    bad = copy.deepcopy(config)
    bad["sleep"]["hypnogram"] = {"variants": ["ccssl"]}
    bad["sleep"]["grid"]["variants"] = ["supervised", "both"]
    expect_problem(bad, r"'sleep.hypnogram.variants': 'ccssl' is not in sleep.grid.variants")
    bad = copy.deepcopy(config)
    bad["sleep"]["unlabeled"] = ["psg_audio", "ptbxl"]
    bad["datasets"]["ptbxl"] = {"source": "ptbxl", "mode": "demo", "fs": 100, "max_quarantine_fraction": 0.0}
    expect_problem(bad, r"'sleep.unlabeled': dataset 'ptbxl' is not a sleep-sound dataset")
    bad = copy.deepcopy(config)
    del bad["resources"]["sleep"]
    expect_problem(bad, r"'resources.sleep': required by the 'sleep' section")
    bad = copy.deepcopy(config)
    bad["sleep"]["grid"].update(fractions=[1.0], pools=["in"])
    bad["sleep"]["splits"]["unlabeled"] = 0
    expect_problem(bad, r"pool 'in' at fraction 1 has no unlabeled nights")


def test_ecg_sections_are_optional_but_go_together():
    config = demo_sleep_config()
    config["evaluate"] = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["evaluate"]
    expect_problem(config, r"'experiment' is a dependency of 'evaluate'|experiment")
    ecg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    del ecg["datasets"]["ptbxl"]["fs"]
    expect_problem(ecg, r"'datasets.ptbxl.fs': required by the ECG source 'ptbxl'")


def test_grid_runs_and_stage_keys():
    config = demo_sleep_config()
    config["sleep"]["grid"]["fractions"] = [0.25, 0.5]
    config["sleep"]["grid"].pop("seeds")                                   # default: the top-level seed
    runs = sleep_runs(config)
    assert runs[:3] == [("supervised", 0.25, "none", 0), ("supervised", 0.5, "none", 0), ("sc", 0.25, "in", 0)]
    assert len(runs) == 2 + 4 * 2 * 2
    config["sleep"]["grid"]["seeds"] = [3, 1]
    runs = sleep_runs(config)
    assert runs[:3] == [("supervised", 0.25, "none", 3), ("supervised", 0.25, "none", 1),
                        ("supervised", 0.5, "none", 3)]
    assert len(runs) == 2 * (2 + 4 * 2 * 2)
    assert stage_keys(config, "train_sleep", variant="sc", pool="in", seed="3") == stage_keys(
        config, "train_sleep", variant="sc", pool="in")                    # adding seeds leaves runs unchanged
    keys = stage_keys(config, "train_sleep", variant="both", pool="ood")
    assert {"sleep.unlabeled", "sleep.losses.sequential_consistency",
            "sleep.losses.semi_supervised_contrastive"} <= set(keys)
    assert "sleep.losses.ccssl" not in keys
    keys = stage_keys(config, "train_sleep", variant="supervised", pool="none")
    assert not any(k.startswith("sleep.losses") for k in keys) and "sleep.unlabeled" not in keys
    assert "sleep.features" in stage_keys(config, "convert_sleep", dataset="home")


def test_night_splits_are_disjoint_seeded_and_nested():
    ids = [f"n{i:02d}" for i in range(20)]
    labeled = np.ones(20, bool)
    labeled[[3, 7]] = False
    split = split_nights(ids, labeled, {"val": 0.15, "test": 0.2, "unlabeled": 0.25}, seed=0)
    parts = [set(split[k]) for k in ("train", "val", "test", "unlabeled")]
    assert sum(len(p) for p in parts) == 20 and set().union(*parts) == set(ids)
    assert {"n03", "n07"} <= set(split["unlabeled"])
    assert len(split["test"]) == 4 and len(split["val"]) == 3  # of the 18 scored nights
    assert split == split_nights(list(reversed(ids)), labeled[::-1], {"val": 0.15, "test": 0.2, "unlabeled": 0.25}, 0)
    assert split != split_nights(ids, labeled, {"val": 0.15, "test": 0.2, "unlabeled": 0.25}, seed=1)
    quarter, half = labeled_nights(split["train"], 0.25, 0), labeled_nights(split["train"], 0.5, 0)
    assert set(quarter) < set(half) <= set(split["train"])
    assert labeled_nights(split["train"], 1.0, 0) == sorted(split["train"])
    with pytest.raises(ValueError, match="at least one training night"):
        split_nights(ids[:3], np.ones(3, bool), {"val": 0.3, "test": 0.3, "unlabeled": 0.3}, 0)


# --- one run per variant on a tiny demo --------------------------------------------------------------------------

TINY_FEATURES = {"audio_fs": 1000, "n_mels": 16, "n_fft": 128, "win": 100, "hop": 200, "fmin": 30, "fmax": 490}


def tiny_sleep_config() -> dict:
    config = demo_sleep_config()
    config["name"] = "tiny_sleep"
    config["paths"] = {"data": "data/tiny", "results": "results/tiny"}
    config["datasets"]["psg_audio"]["demo"]["n_records"] = 8
    config["datasets"]["home"]["demo"]["n_records"] = 2
    sl = config["sleep"]
    sl["features"] = dict(TINY_FEATURES)
    sl["normalize"] = "night"
    sl["splits"] = {"val": 0.15, "test": 0.15, "unlabeled": 0.15}
    sl["model"] = {"name": "soundsleepnet", "args": {"width": 8, "embed_dim": 32}}
    sl["seq_len"] = 3
    sl["train"].update(max_epochs=2, batch_size=8, unlabeled_batch_size=4, rampup_epochs=1)
    sl["bootstrap"]["n"] = 20
    sl["grid"] = {"variants": ["supervised", "both"], "fractions": [0.5], "pools": ["in", "ood"]}
    config["resources"] = {"sleep": {"threads": 1, "gpu": 0, "mem_mb": 2000, "runtime": 10}}
    return config


@pytest.fixture(scope="module")
def tiny_stores(tmp_path_factory):
    from physiossl.data.sleep.sources import home_audio, psg_audio

    root = tmp_path_factory.mktemp("sleep_stores")
    psg = psg_audio.demo(root / "raw_psg", n_records=6, seed=4, minutes=(5, 6), part_minutes=2)
    home = home_audio.demo(root / "raw_home", n_records=2, seed=4, minutes=4)
    stores = {"psg": root / "psg_sleep.zarr", "home": root / "home_sleep.zarr"}
    psg_audio.convert(psg, stores["psg"], features=TINY_FEATURES, progress=False)
    home_audio.convert(home, stores["home"], features=TINY_FEATURES, progress=False)
    return stores


def _train(config: dict, variant: str, pool: str, stores: dict, out: Path, seed: int | None = None) -> dict:
    from physiossl.stages import sleep

    view = {"seed": config["seed"], "sleep": config["sleep"]}
    return sleep.run(view, variant, 0.5, pool, stores["psg"], [stores["home"]] if pool == "ood" else [], out, seed)


@pytest.mark.slow
@pytest.mark.parametrize("variant,pool", [("supervised", "none"), ("sc", "in"), ("ssc", "in"), ("both", "ood"),
                                          ("ccssl", "in")])
def test_each_variant_trains_and_writes_its_results(tiny_stores, tmp_path, variant, pool):
    config = tiny_sleep_config()
    out = tmp_path / variant / "frac0.5" / f"{pool}.json"
    result = _train(config, variant, pool, tiny_stores, out)
    saved = json.loads(out.read_text())
    assert saved["variant"] == variant and saved["pool"] == pool and saved["n_classes"] == 4
    for view in ("4", "3"):
        metrics = saved["test"][view]
        assert 0 <= metrics["accuracy"] <= 1 and -1 <= metrics["kappa"] <= 1
        ci = metrics["ci"]["accuracy"]   # torchmetrics computes in float32, the bootstrap in float64
        assert ci["low"] - 1e-6 <= metrics["accuracy"] <= ci["high"] + 1e-6
    assert saved["nights"]["test"] == 1 and saved["nights"]["val"] == 1
    assert (saved["nights"]["unlabeled"] > 0) == (variant != "supervised")
    if pool == "ood":
        assert saved["nights"]["unlabeled"] == saved["nights"]["hidden_labels"] + 1 + 2  # + the 2 home recordings
    predictions = np.load(out.with_suffix(".npz"))
    assert predictions["probs"].shape == (len(predictions["true"]), 4)
    assert np.allclose(predictions["probs"].sum(1), 1, atol=1e-5)
    assert set(np.unique(predictions["night"])) == set(saved["split"]["test"])
    model = __import__("torch").load(out.with_suffix(".pt"), weights_only=True)
    assert model["model"] == "soundsleepnet" and model["feature"]["n_mels"] == 16
    assert result["test"]["4"]["accuracy"] == saved["test"]["4"]["accuracy"]


@pytest.mark.slow
def test_hidden_labels_never_reach_training(tiny_stores, tmp_path):
    """Scrambling the stored stages of the unlabeled-pool nights changes nothing in a semi-supervised run."""
    import shutil

    import zarr

    from physiossl.data.sleep.store import open_sleep_store

    config = tiny_sleep_config()
    reference = _train(config, "both", "in", tiny_stores, tmp_path / "a" / "both.json")
    scrambled = dict(tiny_stores, psg=tmp_path / "scrambled_sleep.zarr")
    shutil.copytree(tiny_stores["psg"], scrambled["psg"])
    root = open_sleep_store(scrambled["psg"])
    ids, offsets = [str(i) for i in root["nights/id"][:]], root["nights/offsets"][:]
    stages = root["labels/stage"][:]
    for night in (reference["split"]["unlabeled"]
                  + sorted(set(reference["split"]["train"]) - set(reference["labeled_nights"]))):
        k = ids.index(night)
        stages[offsets[k]:offsets[k + 1]] = (stages[offsets[k]:offsets[k + 1]] + 2) % 5
    assert (stages != root["labels/stage"][:]).any()
    zarr.open_group(scrambled["psg"], mode="r+")["labels/stage"][:] = stages
    write_manifest(scrambled["psg"])
    other = _train(config, "both", "in", scrambled, tmp_path / "b" / "both.json")
    for key in ("test", "val", "best_epoch", "epochs"):
        assert other[key] == reference[key], key


@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint(tiny_stores, tmp_path, monkeypatch):
    from physiossl.stages import common

    config = tiny_sleep_config()
    out = tmp_path / "supervised.json"
    first = _train(config, "supervised", "none", tiny_stores, out)
    config["sleep"]["train"]["max_epochs"] = 3   # a changed config starts afresh ...
    second = _train(config, "supervised", "none", tiny_stores, out)
    assert not first["resumed"] and not second["resumed"] and second["epochs_trained"] == 3
    again = _train(config, "supervised", "none", tiny_stores, out)   # ... the same one resumes after the last epoch
    assert again["resumed"] and again["test"] == second["test"]
    monkeypatch.setattr(common, "package_digest", lambda: "other code")   # changed package code starts afresh
    assert not _train(config, "supervised", "none", tiny_stores, out)["resumed"]
    monkeypatch.undo()
    other = _train(config, "supervised", "none", tiny_stores, out, seed=1)   # another seed: a new run, same split
    assert not other["resumed"] and other["seed"] == 1 and other["split_seed"] == second["split_seed"] == 0
    assert other["split"] == second["split"] and other["run_id"] != second["run_id"]


def test_unknown_variant_and_mismatched_pool_are_refused(tmp_path):
    from physiossl.stages import sleep

    view = {"seed": 0, "sleep": tiny_sleep_config()["sleep"]}
    with pytest.raises(ValueError, match="unknown sleep-staging variant 'fixmatch'"):
        sleep.run(view, "fixmatch", 0.5, "in", tmp_path / "s.zarr", [], tmp_path / "r.json")
    with pytest.raises(ValueError, match="pool .in. does not go with variant .supervised."):
        sleep.run(view, "supervised", 0.5, "in", tmp_path / "s.zarr", [], tmp_path / "r.json")
    with pytest.raises(ValueError, match="pool 'ood' needs the stores of sleep.unlabeled"):
        sleep.run(view, "both", 0.5, "ood", tmp_path / "s.zarr", [], tmp_path / "r.json")


# --- the Snakemake grid --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sleep_demo_grid_runs_through_snakemake_and_dvc_export(tmp_path):
    from physiossl.dvc_export import export_document, resolve
    from test_workflow import (
        assert_jobs_imported_only_declared_code,
        make_project,
        planned_jobs,
        snakemake,
        snakemake_traced,
    )

    project = make_project(tmp_path, "sleep", tiny_sleep_config())
    assert planned_jobs(project) == {"demo_data": 2, "convert_sleep": 2, "train_sleep": 3, "sleep_report": 1, "all": 1}
    snakemake_traced(project, tmp_path / "trace")
    assert_jobs_imported_only_declared_code(project, tmp_path / "trace")
    report = project / "results/tiny/report"
    table = (report / "sleep.md").read_text()
    assert "supervised only" in table and "+ both" in table
    assert (report / "hypnogram.png").stat().st_size > 5000
    metrics = json.loads((report / "sleep_metrics.json").read_text())
    assert set(metrics) == {"supervised/0.5/none", "both/0.5/in", "both/0.5/ood"}
    assert planned_jobs(project) == {}
    # a change to the report code reruns the report, not the training runs
    report_code = project / "src/physiossl/report/sleep.py"
    report_code.write_text(report_code.read_text() + "\n# changed\n")
    assert planned_jobs(project) == {"sleep_report": 1, "all": 1}
    snakemake(project)
    # a second seed: only its runs and the report are planned
    config = yaml.safe_load((project / "config" / "tiny.yaml").read_text())
    config["sleep"]["grid"]["seeds"] = [0, 1]
    (project / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(project) == {"train_sleep": 3, "sleep_report": 1, "all": 1}
    config["sleep"]["grid"].pop("seeds")
    (project / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    document, names = export_document(project / "config" / "tiny.yaml", project / "Snakefile")
    stages = resolve(document)
    stage = stages[names["train_sleep-0.5-ood-0-both"]]
    assert "--unlabeled data/tiny/stores/home_sleep.zarr" in stage["cmd"] and "--seed 0" in stage["cmd"]
    params = stage["params"][0]["config/tiny.yaml"]
    assert {"sleep.unlabeled", "sleep.losses.sequential_consistency",
            "sleep.losses.semi_supervised_contrastive"} <= set(params)
    assert "sleep.losses.ccssl" not in params and "sleep.features" not in params
    assert "sleep.features" in stages[names["convert_sleep-home"]]["params"][0]["config/tiny.yaml"]
    assert stages["sleep_report"]["metrics"] == ["results/tiny/report/sleep_metrics.json"]
    assert "results/tiny/report/hypnogram.png" in stages["sleep_report"]["plots"]
    # no ECG code among the sleep stages' dependencies and no sleep code among the ECG ones
    assert not any("xresnet1d" in d for d in stage["deps"])
    assert "src/physiossl/report/sleep.py" not in stage["deps"]
    assert "src/physiossl/report/sleep.py" in stages["sleep_report"]["deps"]


@pytest.mark.slow
def test_paper_sleep_grid_plans_every_run(tmp_path):
    from test_workflow import run

    config = yaml.safe_load((REPO / "config" / "paper_sleep.yaml").read_text())
    home = tmp_path / "home_recordings"
    home.mkdir()
    config["datasets"]["home"]["local"] = str(home)
    configfile = tmp_path / "paper_sleep.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--configfile", str(configfile)], REPO)
    table = proc.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    grid = config["sleep"]["grid"]
    n_runs = len(grid["fractions"]) * (1 + (len(grid["variants"]) - 1) * len(grid["pools"])) * len(grid["seeds"])
    assert jobs == {"download_data": 1, "convert_sleep": 2, "train_sleep": n_runs, "sleep_report": 1, "all": 1}
    assert n_runs == 108  # the count stated in config/paper_sleep.yaml and docs/experiments.md


@pytest.mark.slow
def test_train_stride_workers_and_strong_augment_settings(tiny_stores, tmp_path):
    from physiossl.data.sleep.loading import load_sleep_arrays, sequence_starts

    config = tiny_sleep_config()
    t = config["sleep"]["train"]
    default = _train(config, "supervised", "none", tiny_stores, tmp_path / "default.json")
    train = load_sleep_arrays(tiny_stores["psg"], default["labeled_nights"])
    steps = {}
    for stride in (1, 3):   # steps per epoch follow the labeled sequences at sleep.train_stride
        config["sleep"]["train_stride"] = stride
        steps[stride] = _train(config, "supervised", "none", tiny_stores, tmp_path / f"stride{stride}.json")["steps"]
        per_epoch = len(sequence_starts(train, None, config["sleep"]["seq_len"], stride)) // t["batch_size"]
        assert steps[stride] == t["max_epochs"] * per_epoch > 0
    assert steps[3] < steps[1] == default["steps"]   # the default stride is seq_len // 2 = 1
    config["sleep"].pop("train_stride")

    # worker processes only fetch sequences: the batches, and so the run, are those of num_workers 0
    t["num_workers"] = 1
    workers = _train(config, "both", "in", tiny_stores, tmp_path / "workers.json")
    t["num_workers"] = 0
    inline = _train(config, "both", "in", tiny_stores, tmp_path / "inline.json")
    for key in ("test", "val", "best_epoch", "steps"):
        assert workers[key] == inline[key], key

    # CCSSL's strong view comes from sleep.strong_augment, validated under that name
    config["sleep"]["strong_augment"] = [{"time_mask": {"n": 3, "max_frac": 0.3}}]
    assert _train(config, "ccssl", "in", tiny_stores, tmp_path / "strong.json")["steps"] > 0
    config["sleep"]["strong_augment"] = [{"time_mask": {"n": 3, "max_fraction": 0.3}}]
    with pytest.raises(ValueError, match="sleep.strong_augment"):
        _train(config, "ccssl", "in", tiny_stores, tmp_path / "bad.json")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["sc", "ssc", "both", "ccssl"])
def test_unlabeled_side_leaves_the_labeled_training_untouched(tiny_stores, tmp_path, monkeypatch, variant):
    """Paired runs: with the unlabeled losses switched off, a semi-supervised run (its unlabeled loader still
    iterated every epoch) is exactly supervised-only training of the same seed."""
    import torch

    from physiossl.variants import VARIANTS

    config = tiny_sleep_config()
    reference = _train(config, "supervised", "none", tiny_stores, tmp_path / "supervised.json")
    calls = []
    monkeypatch.setattr(VARIANTS.load(variant), "unlabeled_losses",
                        lambda self, training, xu, z_l, y: calls.append(xu.shape) or {})
    paired = _train(config, variant, "in", tiny_stores, tmp_path / f"{variant}.json")
    assert len(calls) == paired["steps"] > 0
    for key in ("test", "val", "best_epoch", "steps"):
        assert paired[key] == reference[key], key
    weights = [torch.load(tmp_path / f"{name}.pt", weights_only=True)["state_dict"] for name in ("supervised", variant)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
