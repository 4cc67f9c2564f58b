"""The documentation: a README that fits on a screen or two, links that resolve, a configuration reference that
covers every key of the schema, and results pages fed only by files that scripts/publish_results.sh published."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLISH = ROOT / "scripts" / "publish_results.sh"


def _hook(name: str):
    """A docs hook module, imported from its file (it does not need MkDocs)."""
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pages() -> list[Path]:
    """README.md and the Markdown pages of docs/ (not the report files that published runs put under
    docs/results/<name>/, which the results hook inlines)."""
    pages = [ROOT / "README.md"]
    for path in sorted(DOCS.rglob("*.md")):
        rel = path.relative_to(DOCS).parts
        if rel[0] == "hooks" or (rel[0] == "results" and len(rel) > 2):
            continue
        pages.append(path)
    return pages


def _links(text: str) -> list[str]:
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)     # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)                                 # code spans
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def test_readme_fits_on_a_screen_or_two():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for link in _links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
            continue                                            # a URL, or an anchor on the same page
        target = (page.parent / link.split("#", 1)[0]).resolve()
        if not target.exists():
            broken.append(link)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_docs_pages_are_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    assert config["strict"] == "true"

    def entries(nav):
        for item in nav:
            for value in item.values():
                yield from (entries(value) if isinstance(value, list) else [value])

    listed = set(entries(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in _pages() if p.is_relative_to(DOCS)}
    assert pages - listed == set(), "pages missing from the nav of mkdocs.yml"
    assert listed - pages == set(), "nav entries without a page"


def _schema_keys(schema: dict) -> set[str]:
    """Every key path of the schema, map levels (``additionalProperties`` schemas) left out of the path."""
    def resolve(node):
        while isinstance(node, dict) and "$ref" in node:
            target = schema
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"},
                    "properties": {**target.get("properties", {}), **node.get("properties", {})}}
        return node

    keys = set()

    def walk(node, path):
        node = resolve(node)
        for name, child in (node.get("properties") or {}).items():
            keys.add(".".join(path + [name]))
            walk(child, path + [name])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, path)

    walk(schema, [])
    return keys


def test_config_reference_renders_every_key_of_the_schema():
    hook = _hook("config_reference")
    schema = yaml.safe_load((ROOT / "src" / "physiossl" / "schema.yaml").read_text())
    text = html.unescape(hook.render(schema))
    rows = [line[len("| <code>"):line.index("</code>")] for line in text.splitlines() if line.startswith("| <code>")]
    rendered = {re.sub(r"\.<[^>]+>", "", key) for key in rows}
    keys = _schema_keys(schema)
    assert keys - rendered == set(), "keys of the schema missing from the configuration reference"
    # a leaf's description, type and allowed values come from the schema
    assert "sampling rate of an ECG store" in text
    row = next(line for line in text.splitlines() if line.startswith("| <code>pretrain.cache</code>"))
    assert "<code>ram</code>, <code>memmap</code>" in row and "yes" in row


def test_config_reference_marker_is_replaced():
    hook = _hook("config_reference")
    page = (DOCS / "config-reference.md").read_text()
    assert hook.MARKER in page
    out = hook.on_page_markdown(page, None, None, None)
    assert hook.MARKER not in out and "pretrain.trainer.max_epochs" in html.unescape(out)


def test_plugin_lists_come_from_the_tree():
    hook = _hook("plugins")
    text = hook.render_plugins()
    methods = sorted(p.stem for p in (ROOT / "src" / "physiossl" / "methods").glob("*.py")
                     if not p.stem.startswith("_") and p.stem != "base")
    assert methods and all(f"`physiossl.methods.{m}." in text for m in methods)
    settings = hook.render_method_settings()
    assert "### `simclr`" in settings and "`temperature`" in settings


def _fake_run(tmp_path: Path) -> Path:
    results = tmp_path / "results" / "demo"
    (results / "report").mkdir(parents=True)
    (results / "benchmarks" / "pretrain").mkdir(parents=True)
    (results / "report" / "table.md").write_text("# demo: linear evaluation and fine-tuning\n\n| a |\n|---|\n| 1 |\n")
    (results / "report" / "table.csv").write_text("method,protocol,test_macro_auc\nsimclr,linear,0.912345678\n")
    (results / "report" / "metrics.json").write_text("{}\n")
    (results / "report" / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (results / "report" / "notes.tmp").write_text("not a report file")
    for job, seconds in (("simclr", 12.5), ("byol", 7.5)):
        (results / "benchmarks" / "pretrain" / f"{job}.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:12\t100\n")
    return results


def _publish(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PUBLISH), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_publish_results_copies_the_report_with_its_provenance(tmp_path):
    results, docs = _fake_run(tmp_path), tmp_path / "docs"
    (docs / "demo").mkdir(parents=True)
    (docs / "demo" / "stale.csv").write_text("from an earlier publication")
    done = _publish("--docs", docs, results, "demo")
    assert done.returncode == 0, done.stderr
    out = docs / "demo"
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "metrics.json", "run.json", "table.csv", "table.md"]
    assert (out / "table.csv").read_text() == (results / "report" / "table.csv").read_text()
    info = json.loads((out / "run.json").read_text())
    assert info["name"] == "demo" and info["kind"] == "run"
    assert info["config"] == "config/config.yaml" and info["command"] == "bash scripts/demo.sh"
    assert len(info["config_sha256"]) == 64
    assert info["jobs"] == 2 and info["job_wall_s"] == 20.0
    assert info["files"] == ["figure.png", "metrics.json", "table.csv", "table.md"]
    assert info["machine"]["arch"] and info["machine"]["cpus"] >= 1
    assert {"python", "torch", "physiossl"} <= set(info["software"])
    assert "git_commit" in info and info["published"] and info["finished"]


def test_publish_results_refuses_a_run_without_a_report(tmp_path):
    (tmp_path / "results" / "x").mkdir(parents=True)
    done = _publish("--docs", tmp_path / "docs", tmp_path / "results" / "x", "demo")
    assert done.returncode != 0 and "report" in done.stderr
    assert not (tmp_path / "docs" / "demo").exists()


def test_publish_results_keeps_a_benchmarks_output(tmp_path):
    docs = tmp_path / "docs"
    done = _publish("--docs", docs, "--benchmark", "bench_x", "--", sys.executable, "-c", "print('42 samples/s')")
    assert done.returncode == 0, done.stderr
    out = docs / "benchmarks" / "bench_x"
    assert (out / "output.txt").read_text() == "42 samples/s\n"
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "benchmark" and "print" in info["command"] and info["files"] == ["output.txt"]
    failed = _publish("--docs", docs, "--benchmark", "bench_y", "--", sys.executable, "-c", "raise SystemExit(3)")
    assert failed.returncode == 3 and not (docs / "benchmarks" / "bench_y").exists()


def test_sizing_figures_and_resources_come_from_sizing_csv(tmp_path):
    """docs/sizing.md's figures are numbers of docs/sizing.csv, and the resources tables put a config's settings
    beside the largest measured peak and the longest wall time of the jobs each entry covers."""
    hook = _hook("results")
    docs, root = tmp_path / "docs", tmp_path
    docs.mkdir()
    (root / "config").mkdir()
    (root / "config" / "c.yaml").write_text(yaml.safe_dump({
        "datasets": {"ptbxl": {}, "psg_audio": {}}, "pretrain": {"methods": {"simclr": {}}},
        "resources": {"convert": {"threads": 8, "mem_mb": 3000, "runtime": 90},
                      "pretrain": {"threads": 8, "mem_mb": 16000, "runtime": 1440},
                      "evaluate": {"threads": 8, "mem_mb": 32000, "runtime": 240},
                      "sleep": {"gpu": 1}}}))
    page = ("took <!-- physiossl:sizing rehearsal_full pretrain simclr seconds --> s\n\n"
            "<!-- physiossl:resources config/c.yaml -->\n")
    with pytest.raises(hook.ResultsError, match="docs/sizing.csv is missing"):
        hook.render_page(page, "sizing.md", root, docs)
    (docs / "sizing.csv").write_text(
        "run,rule,job,seconds,max_rss_mb,cpu_s\n"
        "rehearsal_full,convert,ptbxl_100hz,693.2,326.0,647\n"
        "rehearsal_full,convert,ptbxl_500hz,1464.0,692.0,988\n"
        "rehearsal_full,convert,chapman_100hz,9999,9999,1\n"         # not a dataset of the config
        "rehearsal_full,convert_sleep,psg_audio,164,744.0,128\n"
        "rehearsal_tenth,convert,ptbxl_500hz,139,4690,110\n"         # not the full-size run
        "rehearsal_full,pretrain,simclr,1823.4,3569.0,1508\n")
    text = hook.render_page(page, "sizing.md", root, docs)
    assert text.startswith("took 1,823 s\n")
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert "convert ptbxl_100hz, convert ptbxl_500hz, convert_sleep psg_audio |" in rows["convert"]
    assert "| 744 | 24 | 4.0x | 3.7x |" in rows["convert"]              # 3000 / 744 MB, 90 min / 1464 s
    assert "| 3,569 | 30 | 4.5x | 47.4x |" in rows["pretrain"]
    assert "not measured" in rows["evaluate"]
    assert rows["sleep"].startswith("| `sleep` |  |  |  | not measured")       # settings it does not give: blank
    for directive, words in (("sizing rehearsal_full pretrain byol seconds", "no row for run rehearsal_full"),
                             ("sizing rehearsal_full pretrain simclr gpu_s", "no value in column 'gpu_s'"),
                             ("sizing rehearsal_full pretrain", "must name RUN RULE JOB COLUMN"),
                             ("resources config/none.yaml", "no config file config/none.yaml")):
        with pytest.raises(hook.ResultsError, match=re.escape(words)):
            hook.render_page(f"<!-- physiossl:{directive} -->", "sizing.md", root, docs)


def test_results_pages_show_published_files_and_say_what_is_not_published(tmp_path):
    hook = _hook("results")
    docs = tmp_path / "docs"
    page = "# Demo\n\n<!-- physiossl:run demo -->\n\n<!-- physiossl:include demo/table.csv -->\n"
    text = hook.render_page(page, "results/demo.md", ROOT, docs)
    assert "Not yet published: demo" in text and "bash scripts/publish_results.sh results/demo demo" in text

    assert _publish("--docs", docs / "results", _fake_run(tmp_path), "demo").returncode == 0
    text = hook.render_page(page + "<!-- physiossl:include demo/figure.png -->\n", "results/demo.md", ROOT, docs)
    assert "bash scripts/demo.sh" in text and "0.9123" in text and "](demo/table.csv)" in text
    assert "![demo: figure.png](demo/figure.png)" in text
    quoted = "`<!-- physiossl:run NAME -->`"
    assert hook.render_page(quoted, "results.md", ROOT, docs) == quoted

    with pytest.raises(hook.ResultsError, match="missing.csv is missing"):
        hook.render_page("<!-- physiossl:include demo/missing.csv -->", "results/demo.md", ROOT, docs)
    (docs / "results" / "demo" / "figure.png").unlink()
    with pytest.raises(hook.ResultsError, match="lists files that are missing: figure.png"):
        hook.render_page(page, "results/demo.md", ROOT, docs)
    with pytest.raises(hook.ResultsError, match="no config in config/ is named 'demo_typo'"):
        hook.render_page("<!-- physiossl:run demo_typo -->", "results/demo.md", ROOT, docs)
