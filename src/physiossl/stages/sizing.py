"""Sizing stage: the tables of docs/sizing.md from the Snakemake benchmark files of runs (``physiossl sizing``).

Not a rule of the workflow: it reads what the rules' ``benchmark:`` files recorded, after the runs.
"""

from __future__ import annotations

from pathlib import Path

from ..data.files import write_text_atomic


def run(configs: list[dict], out: Path, csv_out: Path | None = None, baseline: str | None = None,
        limit: float = 1.5) -> dict:
    """The sizing tables of the runs of ``configs`` (their Snakemake benchmark files): written into ``out`` (a Markdown
    document; the generated block between its markers is replaced, the prose around it kept) and ``csv_out``
    (default ``out`` with .csv). With ``baseline`` (the name of one of the configs, e.g. the tenth-size rehearsal) the
    conversions' peak RSS of every other run is checked against it (at most ``limit`` times)."""
    from ..report.sizing import SizingError, cache_sizes, collect, csv_text, markdown_tables, splice, streaming_check

    runs = [(str(c["name"]), collect(c)) for c in configs]
    by_name = dict(runs)
    if baseline is not None and baseline not in by_name:
        raise SizingError(f"--baseline {baseline}: not the name of a config given (names: {sorted(by_name)})")
    checks = [(name, baseline, streaming_check(rows, by_name[baseline], limit))
              for name, rows in runs if baseline is not None and name != baseline]
    caches = [c for config in configs for c in cache_sizes(config)]
    out = Path(out)
    csv_out = Path(csv_out) if csv_out else out.with_suffix(".csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    document = out.read_text() if out.is_file() else None
    write_text_atomic(out, splice(document, markdown_tables(runs, checks, caches, limit)))
    write_text_atomic(csv_out, csv_text([r for _, rows in runs for r in rows]))
    failed = [f"{name}: {c.rule} {c.job} ({c.rss_ratio:.2f}x)" for name, _, rows in checks for c in rows
              if c.passed is False]
    return {"out": str(out), "csv": str(csv_out), "jobs": sum(len(rows) for _, rows in runs),
            "streaming_checked": sum(len(rows) for _, _, rows in checks), "streaming_failed": failed}
