"""Report stage: tables (CSV, Markdown) and a figure of an experiment grid, from its result files."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.files import replace_path, write_text_atomic
from ..report.figures import macro_auc_bars
from ..report.tables import load_results, to_markdown


def run(view: dict, results: list[Path], out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = load_results(results)
    title = f"{view['name']}: linear evaluation and fine-tuning"
    write_text_atomic(out_dir / "table.csv", df.to_csv(index=False))
    write_text_atomic(out_dir / "table.md", to_markdown(df, title))
    tmp = out_dir / f".figure.tmp-{os.getpid()}.png"
    macro_auc_bars(df, tmp, title)
    replace_path(tmp, out_dir / "figure.png")
    return {"rows": len(df), "out_dir": str(out_dir)}
