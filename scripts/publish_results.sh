#!/usr/bin/env bash
# Publish the files a run or a benchmark wrote into the documentation (docs/results/NAME/), with a run.json that
# says how they were made; the results and benchmark pages show them when the site is built (docs/results.md).
#
#   bash scripts/publish_results.sh RESULTS_DIR NAME [CONFIG]
#       a finished pipeline run: copies RESULTS_DIR/report/* (tables .md/.csv, metrics .json, figures .png/.svg).
#       NAME is the config's `name` (e.g. demo, demo_methods); CONFIG defaults to the config/*.yaml whose
#       paths.results is RESULTS_DIR, else the one named NAME.
#   bash scripts/publish_results.sh --benchmark NAME -- COMMAND [ARG...]
#       runs COMMAND (e.g. python benchmarks/bench_loader.py) and keeps what it prints as output.txt in
#       docs/results/benchmarks/NAME/; nothing is published when it fails.
#
# run.json: the command, config file and its SHA-256, git commit (and whether the tree had uncommitted changes),
# when the run finished and when it was published, the machine (uname -m, CPU count and model, memory, GPU) and
# the versions of Python, torch and physiossl; for a pipeline run also the number of jobs and their summed wall
# time from the Snakemake benchmark files. Publish on the machine that made the files.
# Options: --docs DIR writes into DIR/NAME instead of docs/results/NAME (used by the tests).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
docs="$root/docs/results"
if [ "${1:-}" = "--docs" ]; then
    docs="$(mkdir -p "$2" && cd "$2" && pwd)"
    shift 2
fi
usage() { sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
python=python3
[ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"

if [ "${1:-}" = "--benchmark" ]; then
    [ $# -ge 4 ] && [ "$3" = "--" ] || usage
    name="$2"
    shift 3
    out="$docs/benchmarks/$name"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    start=$(date +%s)
    set +e
    ( cd "$root" && PATH="$root/.venv/bin:$PATH" "$@" ) 2>&1 | tee "$tmp/output.txt"
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "publish_results.sh: '$*' failed (exit $status); nothing published" >&2
        exit "$status"
    fi
    wall=$(( $(date +%s) - start ))
    mode=benchmark
    results=""
    command="$*"
else
    [ $# -ge 2 ] && [ $# -le 3 ] || usage
    results="$1"
    name="$2"
    [ -d "$results/report" ] || { echo "publish_results.sh: $results/report is not a folder: has the run finished?" >&2; exit 1; }
    out="$docs/$name"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    shopt -s nullglob
    files=("$results"/report/*.md "$results"/report/*.csv "$results"/report/*.json "$results"/report/*.png "$results"/report/*.svg)
    shopt -u nullglob
    [ ${#files[@]} -gt 0 ] || { echo "publish_results.sh: no report files in $results/report" >&2; exit 1; }
    cp -p "${files[@]}" "$tmp/"
    wall=""
    mode=run
    command=""
fi

"$python" - "$mode" "$root" "$tmp" "$name" "$results" "${3:-}" "$command" "$wall" <<'PY'
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

mode, root, tmp, name, results, config, command, wall = sys.argv[1:9]
root, tmp = Path(root), Path(tmp)


def git(*args):
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def find_config():
    wanted = os.path.normpath(os.path.relpath(os.path.abspath(results), root))
    by_name = None
    for path in sorted((root / "config").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or "paths" not in data:
            continue
        if os.path.normpath(str(data["paths"].get("results", ""))) == wanted:
            return path.relative_to(root).as_posix()
        if data.get("name") == name and by_name is None:
            by_name = path.relative_to(root).as_posix()
    return by_name


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_gib():
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def software():
    out = {"python": platform.python_version(), "torch": None, "physiossl": None}
    try:
        import torch
        out["torch"] = torch.__version__
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        gpu = None
    try:
        from importlib.metadata import version
        out["physiossl"] = version("physiossl")
    except Exception:
        pass
    return out, gpu


def now(ts=None):
    when = dt.datetime.fromtimestamp(ts, dt.timezone.utc) if ts else dt.datetime.now(dt.timezone.utc)
    return when.isoformat(timespec="seconds")


soft, gpu = software()
info = {"name": name, "kind": mode}
if mode == "run":
    config = config or find_config()
    if not config:
        sys.exit(f"publish_results.sh: no config/*.yaml has paths.results {results} or name {name}; pass CONFIG")
    cfg_path = root / config if not os.path.isabs(config) else Path(config)
    cfg = yaml.safe_load(cfg_path.read_text())
    if cfg.get("name") != name:
        print(f"publish_results.sh: note: {config} is named {cfg.get('name')!r}, publishing as {name!r}", file=sys.stderr)
    config = os.path.relpath(cfg_path, root) if cfg_path.is_relative_to(root) else str(cfg_path)
    info["config"] = Path(config).as_posix()
    info["config_sha256"] = hashlib.sha256(cfg_path.read_bytes()).hexdigest()
    info["command"] = "bash scripts/demo.sh" + ("" if info["config"] == "config/config.yaml"
                                                else f" --configfile {info['config']}")
    info["results_dir"] = results
    files = sorted(p for p in tmp.iterdir() if p.is_file())
    info["finished"] = now(max(p.stat().st_mtime for p in files))
    tsv = sorted(Path(results, "benchmarks").rglob("*.tsv"))
    total = 0.0
    for path in tsv:
        lines = path.read_text().splitlines()
        if len(lines) >= 2:
            header, values = lines[0].split("\t"), lines[-1].split("\t")
            try:
                total += float(values[header.index("s")])
            except (ValueError, IndexError):
                pass
    info["jobs"] = len(tsv)
    info["job_wall_s"] = round(total, 1)
else:
    out = tmp / "output.txt"       # progress bars: keep what each carriage-return-rewritten line showed last
    out.write_text("\n".join(line.rsplit("\r", 1)[-1] for line in out.read_text(errors="replace").split("\n")))
    info["command"] = command
    info["finished"] = now()
    info["wall_s"] = round(float(wall), 1) if wall else None
info["git_commit"] = git("rev-parse", "HEAD")
status = git("status", "--porcelain", "--untracked-files=no")
info["git_dirty"] = bool(status) if status is not None else None
info["published"] = now()
info["machine"] = {"arch": platform.machine(), "os": platform.system(), "cpus": os.cpu_count(),
                   "cpu_model": cpu_model(), "memory_gib": memory_gib(), "gpu": gpu}
info["software"] = soft
info["files"] = sorted(p.name for p in tmp.iterdir() if p.is_file())
(tmp / "run.json").write_text(json.dumps(info, indent=2) + "\n")
PY

# replace docs/results/NAME as a whole: no file of an earlier publication stays behind
mkdir -p "$(dirname "$out")"
staged="$(dirname "$out")/.$(basename "$out").new.$$"
rm -rf "$staged"
cp -rp "$tmp" "$staged"
chmod 755 "$staged"
rm -rf "$out"
mv "$staged" "$out"
echo "published $(ls "$out" | wc -l) files to ${out#"$root"/}"
