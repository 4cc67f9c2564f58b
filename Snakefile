# physiossl workflow: download/demo → convert → pretrain → evaluate → report (ECG, section `experiment`) and
# download/demo → convert-sleep → train-sleep → sleep report (sleep sound, section `sleep`).
# The DAG is defined here and in workflow/rules/*.smk only; `physiossl export-dvc` derives dvc.yaml from it.
#   snakemake --cores all                                   # the offline demo (config/config.yaml)
#   snakemake --cores all --configfile config/paper_ecg.yaml
#   snakemake --cores all --configfile config/demo_sleep.yaml           # the sleep-staging demo
#   snakemake --profile slurm --configfile config/paper_ecg.yaml            # on a Slurm cluster (profiles/slurm)
import os
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from physiossl.config import pretrain_members, pretrained_methods, sleep_datasets, stage_view, validate_config
from physiossl.methods import METHODS
from physiossl.models import SLEEP_MODELS
from physiossl.pipeline import Pipeline, flag, one_of
from physiossl.variants import VARIANTS

min_version("9.0")

if len(workflow.overwrite_configfiles) > 1:
    raise WorkflowError("pass exactly one --configfile: every job reads its settings from that one file")
if workflow.config_settings.config:
    raise WorkflowError("--config overrides are not passed to the jobs, which read the config file: "
                        "copy the config file and edit the copy instead")
CONFIGFILE = (os.path.relpath(workflow.overwrite_configfiles[0]) if workflow.overwrite_configfiles
              else "config/config.yaml")


# Snakemake has read a --configfile already
if not workflow.overwrite_configfiles:

    configfile: CONFIGFILE


# the schema (src/physiossl/schema.yaml) and the checks across keys, each problem named by its config key; the config
# is left as written (a key it leaves out takes the default of the code that reads it, in every job alike)
validate_config(config, CONFIGFILE)

DATA = config["paths"]["data"]
RESULTS = config["paths"]["results"]

# every job writes its output to its log: file; progress bars there refresh at most once a minute (jobs inherit
# the environment, on a cluster too)
os.environ.setdefault("TQDM_MININTERVAL", "60")


report: "workflow/report/workflow.rst"


# paths, grids, resources, logs, benchmarks and code inputs of the rules (physiossl.pipeline)
P = Pipeline(config, report=report, basedir=workflow.basedir)


include: "workflow/rules/data.smk"


if "experiment" in config:

    include: "workflow/rules/pretrain.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/periodic.smk"
    include: "workflow/rules/report.smk"


if "sleep" in config:

    include: "workflow/rules/sleep.smk"


localrules:
    all,
    demo_data,
    download_data,


rule all:
    default_target: True
    input:
        rules.report.output if "experiment" in config else [],
        rules.sleep_report.output if "sleep" in config else [],
