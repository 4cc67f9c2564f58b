"""Result tables from result files only: the main table, label efficiency, robustness and DVC metrics."""

from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path

import pandas as pd

from ..config import RANDOM_INIT, is_random_init

PRETTY = {"simclr": "SimCLR", "byol": "BYOL", "cpc": "CPC", "moco_v2": "MoCo v2", "moco_v3": "MoCo v3",
          "simsiam": "SimSiam", "swav": "SwAV", "barlow_twins": "Barlow Twins", "apc": "APC", "mpc": "MPC",
          "simper": "SimPer"}
SUBSET_KINDS = ("all", "fraction", "folds")
PROTOCOL_ORDER = ("linear", "finetune")

RESULT_COLUMNS = ["method", "display", "protocol", "subset", "kind", "value", "n_train_records", "test_macro_auc",
                  "ci_low", "ci_high", "ci_level", "n_bootstrap", "val_macro_auc", "best_epoch", "n_classes_scored",
                  "n_classes_excluded", "n_test_records", "n_train_folds", "label_set", "aggregate", "encoder",
                  "robustness", "source"]
TABLE_COLUMNS = ["method", "display", "protocol", "test_macro_auc", "ci_low", "ci_high", "val_macro_auc",
                 "best_epoch", "n_classes_scored", "n_classes_excluded", "n_test_records", "ci_level", "n_bootstrap",
                 "label_set", "aggregate"]
EFFICIENCY_COLUMNS = ["method", "display", "protocol", "kind", "value", "n_train_records", "train_fraction",
                      "test_macro_auc", "ci_low", "ci_high"]
ROBUSTNESS_COLUMNS = ["method", "display", "protocol", "level", "macro_auc"]
NAN = float("nan")


RANDOM_INIT_NAMES = {"linear": "random init, linear probe", "fft": "random init, FFT readout",
                     "zero_shot": "random init, zero-shot linear probe"}


def display_name(method: str, protocol: str, encoder: str | None = None) -> str:
    """Name shown in tables and figures: a random-init encoder under the linear protocol is the random-init linear
    probe (likewise under the periodic protocols ``fft`` and ``zero_shot``); fine-tuned, it is supervised training
    from scratch of that encoder."""
    if is_random_init(method):
        if protocol in RANDOM_INIT_NAMES:
            return RANDOM_INIT_NAMES[protocol]
        return f"supervised {method[len(RANDOM_INIT) + 1:] or encoder or 'encoder'}"
    return PRETTY.get(method, method)


def parse_number(value, what: str, integer: bool = False, optional: bool = False):
    if value is None and optional:
        return NAN
    if isinstance(value, bool) or not isinstance(value, Real) or (integer and float(value) != int(value)):
        raise ValueError(f"{what} must be a{'n integer' if integer else ' number'}, got {value!r}")
    return int(value) if integer else float(value)


