# Helpers shared by the rules: package sources as inputs (a code change reruns exactly the jobs that
# run that code), dataset paths and wildcard constraints.
import re
from pathlib import Path

from physiossl.data.sources import source_kind


# modules only the sleep-staging commands run: a folder named as an ECG rule's input leaves them out
SLEEP_CODE = ("models/sleep.py", "augment/audio.py", "eval/sleep.py", "report/sleep.py",
              "losses/sequential_consistency.py", "losses/semi_supervised_contrastive.py", "losses/ccssl.py")


# modules that no rule's command runs (`physiossl sizing` reads the benchmark files after the runs): left out of the
# folders named as inputs, so that they rerun nothing
NOT_RUN_BY_RULES = ("report/sizing.py", "stages/sizing.py")


# what every stage that reads a store and writes run results runs besides its own modules: the store reader,
# the atomic writers and the stage helpers (run fingerprints, checkpoints, JSON results)
STAGE_CODE = ("data/store.py", "data/files.py", "stages/common.py")


def code(*parts):
    """Python sources under src/physiossl that a rule's command runs (files of a named folder but SLEEP_CODE)."""
    root, files = Path("src/physiossl"), []
    for part in parts:
        path = root / part
        files += (sorted(str(p) for p in path.rglob("*.py")
                         if p.relative_to(root).as_posix() not in SLEEP_CODE + NOT_RUN_BY_RULES)
                  if path.is_dir() else [str(path)])
    return files


def method_code(method):
    """A method's own file and what every method runs (the registry, the base class, shared helpers)."""
    shared = sorted(p.name for p in Path("src/physiossl/methods").glob("*.py")
                    if p.name.startswith("_") or p.name == "base.py")
    return code(*(f"methods/{name}" for name in shared), f"methods/{method}.py")


def one_of(names):
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


def datasets_in_mode(mode):
    return [name for name, ds in config["datasets"].items() if ds["mode"] == mode]


def source_of(dataset):
    return config["datasets"][dataset]["source"]


def is_sleep(dataset):
    return source_kind(source_of(dataset)) == "sleep"


def raw_path(dataset):
    ds = config["datasets"][dataset]
    return ds["local"] if ds["mode"] == "local" else f"{DATA}/raw/{dataset}"


def store_path(dataset):
    return f"{DATA}/stores/{dataset}_{config['datasets'][dataset]['fs']}hz.zarr"


def resources_of(stage):
    return config["resources"][stage]


def convert_resources():
    """mem_mb and runtime of the conversion jobs, when resources.convert gives them (measured: docs/sizing.md)."""
    return {k: v for k, v in config["resources"].get("convert", {}).items() if k in ("mem_mb", "runtime")}


def bench(job):
    """The Snakemake benchmark file of a job, ``benchmarks/<rule>/<job>.tsv`` under the results folder: wall time,
    peak RSS/VMS/USS/PSS, I/O and CPU time, summed over the job's processes (`physiossl sizing` tabulates them)."""
    return f"{RESULTS}/benchmarks/{job}.tsv"
