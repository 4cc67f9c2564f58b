#!/usr/bin/env python
"""Planning cost: wall time of ``snakemake -n`` (the dry run that builds the whole DAG) and of
``physiossl check-config`` on a config, against Snakemake's own start (``snakemake --version``, the floor no
workflow can go below) in the same run; with ``--compare REV`` also the same commands on the code of git revision
REV (a temporary worktree, its ``src`` first on the Python path), interleaved with the current code's.

    python benchmarks/bench_planning.py [--config config/paper_ecg.yaml] [--repeats 5] [--compare REV]

Each figure is the median of ``--repeats`` runs; the ratios divide by Snakemake's start. Run it on an idle machine:
the figures are wall times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(command: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} (in {cwd}) failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


def commands(config: str) -> dict[str, list[str]]:
    return {
        "snakemake --version": [str(BIN / "snakemake"), "--version"],
        f"snakemake -n --configfile {config}": [str(BIN / "snakemake"), "-n", "--quiet", "--configfile", config],
        f"physiossl check-config {config}": [sys.executable, "-c", "import sys; from physiossl.cli import main; "
                                             "sys.exit(main(sys.argv[1:]))", "check-config", config],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/paper_ecg.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", default=None, help="also time the code of this git revision")
    args = parser.parse_args(argv)
    print(machine_info())
    trees = {"current": (ROOT, dict(os.environ))}
    scratch = None
    if args.compare:
        scratch = Path(tempfile.mkdtemp(prefix="bench_planning-"))
        subprocess.run(["git", "worktree", "add", "--detach", str(scratch / "tree"), args.compare], cwd=ROOT,
                       check=True, capture_output=True)
        env = dict(os.environ, PYTHONPATH=str(scratch / "tree" / "src"))
        trees[args.compare] = (scratch / "tree", env)
    try:
        runs = commands(args.config)
        times = {(tree, name): [] for tree in trees for name in runs}
        for tree, (cwd, env) in trees.items():         # once untimed: caches (pyc, remembered imports) are warm
            for command in runs.values():
                timed(command, cwd, env)
        for _ in range(args.repeats):
            for tree, (cwd, env) in trees.items():     # interleaved, so drifting load hits every tree alike
                for name, command in runs.items():
                    times[(tree, name)].append(timed(command, cwd, env))
        print(f"median of {args.repeats} runs, wall seconds; ratio = time / snakemake --version of the same code")
        print(f"{'code':>10s}  {'command':60s} {'seconds':>8s} {'ratio':>7s}")
        for tree in trees:
            floor = statistics.median(times[(tree, "snakemake --version")])
            for name in runs:
                median = statistics.median(times[(tree, name)])
                print(f"{tree[:10]:>10s}  {name:60s} {median:8.2f} {median / floor:6.2f}x")
    finally:
        if scratch is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(scratch / "tree")], cwd=ROOT,
                           capture_output=True)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