def parse_string(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def parse_subset(subset: dict) -> dict:
    """The ``subset`` entry of a result file as the columns subset, kind, value and n_train_records."""
    kind = subset["kind"]
    if kind not in SUBSET_KINDS:
        raise ValueError(f"subset.kind must be one of {SUBSET_KINDS}, got {kind!r}")
    if (subset["name"] == "all") != (kind == "all"):
        raise ValueError(f"subset {subset['name']!r} of kind {kind!r}: only the subset 'all' has kind 'all'")
    return {"subset": parse_string(subset["name"], "subset.name"), "kind": kind,
            "value": parse_number(subset["value"], "subset.value", optional=kind == "all"),
            "n_train_records": parse_number(subset["n_train_records"], "subset.n_train_records", integer=True)}


def _parse(r: dict) -> dict:
    if not isinstance(r, dict):
        raise ValueError("the top level is not an object")
    method, protocol = parse_string(r["method"], "method"), parse_string(r["protocol"], "protocol")
    n_train = parse_number(r["n_records"]["train"], "n_records.train", integer=True)
    subset = r.get("subset", {"name": "all", "kind": "all", "value": None, "n_train_records": n_train})
    ci = r.get("test_ci") or {}
    robustness = [(parse_number(e["level"], "robustness level", integer=True),
                   parse_number(e["macro_auc"], "robustness AUC")) for e in r.get("robustness") or []]
    train_folds = r.get("folds", {}).get("train") if isinstance(r.get("folds"), dict) else None
    encoder = r.get("encoder")
    return {
        "method": method, "display": display_name(method, protocol, encoder), "protocol": protocol,
        **parse_subset(subset),
        "test_macro_auc": parse_number(r["test_macro_auc"], "test_macro_auc"),
        "ci_low": parse_number(ci["low"], "test_ci.low", optional=True) if ci else NAN,
        "ci_high": parse_number(ci["high"], "test_ci.high", optional=True) if ci else NAN,
        "ci_level": parse_number(ci["level"], "test_ci.level") if ci else NAN,
        "n_bootstrap": parse_number(ci["n_bootstrap"], "test_ci.n_bootstrap", integer=True) if ci else NAN,
        "val_macro_auc": parse_number(r["val_macro_auc"], "val_macro_auc"),
        "best_epoch": parse_number(r["best_epoch"], "best_epoch", integer=True),
        "n_classes_scored": parse_number(r["test"]["n_scored"], "test.n_scored", integer=True),
        "n_classes_excluded": len(r["test"]["excluded"]),
        "n_test_records": parse_number(r["n_records"]["test"], "n_records.test", integer=True),
        "n_train_folds": len(train_folds) if isinstance(train_folds, list) else NAN,
        "label_set": r["label_set"], "aggregate": r["aggregate"], "encoder": encoder, "robustness": robustness,
    }


def ordered(df: pd.DataFrame, by: list[str], protocols: tuple[str, ...] = PROTOCOL_ORDER) -> pd.DataFrame:
    """Rows by protocol (in the order of ``protocols``, then the others by name), pretrained methods before
    random-init ones, then ``by``."""
    rank = df.protocol.map(lambda p: protocols.index(p) if p in protocols else len(protocols))
    keys = df.assign(_protocol=rank, _random=df.method.map(is_random_init))
    return keys.sort_values(["_protocol", "protocol", "_random", "method", *by]).drop(columns=["_protocol", "_random"])


def parse_results(paths: list[Path], parse, kind: str) -> list[tuple[Path, dict]]:
    r"""(path, ``parse``\ d row) of every result file; ValueError naming the file for a malformed one and naming
    both files for two results of the same method, protocol and subset (``kind`` names the sort of file)."""
    out, seen = [], {}
    for path in paths:
        try:
            row = parse(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"{path}: not a physiossl {kind} file ({type(exc).__name__}: {exc})") from exc
        key = (row["method"], row["protocol"], row["subset"])
        if key in seen:
            raise ValueError(f"{seen[key]} and {path}: two {kind}s for method {key[0]!r}, protocol {key[1]!r}, "
                             f"subset {key[2]!r}")
        seen[key] = path
        out.append((path, row))
    return out


def load_results(paths: list[Path]) -> pd.DataFrame:
    """One row per result file (columns ``RESULT_COLUMNS``); ValueError naming the file for a malformed one and
    naming both files for two results of the same method, protocol and subset."""
    rows = [{**row, "source": str(path)} for path, row in parse_results(paths, _parse, "result")]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return ordered(df, ["kind", "value"]).reset_index(drop=True)


def main_table(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of the full training set (subset ``all``)."""
    return results.loc[results.subset == "all", TABLE_COLUMNS].reset_index(drop=True)


def label_efficiency_table(results: pd.DataFrame, columns: list[str] = EFFICIENCY_COLUMNS,
                           protocols: tuple[str, ...] = PROTOCOL_ORDER) -> pd.DataFrame:
    """Rows of the fraction and folds subsets plus, for each kind a protocol has, its ``all`` rows as fraction 1.0
    or as all training folds; ``train_fraction`` is n_train_records over that of the full training set.
    ``columns``: those kept (the score columns differ between experiments); rows ordered as :func:`ordered`."""
    subsets = results[results.kind.isin(["fraction", "folds"])]
    parts = [subsets]
    for (protocol, kind), _ in subsets.groupby(["protocol", "kind"]):
        full = results[(results.subset == "all") & (results.protocol == protocol)].copy()
        full["kind"], full["value"] = kind, 1.0 if kind == "fraction" else full.n_train_folds
        parts.append(full)
    df = pd.concat(parts, ignore_index=True) if len(subsets) else subsets.copy()
    full_train = results.loc[results.subset == "all", "n_train_records"]
    reference = full_train.max() if len(full_train) else df.n_train_records.max()
    df["train_fraction"] = df.n_train_records / reference if len(df) else pd.Series(dtype=float)
    return ordered(df, ["kind", "n_train_records"], protocols)[columns].reset_index(drop=True)


def robustness_table(results: pd.DataFrame) -> pd.DataFrame:
    """Macro AUC per noise level (0 = clean) of the ``all`` rows."""
    rows = [{"method": r.method, "display": r.display, "protocol": r.protocol, "level": level, "macro_auc": auc}
            for r in results[results.subset == "all"].itertuples() for level, auc in sorted(r.robustness)]
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


def metrics(table: pd.DataFrame) -> dict:
    """DVC metrics of the main table: ``{"<method>/<protocol>": {test_macro_auc, ci_low, ci_high}}``."""
    def clean(value) -> float | None:
        return None if value is None or math.isnan(value) else round(float(value), 6)

    return {f"{r.method}/{r.protocol}": {k: clean(getattr(r, k)) for k in ("test_macro_auc", "ci_low", "ci_high")}
            for r in table.itertuples()}


def format_value(value, digits: int = 4) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def interval_cell(value: float, low: float, high: float, digits: int = 4) -> str:
    """``0.8895 [0.8712, 0.9050]`` (``digits`` decimals), or the value alone without an interval."""
    if math.isnan(low) or math.isnan(high):
        return format_value(value, digits)
    return f"{format_value(value, digits)} [{format_value(low, digits)}, {format_value(high, digits)}]"


def auc_cell(auc: float, low: float, high: float) -> str:
    """``0.8895 [0.8712, 0.9050]``, or the AUC alone without an interval."""
    return interval_cell(auc, low, high)


def _legend(table: pd.DataFrame) -> str:
    with_ci = table.dropna(subset=["ci_level", "n_bootstrap"])
    if not len(with_ci):
        return "Test macro AUC over the test records; no bootstrap intervals in these results."
    specs = sorted({(float(r.ci_level), int(r.n_bootstrap)) for r in with_ci.itertuples()})
    text = "; ".join(f"{100 * level:g}% percentile bootstrap interval over {n} resamples of the test records"
                     for level, n in specs)
    missing = "" if len(with_ci) == len(table) else " (rows without one show the AUC alone)"
    return f"Test macro AUC [{text}]{missing}; resamples are shared by all methods (paired)."


def to_markdown(table: pd.DataFrame, title: str) -> str:
    """The main table as Markdown; the first columns are method, protocol and test macro AUC [interval]."""
    header = ["method", "protocol", "test macro AUC [CI]", "name", "val macro AUC", "best epoch", "classes scored",
              "classes excluded", "test records"]
    lines = [f"# {title}", "", _legend(table), "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for r in table.itertuples():
        cells = [r.method, r.protocol, auc_cell(r.test_macro_auc, r.ci_low, r.ci_high), r.display,
                 format_value(r.val_macro_auc), r.best_epoch, r.n_classes_scored, r.n_classes_excluded,
                 r.n_test_records]
        lines.append("| " + " | ".join(format_value(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
