"""MkDocs hook: results and benchmark pages built from the files that runs and benchmarks wrote.

No figure on a results page is typed by hand. A page names what it shows with directives (HTML comments, so the
Markdown source stays readable on its own):

``<!-- physiossl:run NAME -->``
    where the run NAME's files come from: command, config, commit, date, machine and software (``run.json``);
``<!-- physiossl:include NAME/FILE -->``
    a file of that run: ``.md`` inlined (headings moved two levels down), ``.csv`` as a table with a link to the
    file, ``.png``/``.svg`` as an image, ``.json``/``.txt`` as a code block;
``<!-- physiossl:status NAME -->``
    one line: published (when, from which commit) or not yet.

``<!-- physiossl:sizing RUN RULE JOB COLUMN -->``
    one number of ``docs/sizing.csv`` (written by ``physiossl sizing`` from the Snakemake benchmark files of the
    rehearsals, docs/sizing.md): the COLUMN (``seconds``, ``max_rss_mb``, ``cpu_s``, ``records``, ...) of the job;
``<!-- physiossl:resources CONFIG -->``
    the ``resources:`` of a config file against the largest peak memory and longest wall time that
    ``docs/sizing.csv`` has for the jobs each entry covers in the full-size rehearsal.

NAME is the ``name`` of a config in ``config/`` (a pipeline run, published from its results folder) or
``benchmarks/<script>`` (a script in ``benchmarks/``, published with its output; ``benchmarks/<script>.<variant>``
for another publication of the same script, ``.gpu`` for those of ``scripts/gpu_check.sh``); the files live in
``docs/results/NAME/``, copied there by ``scripts/publish_results.sh``. The rule:

- a run without ``docs/results/NAME/run.json`` is *not yet published*: its directives render a notice with the
  commands that publish it, and the build passes;
- a published run must have every file that a page names and every file its ``run.json`` lists, otherwise the
  build fails, naming the page and the file;
- a NAME that is neither a config name nor a benchmark script fails the build.

The functions below work without MkDocs; :func:`render_page` is what the hook runs on each page.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESULTS = "results"                       # under docs/
DIRECTIVE = re.compile(r"<!--\s*physiossl:(run|include|status)\s+(\S+)\s*-->")
SIZING_DIRECTIVE = re.compile(r"<!--\s*physiossl:(sizing|resources)\s+([^>]*?)\s*-->")
SIZING = "sizing.csv"                     # under docs/, written by `physiossl sizing`
FULL_SIZE_RUN = "rehearsal_full"
RESOURCE_RULES = {"convert": ("convert", "convert_sleep"), "pretrain": ("pretrain",),
                  "evaluate": ("evaluate", "periodic"), "sleep": ("train_sleep",)}   # resources entry → rules
IMAGES = (".png", ".svg", ".jpg", ".jpeg")
CODE = {".json": "json", ".txt": "text", ".log": "text", ".yaml": "yaml"}


class ResultsError(Exception):
    """A page names a file that a published run does not have, or a run that does not exist."""


# ------------------------------------------------------------------------------------------------ runs
def config_names(root: Path = ROOT) -> dict[str, str]:
    """``name`` → config file (relative to the repository root) of every config in ``config/``."""
    names = {}
    for path in sorted((root / "config").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str) and "paths" in data:
            names.setdefault(data["name"], path.relative_to(root).as_posix())
    return names


def demo_command(config: str) -> str:
    return "bash scripts/demo.sh" + ("" if config == "config/config.yaml" else f" --configfile {config}")


def publish_hint(name: str, root: Path = ROOT) -> str:
    """The commands that produce and publish run ``name``; ResultsError for an unknown name."""
    if name.startswith("benchmarks/"):
        published = name.split("/", 1)[1]
        script, _, variant = published.partition(".")        # bench_methods.gpu: a second publication of a script
        if not (root / "benchmarks" / f"{script}.py").is_file():
            raise ResultsError(f"no benchmark script benchmarks/{script}.py for results {name!r}")
        if variant == "gpu":
            return "bash scripts/gpu_check.sh        # on a machine with an NVIDIA GPU"
        return f"bash scripts/publish_results.sh --benchmark {published} -- python benchmarks/{script}.py"
    configs = config_names(root)
    if name not in configs:
        raise ResultsError(f"no config in config/ is named {name!r} (names: {', '.join(sorted(configs))})")
    config = configs[name]
    results = yaml.safe_load((root / config).read_text())["paths"]["results"]
    return f"{demo_command(config)}\nbash scripts/publish_results.sh {results} {name}"


def run_info(name: str, docs: Path = DOCS) -> dict | None:
    """The ``run.json`` of a published run, None when it is not published."""
    path = docs / RESULTS / name / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ResultsError(f"{path.relative_to(docs.parent)} is not valid JSON ({exc})") from exc


def check_run(name: str, info: dict, docs: Path = DOCS) -> None:
    missing = [f for f in info.get("files", []) if not (docs / RESULTS / name / f).is_file()]
    if missing:
        raise ResultsError(f"docs/{RESULTS}/{name}/run.json lists files that are missing: {', '.join(missing)}; "
                           "publish the run again with scripts/publish_results.sh")


# ------------------------------------------------------------------------------------------------ rendering
def _indent(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.splitlines())


def unpublished(name: str, root: Path = ROOT) -> str:
    return (f'!!! warning "Not yet published: {name}"\n'
            f"    No published files for `{name}` yet (`docs/{RESULTS}/{name}/` is absent). To publish them, run:\n\n"
            f"    ```bash\n{_indent(publish_hint(name, root))}\n    ```\n")


def _duration(seconds) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def provenance(name: str, info: dict) -> str:
    """The 'how these files were made' box of a published run, from its run.json."""
    machine = info.get("machine") or {}
    software = info.get("software") or {}
    rows = [("command", f"`{info['command']}`" if info.get("command") else "")]
    if info.get("config"):
        rows.append(("config", f"`{info['config']}`" + (f" (SHA-256 `{info['config_sha256'][:12]}`)"
                                                        if info.get("config_sha256") else "")))
    commit = info.get("git_commit") or "unknown"
    rows.append(("commit", f"`{commit[:12]}`" + (" with uncommitted changes" if info.get("git_dirty") else "")))
    if info.get("finished"):
        rows.append(("finished", info["finished"]))
    rows.append(("published", info.get("published", "")))
    parts = [machine.get("arch"), f"{machine['cpus']} CPUs" if machine.get("cpus") else None, machine.get("cpu_model"),
             f"{machine['memory_gib']} GiB RAM" if machine.get("memory_gib") else None,
             machine.get("gpu") or "no GPU"]
    rows.append(("machine", ", ".join(str(p) for p in parts if p)))
    rows.append(("software", ", ".join(f"{k} {v}" for k, v in software.items() if v)))
    if info.get("jobs") is not None:
        rows.append(("jobs", f"{info['jobs']} (summed wall time {_duration(info.get('job_wall_s') or 0)}, from the "
                             "Snakemake benchmark files)"))
    if info.get("wall_s") is not None:
        rows.append(("wall time", _duration(info["wall_s"])))
    table = "| made by | |\n|---|---|\n" + "\n".join(f"| {k} | {v.replace('|', '&#124;')} |" for k, v in rows)
    return f'!!! info "How these files were made: {name}"\n{_indent(table)}\n'


def status(name: str, info: dict | None) -> str:
    if info is None:
        return f"`{name}`: not yet published."
    commit = (info.get("git_commit") or "unknown")[:12]
    return f"`{name}`: published {info.get('published', '')} from commit `{commit}`."


def _demote(markdown: str, levels: int = 2) -> str:
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6}\s", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def _cell(value: str) -> str:
    if re.fullmatch(r"-?\d+\.\d{5,}(e-?\d+)?", value):
        value = f"{float(value):.4f}"
    return value.replace("|", "&#124;")


def csv_table(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return "*(empty)*"
    header, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in body]
    if not body:
        lines.append("| " + " | ".join("" for _ in header) + " |")
    return "\n".join(lines)


def include(name: str, filename: str, page_dir: str, docs: Path = DOCS) -> str:
    path = docs / RESULTS / name / filename
    if not path.is_file():
        raise ResultsError(f"docs/{RESULTS}/{name}/{filename} is missing, but run {name!r} is published "
                           f"(its run.json exists): publish the run again, or fix the page")
    link = posixpath.relpath(f"{RESULTS}/{name}/{filename}", page_dir or ".")
    suffix = path.suffix.lower()
    if suffix == ".md":
        return _demote(path.read_text()).strip() + "\n"
    if suffix == ".csv":
        return f"{csv_table(path.read_text())}\n\n[{filename}]({link}) (the file itself)\n"
    if suffix in IMAGES:
        return f"![{name}: {filename}]({link})\n"
    lang = CODE.get(suffix, "text")
    return f"```{lang}\n{path.read_text().rstrip()}\n```\n"


# ------------------------------------------------------------------------------------------------ sizing
def sizing_rows(docs: Path = DOCS) -> list[dict[str, str]]:
    path = docs / SIZING
    if not path.is_file():
        raise ResultsError(f"docs/{SIZING} is missing: write it with `physiossl sizing` (docs/sizing.md)")
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2g}"


def sizing_value(args: str, rows: list[dict[str, str]]) -> str:
    """The number ``RUN RULE JOB COLUMN`` of docs/sizing.csv, formatted."""
    parts = args.split()
    if len(parts) != 4:
        raise ResultsError(f"'physiossl:sizing {args}' must name RUN RULE JOB COLUMN")
    run, rule, job, column = parts
    row = next((r for r in rows if (r["run"], r["rule"], r["job"]) == (run, rule, job)), None)
    if row is None:
        raise ResultsError(f"docs/{SIZING} has no row for run {run}, rule {rule}, job {job}")
    if not row.get(column):
        raise ResultsError(f"docs/{SIZING}: run {run}, rule {rule}, job {job} has no value in column {column!r}")
    return _number(float(row[column]))


def _dataset_of(job: str) -> str:
    match = re.fullmatch(r"(.+)_\d+hz", job)
    return match[1] if match else job


def resources_table(config_file: str, rows: list[dict[str, str]], root: Path = ROOT) -> str:
    """The ``resources:`` of ``config_file`` beside what the full-size rehearsal measured for the jobs of each entry
    (the rules that use the entry, for the config's datasets and methods)."""
    path = root / config_file
    if not path.is_file():
        raise ResultsError(f"no config file {config_file}")
    config = yaml.safe_load(path.read_text())
    names = set(config.get("datasets", {})) | set(config.get("pretrain", {}).get("methods", {}))
    lines = [f"| entry | threads | mem_mb | runtime (min) | full-size jobs measured (`{FULL_SIZE_RUN}`) "
             "| largest peak RSS (MB) | longest wall (min) | mem_mb / peak RSS | runtime / wall |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for entry, setting in config.get("resources", {}).items():
        jobs = [r for r in rows if r["run"] == FULL_SIZE_RUN and r["rule"] in RESOURCE_RULES.get(entry, ())
                and _dataset_of(r["job"]) in names and r.get("max_rss_mb") and r.get("seconds")]
        cells = [f"`{entry}`"] + [f"{setting[key]:,}" if key in setting else ""
                                  for key in ("threads", "mem_mb", "runtime")]
        if jobs:
            rss, wall = max(float(r["max_rss_mb"]) for r in jobs), max(float(r["seconds"]) for r in jobs)
            cells += [", ".join(f"{r['rule']} {r['job']}" for r in jobs), _number(rss), _number(wall / 60),
                      f"{setting['mem_mb'] / rss:.1f}x" if "mem_mb" in setting else "",
                      f"{setting['runtime'] * 60 / wall:.1f}x" if "runtime" in setting else ""]
        else:
            cells += ["not measured", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_page(markdown: str, page_path: str, root: Path = ROOT, docs: Path | None = None) -> str:
    """``markdown`` with every directive replaced; ``page_path`` is the page relative to docs/ (for links)."""
    docs = docs or root / "docs"
    page_dir = posixpath.dirname(page_path)
    runs_shown = {m[2] for m in DIRECTIVE.finditer(markdown) if m[1] == "run"}

    def replace(match: re.Match) -> str:
        kind, arg = match[1], match[2]
        name, _, filename = arg.rpartition("/") if kind == "include" else (arg, "", "")
        if kind == "include" and not name:
            raise ResultsError(f"{page_path}: '{match[0]}' must name NAME/FILE")
        publish_hint(name, root)                     # an unknown name fails here
        info = run_info(name, docs)
        if info is not None:
            check_run(name, info, docs)
        if kind == "status":
            return status(name, info)
        if info is None:
            return unpublished(name, root) if kind == "run" or name not in runs_shown else ""
        if kind == "run":
            return provenance(name, info)
        return include(name, filename, page_dir, docs)

    sizing: list[list[dict[str, str]]] = []          # docs/sizing.csv, read once per page when a directive needs it

    def replace_sizing(match: re.Match) -> str:
        if not sizing:
            sizing.append(sizing_rows(docs))
        rows = sizing[0]
        return sizing_value(match[2], rows) if match[1] == "sizing" else resources_table(match[2], rows, root)

    def line_sub(line: str) -> str:
        # a directive quoted in a code span (preceded by a backtick) is text, not a directive
        for pattern, render in ((DIRECTIVE, replace), (SIZING_DIRECTIVE, replace_sizing)):
            line = pattern.sub(lambda m: m[0] if m.start() and line[m.start() - 1] == "`" else render(m), line)
        return line

    out, fenced = [], False
    try:
        for line in markdown.split("\n"):
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
            out.append(line if fenced else line_sub(line))
    except ResultsError as exc:
        raise ResultsError(f"{page_path}: {exc}") from None
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ MkDocs hook
def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if "physiossl:" not in markdown:
        return markdown
    try:
        return render_page(markdown, page.file.src_uri, ROOT, Path(config["docs_dir"]))
    except ResultsError as exc:
        from mkdocs.exceptions import PluginError
        raise PluginError(str(exc)) from None
