"""What a run leaves to look at: one log file and one benchmark file per job, `snakemake --lint` clean but for what
the project decided against (docs/cluster.md, "Logs, benchmarks and the report"), and the `--log` option the rules
use."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# the lints the project has decided against, in writing (docs/cluster.md): the jobs run the one installed physiossl
# environment, which a cluster job inherits, instead of a conda environment or container per rule
DECIDED_AGAINST = {"Specify a conda environment or container for each rule."}

# between them, these configs use every rule of the workflow
CONFIGS = ("config/config.yaml", "config/demo_periodic.yaml", "config/demo_sleep.yaml")


def snakemake(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("configfile", CONFIGS)
def test_lint_reports_nothing_but_what_the_project_decided_against(configfile):
    proc = snakemake("--lint", "--configfile", configfile)
    out = proc.stdout + proc.stderr
    lints = set(re.findall(r"(?m)^    \* (.+?):$", out))
    assert lints, out[-2000:]  # the decided lint is reported, so the parsing above reads the real output
    assert lints <= DECIDED_AGAINST, sorted(lints - DECIDED_AGAINST)


def _rules(configfile: str) -> list:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, dryrun=True)) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                config_settings=ConfigSettings(configfiles=[ROOT / configfile]),
                                snakefile=ROOT / "Snakefile", workdir=ROOT)._workflow
        return [(rule.name, rule.shellcmd, list(rule.log), rule.benchmark) for rule in workflow.rules]


def test_every_rule_that_runs_a_command_has_a_log_and_a_benchmark():
    seen = set()
    for configfile in CONFIGS:
        for name, shellcmd, logs, benchmark in _rules(configfile):
            if not shellcmd:
                continue
            seen.add(name)
            assert len(logs) == 1 and str(logs[0]).endswith(".log"), name
            assert "/logs/" in str(logs[0]) and benchmark and "/benchmarks/" in str(benchmark), name
            assert shellcmd.startswith("physiossl --log {log:q} "), (name, shellcmd)
    assert {"demo_data", "download_data", "convert", "pretrain", "evaluate", "evaluate_periodic", "report",
            "convert_sleep", "train_sleep", "sleep_report"} <= seen, seen


def test_log_option_appends_each_run_with_a_header(tmp_path):
    log = tmp_path / "logs" / "check" / "job.log"
    for _ in range(2):
        proc = subprocess.run([str(BIN / "physiossl"), "--log", str(log), "check-config", "config/config.yaml"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "" and proc.stderr == ""  # all of it went to the log
    text = log.read_text()
    headers = re.findall(r"(?m)^==== \S+ physiossl --log \S+ check-config config/config.yaml$", text)
    assert len(headers) == 2, text
    assert text.count('"valid": true') == 2, text  # the command's result, after each header


def test_log_option_keeps_the_error_of_a_failed_run(tmp_path):
    log = tmp_path / "job.log"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnot_a_key: 1\n")
    proc = subprocess.run([str(BIN / "physiossl"), "--log", str(log), "check-config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "physiossl: error:" in log.read_text() and str(bad) in log.read_text()
