"""Result tables from result files only: one row per method × protocol, one column per metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

COLUMNS = ["method", "protocol", "test_macro_auc", "val_macro_auc", "best_epoch", "n_classes_scored",
           "n_classes_excluded", "n_test_records", "label_set", "aggregate"]


def load_results(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        try:
            r = json.loads(Path(path).read_text())
            rows.append({
                "method": r["method"], "protocol": r["protocol"], "test_macro_auc": r["test_macro_auc"],
                "val_macro_auc": r["val_macro_auc"], "best_epoch": r["best_epoch"],
                "n_classes_scored": r["test"]["n_scored"], "n_classes_excluded": len(r["test"]["excluded"]),
                "n_test_records": r["n_records"]["test"], "label_set": r["label_set"], "aggregate": r["aggregate"],
            })
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a physiossl result file ({type(exc).__name__}: {exc})") from exc
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["protocol", "method"]).reset_index(drop=True)


def to_markdown(df: pd.DataFrame, title: str) -> str:
    def fmt(value) -> str:
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    lines = [f"# {title}", "", "| " + " | ".join(df.columns) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
