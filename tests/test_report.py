"""Report stage: tables, figures and metrics from fake result files; empty sections; malformed and duplicate files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from physiossl.report.tables import auc_cell, display_name
from physiossl.stages import report

VIEW = {"name": "fake", "experiment": {"methods": ["simclr", "byol", "random"], "protocols": ["linear", "finetune"]}}
OUTPUTS = ["table.csv", "table.md", "figure.png", "label_efficiency.csv", "label_efficiency.png", "robustness.csv",
           "robustness.png", "metrics.json"]
FULL_TRAIN = 1600
BASE = {("simclr", "linear"): 0.85, ("simclr", "finetune"): 0.9, ("byol", "linear"): 0.8, ("byol", "finetune"): 0.88,
        ("random", "linear"): 0.7, ("random", "finetune"): 0.86}
FRACTIONS = (0.05, 0.25)
FOLDS = (2, 4)


def result(method: str, protocol: str, auc: float, name: str = "all", kind: str = "all", value=None,
           n_train: int = FULL_TRAIN, ci: bool = True, robustness: bool = True) -> dict:
    r = {
        "method": method, "protocol": protocol, "test_macro_auc": auc, "val_macro_auc": auc + 0.01, "best_epoch": 7,
        "subset": {"name": name, "kind": kind, "value": value, "n_train_records": n_train},
        "test": {"n_scored": 21, "excluded": {"STEMI": "no positives", "LPR": "no positives"}},
        "n_records": {"train": n_train, "val": 210, "test": 220}, "label_set": "all", "aggregate": "mean",
        "encoder": "xresnet1d50", "folds": {"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": 9, "test": 10},
    }
    if ci:
        r["test_ci"] = {"low": auc - 0.02, "high": auc + 0.01, "level": 0.95, "n_bootstrap": 1000, "n_valid": 1000,
                        "std": 0.008}
    if robustness and name == "all":
        r["robustness"] = [{"level": level, "macro_auc": auc - 0.025 * level} for level in range(7)]
    return r


def write(directory: Path, name: str, data: dict) -> Path:
    path = directory / name
    path.write_text(json.dumps(data))
    return path


def full_grid(directory: Path) -> list[Path]:
    """Every method and protocol on the full set, two label fractions and two fold counts."""
    directory.mkdir(exist_ok=True)
    paths = []
    for (method, protocol), auc in BASE.items():
        paths.append(write(directory, f"{method}-{protocol}.json", result(method, protocol, auc)))
        for f in FRACTIONS:
            paths.append(write(directory, f"{method}-{protocol}-frac{f}.json",
                               result(method, protocol, auc - 0.1 + f / 10, f"frac{f}", "fraction", f,
                                      int(FULL_TRAIN * f))))
        for k in FOLDS:
            paths.append(write(directory, f"{method}-{protocol}-folds{k}.json",
                               result(method, protocol, auc - 0.05 + k / 100, f"folds{k}", "folds", k, 200 * k)))
    return paths


def assert_png(path: Path, min_bytes: int = 5000) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # not blank


def test_display_names():
    assert display_name("simclr", "linear") == "SimCLR"
    assert display_name("moco_v3", "finetune") == "MoCo v3"
    assert display_name("newmethod", "finetune") == "newmethod"
    assert display_name("random", "linear", "xresnet1d50") == "random init, linear probe"
    assert display_name("random", "finetune", "xresnet1d50") == "supervised xresnet1d50"
    assert display_name("random_xresnet1d101", "linear") == "random init, linear probe"
    assert display_name("random_xresnet1d101", "finetune", "xresnet1d50") == "supervised xresnet1d101"
    assert auc_cell(0.88954, 0.87118, 0.905) == "0.8895 [0.8712, 0.9050]"
    assert auc_cell(0.88954, float("nan"), float("nan")) == "0.8895"


def test_report_of_a_full_grid(tmp_path):
    out = tmp_path / "report"
    counts = report.run(VIEW, full_grid(tmp_path / "eval"), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # no staging leftovers
    # 6 full-set rows; label efficiency: 6 × (2 fractions + 2 fold counts) + the full-set row once per kind
    assert counts == {"results": 30, "table": 6, "label_efficiency": 36, "robustness": 42, "out_dir": str(out)}

    table = pd.read_csv(out / "table.csv")
    assert list(table[["method", "protocol"]].itertuples(index=False, name=None)) == [
        ("byol", "linear"), ("simclr", "linear"), ("random", "linear"),
        ("byol", "finetune"), ("simclr", "finetune"), ("random", "finetune")]
    row = table.set_index(["method", "protocol"]).loc[("simclr", "linear")]
    assert row.display == "SimCLR" and row.test_macro_auc == pytest.approx(0.85)
    assert row.ci_low == pytest.approx(0.83) and row.ci_high == pytest.approx(0.86)
    assert row.val_macro_auc == pytest.approx(0.86) and row.best_epoch == 7
    assert row.n_classes_scored == 21 and row.n_classes_excluded == 2 and row.n_test_records == 220
    assert row.ci_level == 0.95 and row.n_bootstrap == 1000
    displays = dict(zip(zip(table.method, table.protocol), table.display))
    assert displays[("random", "linear")] == "random init, linear probe"
    assert displays[("random", "finetune")] == "supervised xresnet1d50"

    md = (out / "table.md").read_text()
    assert md.startswith("# fake: ")
    assert "95% percentile bootstrap interval over 1000 resamples" in md
    assert "| simclr | linear | 0.8500 [0.8300, 0.8600] | SimCLR | 0.8600 | 7 | 21 | 2 | 220 |" in md
    assert "| random | linear | 0.7000 [0.6800, 0.7100] | random init, linear probe |" in md
    assert "| random | finetune | 0.8600 [0.8400, 0.8700] | supervised xresnet1d50 |" in md
    for method, protocol in BASE:
        assert re.search(rf"\| {method} \| {protocol} \| 0\.\d+", md)
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + 6

    eff = pd.read_csv(out / "label_efficiency.csv")
    assert list(eff.columns) == ["method", "display", "protocol", "kind", "value", "n_train_records",
                                 "train_fraction", "test_macro_auc", "ci_low", "ci_high"]
    simclr = eff[(eff.method == "simclr") & (eff.protocol == "linear")]
    fractions = simclr[simclr.kind == "fraction"]
    assert list(fractions.value) == [0.05, 0.25, 1.0]
    assert list(fractions.n_train_records) == [80, 400, FULL_TRAIN]
    assert list(fractions.train_fraction) == pytest.approx([0.05, 0.25, 1.0])
    assert list(fractions.test_macro_auc) == pytest.approx([0.755, 0.775, 0.85])
    folds = simclr[simclr.kind == "folds"]
    assert list(folds.value) == [2, 4, 8] and list(folds.n_train_records) == [400, 800, FULL_TRAIN]
    assert list(folds.train_fraction) == pytest.approx([0.25, 0.5, 1.0])
    assert list(folds.ci_low) == pytest.approx([0.80, 0.82, 0.83])
    assert set(eff[eff.method == "random"].display) == {"random init, linear probe", "supervised xresnet1d50"}

    rob = pd.read_csv(out / "robustness.csv")
    assert list(rob.columns) == ["method", "display", "protocol", "level", "macro_auc"]
    byol = rob[(rob.method == "byol") & (rob.protocol == "finetune")]
    assert list(byol.level) == list(range(7)) and list(byol.macro_auc) == pytest.approx([0.88 - 0.025 * i
                                                                                         for i in range(7)])

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {f"{m}/{p}" for m, p in BASE}
    assert metrics["simclr/linear"] == {"test_macro_auc": 0.85, "ci_low": 0.83, "ci_high": 0.86}
    assert metrics["random/finetune"] == {"test_macro_auc": 0.86, "ci_low": 0.84, "ci_high": 0.87}

    for name in ("figure.png", "label_efficiency.png", "robustness.png"):
        assert_png(out / name, min_bytes=20000)

    report.run(VIEW, full_grid(tmp_path / "eval"), out)  # a rerun replaces every output in place
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)


def test_empty_sections_and_missing_optional_fields(tmp_path):
    """Results of the full set only, without intervals or robustness (and one without a subset at all)."""
    paths = [write(tmp_path, "simclr.json", result("simclr", "linear", 0.8123456789, ci=False, robustness=False))]
    old = result("random", "linear", 0.7, ci=False)
    del old["subset"], old["robustness"]
    paths.append(write(tmp_path, "random.json", old))
    out = tmp_path / "report"
    counts = report.run(VIEW, paths, out)
    assert counts["table"] == 2 and counts["label_efficiency"] == 0 and counts["robustness"] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert (out / "label_efficiency.csv").read_text().strip() == (
        "method,display,protocol,kind,value,n_train_records,train_fraction,test_macro_auc,ci_low,ci_high")
    assert (out / "robustness.csv").read_text().strip() == "method,display,protocol,level,macro_auc"
    table = pd.read_csv(out / "table.csv")
    assert table.ci_low.isna().all() and table.ci_high.isna().all()
    md = (out / "table.md").read_text()
    assert "| simclr | linear | 0.8123 | SimCLR |" in md and "no bootstrap intervals" in md
    assert json.loads((out / "metrics.json").read_text()) == {
        "simclr/linear": {"test_macro_auc": 0.812346, "ci_low": None, "ci_high": None},
        "random/linear": {"test_macro_auc": 0.7, "ci_low": None, "ci_high": None}}
    for name in ("figure.png", "label_efficiency.png", "robustness.png"):
        assert_png(out / name, min_bytes=2000)


def test_no_full_set_rows_gives_an_empty_main_table(tmp_path):
    paths = [write(tmp_path, "frac.json", result("simclr", "linear", 0.7, "frac0.1", "fraction", 0.1, 160))]
    out = tmp_path / "report"
    counts = report.run(VIEW, paths, out)
    assert counts["table"] == 0 and counts["label_efficiency"] == 1 and counts["robustness"] == 0
    assert len(pd.read_csv(out / "table.csv")) == 0
    assert json.loads((out / "metrics.json").read_text()) == {}
    assert not re.search(r"\| simclr \|", (out / "table.md").read_text())
    assert pd.read_csv(out / "label_efficiency.csv").train_fraction.tolist() == [1.0]  # no full-set reference
    assert_png(out / "figure.png", min_bytes=2000)


@pytest.mark.parametrize("breakage", [
    lambda r: r.pop("test_macro_auc"),
    lambda r: r["test"].pop("n_scored"),
    lambda r: r["n_records"].pop("test"),
    lambda r: r.update(test_macro_auc="high"),
    lambda r: r.update(best_epoch=2.5),
    lambda r: r["subset"].update(kind="bogus"),
    lambda r: r["subset"].update(kind="fraction", value=0.1),
    lambda r: r["test_ci"].pop("high"),
    lambda r: r.update(robustness=[{"level": 0}]),
    lambda r: r.update(subset="all"),
])
def test_malformed_result_names_the_file(tmp_path, breakage):
    good = write(tmp_path, "good.json", result("simclr", "linear", 0.8))
    data = result("byol", "linear", 0.8)
    breakage(data)
    bad = write(tmp_path, "bad.json", data)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        report.run(VIEW, [good, bad], tmp_path / "report")


def test_unreadable_result_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        report.run(VIEW, [bad], tmp_path / "report")
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        report.run(VIEW, [missing], tmp_path / "report")


def test_duplicate_results_name_both_files(tmp_path):
    first = write(tmp_path, "a.json", result("simclr", "linear", 0.8))
    other_subset = write(tmp_path, "b.json", result("simclr", "linear", 0.7, "frac0.1", "fraction", 0.1, 160))
    second = write(tmp_path, "c.json", result("simclr", "linear", 0.81))
    with pytest.raises(ValueError, match=rf"{re.escape(str(first))} and {re.escape(str(second))}"):
        report.run(VIEW, [first, other_subset, second], tmp_path / "report")
