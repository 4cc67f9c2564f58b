"""What the Snakemake rules compute from the config, so that the rule files hold rules only: dataset and result
paths, the job grids, wildcard constraints, resources, log and benchmark files, command-line flags and each job's
code versions (:mod:`physiossl.codedeps`). The Snakefile makes one :class:`Pipeline` of the validated config; a rule
writes ``P.store_path(dataset)``. Imports neither torch nor Lightning."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Callable

from .codedeps import code_version
from .config import eval_subsets, random_init_encoder, sleep_runs
from .data.sources import SOURCES, source_kind
from .models import ENCODERS


def one_of(names) -> str:
    """A wildcard constraint that matches exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


def flag(name: str, paths) -> str:
    """``name`` and the shell-quoted paths for a command line, or nothing when there are none (every value of a
    command line is quoted: paths with spaces or shell characters stay one argument)."""
    return " ".join([name, *map(shlex.quote, map(str, paths))]) if paths else ""


class Pipeline:
    """The rules' view of a validated ``config``. ``report`` is Snakemake's ``report()`` and ``basedir`` the
    workflow's folder (for the captions of the outputs the report shows)."""

    def __init__(self, config: dict, report: Callable[..., Any] | None = None, basedir: str = "."):
        self.config, self._report, self.basedir = config, report, basedir
        self.data, self.results = config["paths"]["data"], config["paths"]["results"]

    # ----------------------------------------------------------------------------------------- code versions
    def code(self, *modules: str) -> str:
        """The version of the job's code, its ``code`` parameter: the import closure of ``modules`` (its entry module
        and the plugins it loads by name; :mod:`physiossl.codedeps` says what counts)."""
        return code_version(*modules)

    def source_module(self, dataset: str) -> str:
        return SOURCES[self.source_of(dataset)].module

    def encoder_module(self, method: str) -> str:
        """The module of the encoder a pretraining or evaluation job of ``method`` builds."""
        config = self.config
        encoder = random_init_encoder(config, method) or config["pretrain"]["methods"][method].get(
            "encoder", config["pretrain"]["encoder"])
        return ENCODERS[encoder].module

    # ------------------------------------------------------------------------------------------------ datasets
    def datasets_in_mode(self, mode: str) -> list[str]:
        return [name for name, ds in self.config["datasets"].items() if ds["mode"] == mode]

    def source_of(self, dataset: str) -> str:
        return self.config["datasets"][dataset]["source"]

    def is_sleep(self, dataset: str) -> bool:
        return source_kind(self.source_of(dataset)) == "sleep"

    def raw_path(self, dataset: str) -> str:
        ds = self.config["datasets"][dataset]
        return ds["local"] if ds["mode"] == "local" else f"{self.data}/raw/{dataset}"

    def store_path(self, dataset: str) -> str:
        return f"{self.data}/stores/{dataset}_{self.config['datasets'][dataset]['fs']}hz.zarr"

    def sleep_store_path(self, dataset: str) -> str:
        return f"{self.data}/stores/{dataset}_sleep.zarr"

    # ----------------------------------------------------------------------------------------------- resources
    def resources_of(self, stage: str) -> dict:
        return self.config["resources"][stage]

    def convert_resources(self) -> dict:
        """mem_mb and runtime of the conversion jobs, when resources.convert gives them (measured: docs/sizing.md)."""
        return {k: v for k, v in self.config["resources"].get("convert", {}).items() if k in ("mem_mb", "runtime")}

    def bench(self, job: str) -> str:
        """The Snakemake benchmark file of a job, ``benchmarks/<rule>/<job>.tsv`` under the results folder: wall
        time, peak RSS/VMS/USS/PSS, I/O and CPU time, summed over the job's processes (`physiossl sizing` tabulates
        them)."""
        return f"{self.results}/benchmarks/{job}.tsv"

    def logfile(self, job: str) -> str:
        """The log of a job, ``logs/<rule>/<job>.log`` under the results folder: everything its command prints
        (progress bars refresh at most once a minute there: TQDM_MININTERVAL, set by the Snakefile)."""
        return f"{self.results}/logs/{job}.log"

    def shown(self, path: str, caption: str, category: str):
        """An output that `snakemake --report` shows, with the caption workflow/report/<caption>.rst."""
        if self._report is None:
            return path
        return self._report(path, caption=os.path.join(self.basedir, "workflow", "report", f"{caption}.rst"),
                            category=category)

    # ----------------------------------------------------------------------------------------------- the grids
    def pretrained(self, wc) -> list[str]:
        """The pretrained encoder an evaluation job reads (none for a random-initialisation baseline)."""
        if random_init_encoder(self.config, wc.method):
            return []
        return [f"{self.results}/pretrain/{wc.method}/encoder.pt"]

    def eval_results(self) -> list[str]:
        """Every result file of the experiment grid."""
        config = self.config
        return [f"{self.results}/eval/{method}/{protocol}/{subset}.json"
                for method in config["experiment"]["methods"]
                for protocol in config["experiment"]["protocols"]
                for subset in eval_subsets(config, protocol)]

    def periodic_results(self) -> list[str]:
        """Every result file of the periodic-target grid (none without a `periodic` section)."""
        config = self.config
        if "periodic" not in config:
            return []
        return [f"{self.results}/periodic/{method}/{protocol}/{subset}.json"
                for method in config["periodic"]["methods"]
                for protocol in config["periodic"]["protocols"]
                for subset in eval_subsets(config, protocol, "periodic")]

    def periodic_outputs(self) -> dict:
        """The periodic-target tables and figures; the label-efficiency ones only when fraction or fold runs exist."""
        config, report = self.config, f"{self.results}/report"
        if "periodic" not in config:
            return {}
        outputs = {"periodic_csv": self.shown(f"{report}/periodic.csv", "periodic", "Periodic target"),
                   "periodic_md": f"{report}/periodic.md",
                   "periodic_figure": self.shown(f"{report}/periodic.png", "periodic", "Periodic target")}
        if any(subset != "all" for protocol in config["periodic"]["protocols"]
               for subset in eval_subsets(config, protocol, "periodic")):
            outputs["periodic_label_efficiency"] = self.shown(f"{report}/periodic_label_efficiency.csv",
                                                              "periodic_label_efficiency", "Periodic target")
            outputs["periodic_label_efficiency_figure"] = self.shown(f"{report}/periodic_label_efficiency.png",
                                                                     "periodic_label_efficiency", "Periodic target")
        return outputs

    def sleep_results(self) -> list[str]:
        return [f"{self.results}/sleep/{variant}/frac{fraction:g}/{pool}/seed{seed}.json"
                for variant, fraction, pool, seed in sleep_runs(self.config)]
