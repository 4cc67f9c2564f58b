"""Report stage: tables (CSV, Markdown), figures and DVC metrics of an experiment grid, from its result files.

Every output is written atomically and always all of them: a section without rows gets a header-only CSV and a
figure that says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.files import replace_path, tmp_sibling, write_text_atomic
from ..report.figures import label_efficiency_lines, macro_auc_bars, method_colours, robustness_lines
from ..report.tables import (label_efficiency_table, load_results, main_table, metrics, robustness_table,
                             to_markdown)


def _figure(draw, df, out: Path, title: str, colours: dict) -> None:
    tmp = tmp_sibling(out)
    try:
        draw(df, tmp, title, colours)
        replace_path(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def run(view: dict, results: list[Path], out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = load_results(results)
    table, efficiency, robustness = main_table(df), label_efficiency_table(df), robustness_table(df)
    colours = method_colours(df.method)
    name = view["name"]
    write_text_atomic(out_dir / "table.csv", table.to_csv(index=False))
    write_text_atomic(out_dir / "table.md", to_markdown(table, f"{name}: linear evaluation and fine-tuning"))
    write_text_atomic(out_dir / "label_efficiency.csv", efficiency.to_csv(index=False))
    write_text_atomic(out_dir / "robustness.csv", robustness.to_csv(index=False))
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics(table), indent=2, sort_keys=True) + "\n")
    _figure(macro_auc_bars, table, out_dir / "figure.png", f"{name}: test macro AUC", colours)
    _figure(label_efficiency_lines, efficiency, out_dir / "label_efficiency.png", f"{name}: label efficiency",
            colours)
    _figure(robustness_lines, robustness, out_dir / "robustness.png", f"{name}: robustness to noise", colours)
    return {"results": len(df), "table": len(table), "label_efficiency": len(efficiency),
            "robustness": len(robustness), "out_dir": str(out_dir)}
