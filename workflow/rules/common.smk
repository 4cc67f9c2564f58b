# Helpers shared by the rules: package sources as inputs (a code change reruns exactly the jobs that
# run that code), dataset paths and wildcard constraints.
import re
from pathlib import Path


def code(*parts):
    """Python sources under src/physiossl that a rule's command runs."""
    files = []
    for part in parts:
        path = Path("src/physiossl") / part
        files += sorted(str(p) for p in path.rglob("*.py")) if path.is_dir() else [str(path)]
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


def raw_path(dataset):
    ds = config["datasets"][dataset]
    return ds["local"] if ds["mode"] == "local" else f"{DATA}/raw/{dataset}"


def store_path(dataset):
    return f"{DATA}/stores/{dataset}_{config['datasets'][dataset]['fs']}hz.zarr"


def resources_of(stage):
    return config["resources"][stage]
