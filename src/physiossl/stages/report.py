"""Report stage: tables (CSV, Markdown), figures and DVC metrics of an experiment grid, from its result files.

Every output is written atomically and always all of them: a section without rows gets a header-only CSV and a
figure that says so. The periodic-target experiment's outputs (``PERIODIC_OUTPUTS``) are written only when its
result files are given, its label-efficiency table and figure only when those include fraction or fold-count runs;
periodic outputs of an earlier report that this one does not write are removed.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ..data.files import replace_path, tmp_sibling, write_text_atomic
from ..report.figures import label_efficiency_lines, macro_auc_bars, method_colours, robustness_lines
from ..report.periodic import (
    label_efficiency_figure,
    load_periodic,
    periodic_label_efficiency,
    periodic_markdown,
    periodic_metrics,
    periodic_table,
    predictions_figure,
    target_label,
)
from ..report.tables import label_efficiency_table, load_results, main_table, metrics, robustness_table, to_markdown

PERIODIC_OUTPUTS = ("periodic.csv", "periodic.md", "periodic.png")
PERIODIC_EFFICIENCY_OUTPUTS = ("periodic_label_efficiency.csv", "periodic_label_efficiency.png")


def _figure(draw, df, out: Path, title: str, colours: dict) -> None:
    tmp = tmp_sibling(out)
    try:
        draw(df, tmp, title, colours)
        replace_path(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _periodic(view: dict, df, out_dir: Path, colours: dict) -> tuple[dict, dict, list[str]]:
    """Write the periodic tables and figures of the results ``df`` (:func:`load_periodic`); return their DVC
    metrics, counts and the names of the files written."""
    table, efficiency = periodic_table(df), periodic_label_efficiency(df)
    section = view.get("periodic") or {}
    target = df.target.iloc[0] if len(df) else section.get("target", "target")
    units = (df.units.iloc[0] if len(df) else "") or section.get("units", "")
    name = f"{view['name']}: {target_label(target, '')} regression"
    write_text_atomic(out_dir / "periodic.csv", table.to_csv(index=False))
    write_text_atomic(out_dir / "periodic.md", periodic_markdown(table, efficiency, name, target, units))
    _figure(predictions_figure, df, out_dir / "periodic.png",
            f"{view['name']}: predicted against true {target_label(target, units)} of the test records", colours)
    written = list(PERIODIC_OUTPUTS)
    if len(efficiency):
        write_text_atomic(out_dir / "periodic_label_efficiency.csv", efficiency.to_csv(index=False))
        _figure(partial(label_efficiency_figure, units=units), efficiency, out_dir / "periodic_label_efficiency.png",
                f"{name}: label efficiency", colours)
        written += PERIODIC_EFFICIENCY_OUTPUTS
    counts = {"periodic": len(df), "periodic_table": len(table), "periodic_label_efficiency": len(efficiency)}
    return periodic_metrics(table), counts, written


def run(view: dict, results: list[Path], out_dir: Path, periodic: list[Path] = ()) -> dict:
    """``periodic``: result files of the periodic-target experiment (none: no periodic outputs)."""
    out_dir = Path(out_dir)
    df = load_results(results)
    periodic_df = load_periodic(periodic) if periodic else None
    out_dir.mkdir(parents=True, exist_ok=True)
    table, efficiency, robustness = main_table(df), label_efficiency_table(df), robustness_table(df)
    colours = method_colours(set(df.method) | (set(periodic_df.method) if periodic_df is not None else set()))
    name = view["name"]
    scores = metrics(table)
    counts = {"results": len(df), "table": len(table), "label_efficiency": len(efficiency),
              "robustness": len(robustness)}
    written = []
    if periodic_df is not None:
        scores["periodic"], periodic_counts, written = _periodic(view, periodic_df, out_dir, colours)
        counts.update(periodic_counts)
    write_text_atomic(out_dir / "table.csv", table.to_csv(index=False))
    write_text_atomic(out_dir / "table.md", to_markdown(table, f"{name}: linear evaluation and fine-tuning"))
    write_text_atomic(out_dir / "label_efficiency.csv", efficiency.to_csv(index=False))
    write_text_atomic(out_dir / "robustness.csv", robustness.to_csv(index=False))
    write_text_atomic(out_dir / "metrics.json", json.dumps(scores, indent=2, sort_keys=True) + "\n")
    _figure(macro_auc_bars, table, out_dir / "figure.png", f"{name}: test macro AUC", colours)
    _figure(label_efficiency_lines, efficiency, out_dir / "label_efficiency.png", f"{name}: label efficiency",
            colours)
    _figure(robustness_lines, robustness, out_dir / "robustness.png", f"{name}: robustness to noise", colours)
    for stale in set(PERIODIC_OUTPUTS + PERIODIC_EFFICIENCY_OUTPUTS) - set(written):
        (out_dir / stale).unlink(missing_ok=True)
    return {**counts, "out_dir": str(out_dir)}


def sleep(view: dict, results: list[Path], out_dir: Path) -> dict:
    """The sleep-staging ablation's table, per-class F1, hypnogram and DVC metrics (``sleep_metrics.json``)."""
    from ..report.sleep import sleep_metrics, write_sleep_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = view["sleep"]["grid"]["variants"]
    wanted = view["sleep"].get("hypnogram", {}).get("variants", ["supervised", "both"])
    written, summary = write_sleep_report(results, out_dir,
                                          hypnogram_variants=tuple(v for v in wanted if v in grid) or grid[:1])
    scores = sleep_metrics(summary)
    write_text_atomic(out_dir / "sleep_metrics.json", json.dumps(scores, indent=2, sort_keys=True) + "\n")
    return {"out_dir": str(out_dir), "results": len(results), "written": sorted(Path(p).name for p in written.values())
            + ["sleep_metrics.json"]}
