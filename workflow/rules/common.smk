# Helpers shared by the rules, which the other files hold: the code a job runs as its input (a code change reruns
# exactly the jobs that run that code), dataset and result paths, wildcard constraints, log and benchmark files.
import re
import shlex
from pathlib import Path

from physiossl.codedeps import code_files
from physiossl.data.sources import SOURCES, source_kind
from physiossl.methods import METHODS
from physiossl.models import ENCODERS, SLEEP_MODELS
from physiossl.variants import VARIANTS


def code(*modules):
    """The job's code inputs: the import closure of ``modules`` (its stage module and the plugins it loads by name;
    physiossl.codedeps says what counts)."""
    return code_files(*modules)


def source_module(dataset):
    return SOURCES[source_of(dataset)].module


def encoder_module(method):
    """The encoder a pretraining or evaluation job of ``method`` builds."""
    encoder = random_init_encoder(config, method) or config["pretrain"]["methods"][method].get(
        "encoder", config["pretrain"]["encoder"])
    return ENCODERS[encoder].module


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


def flag(name, paths):
    """``name`` and the shell-quoted paths for a command line, or nothing when there are none (every value of a
    command line is quoted: paths with spaces or shell characters stay one argument)."""
    return " ".join([name, *map(shlex.quote, map(str, paths))]) if paths else ""


def shown(path, caption, category):
    """An output that `snakemake --report` shows, with the caption workflow/report/<caption>.rst."""
    return report(path, caption=os.path.join(workflow.basedir, "workflow", "report", f"{caption}.rst"), category=category)


def logfile(job):
    """The log of a job, ``logs/<rule>/<job>.log`` under the results folder: everything its command prints (progress
    bars refresh at most once a minute there: TQDM_MININTERVAL, set by the Snakefile)."""
    return f"{RESULTS}/logs/{job}.log"


def pretrained(wc):
    return [] if random_init_encoder(config, wc.method) else [f"{RESULTS}/pretrain/{wc.method}/encoder.pt"]


def eval_results():
    """Every result file of the experiment grid."""
    return [f"{RESULTS}/eval/{method}/{protocol}/{subset}.json"
            for method in config["experiment"]["methods"]
            for protocol in config["experiment"]["protocols"]
            for subset in eval_subsets(config, protocol)]


def periodic_results():
    """Every result file of the periodic-target grid (none without a `periodic` section)."""
    if "periodic" not in config:
        return []
    return [f"{RESULTS}/periodic/{method}/{protocol}/{subset}.json"
            for method in config["periodic"]["methods"]
            for protocol in config["periodic"]["protocols"]
            for subset in eval_subsets(config, protocol, "periodic")]


def periodic_outputs():
    """The periodic-target tables and figures; the label-efficiency ones only when fraction or fold runs exist."""
    if "periodic" not in config:
        return {}
    outputs = {"periodic_csv": shown(f"{RESULTS}/report/periodic.csv", "periodic", "Periodic target"),
               "periodic_md": f"{RESULTS}/report/periodic.md",
               "periodic_figure": shown(f"{RESULTS}/report/periodic.png", "periodic", "Periodic target")}
    if any(subset != "all" for protocol in config["periodic"]["protocols"]
           for subset in eval_subsets(config, protocol, "periodic")):
        outputs["periodic_label_efficiency"] = shown(f"{RESULTS}/report/periodic_label_efficiency.csv",
                                                     "periodic_label_efficiency", "Periodic target")
        outputs["periodic_label_efficiency_figure"] = shown(f"{RESULTS}/report/periodic_label_efficiency.png",
                                                            "periodic_label_efficiency", "Periodic target")
    return outputs


def sleep_store_path(dataset):
    return f"{DATA}/stores/{dataset}_sleep.zarr"


def sleep_results():
    return [f"{RESULTS}/sleep/{variant}/frac{fraction:g}/{pool}/seed{seed}.json"
            for variant, fraction, pool, seed in sleep_runs(config)]
