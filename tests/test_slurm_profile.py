"""The Slurm profile (profiles/slurm, found as `--profile slurm` at the repository root) and real Snakemake runs
through it.

There is no Slurm here: tests/slurm_stubs/ holds stand-in sbatch/sacct/squeue/sinfo/
scontrol/sacctmgr/scancel/srun that run each "cluster job" as a detached local process
and log every sbatch argv.  snakemake-executor-plugin-slurm submits, polls and collects
the jobs exactly as on a cluster, so the test checks what the profile + rule resources
turn into on the sbatch command line.

``run_with_slurm_stubs`` is reusable for the real workflow, e.g.::

    proc, calls = run_with_slurm_stubs(["-s", str(ROOT / "Snakefile"), "all"], workdir, tmp_path)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

# the stand-in sbatch's own option parser ('--name value', '--name=value', '-X value'), reused to read its calls
from slurm_stubs._slurm_stub import _opt

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm"
DEFAULT_PROFILE = ROOT / "profiles" / "default"
STUBS = Path(__file__).resolve().parent / "slurm_stubs"

# What the stubbed cluster accepts, and what the test exports for the profile's $VARs.
STUB_ACCOUNT = "physiossl"
STUB_CPU_PARTITION = "cpu"
STUB_GPU_PARTITION = "gpu"

# Make the plugin poll fast.  With the slurm plugin, polling runs every
# --slurm-init-seconds-before-status-checks seconds (default 40, min 1) while nothing is
# active or a poll has just seen a job finish; each poll that sees no job finish adds
# 10 s (capped at 180 s), so a job that is still running at the first poll costs ~11 s.
# --seconds-between-status-checks is only the interval before the plugin takes over.
FAST_POLLING = [
    "--seconds-between-status-checks", "1",
    "--slurm-init-seconds-before-status-checks", "1",
    "--max-status-checks-per-second", "10",
]


def run_with_slurm_stubs(
    args: list[str],
    workdir: Path,
    tmp_path: Path,
    *,
    env: dict[str, str | None] | None = None,
    partitions: Path = PROFILE / "partitions.yaml",
    timeout: float = 300,
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run ``snakemake --profile profiles/slurm`` with the Slurm stubs on PATH.

    ``args`` are extra snakemake arguments (e.g. ``["-s", snakefile, "target"]``);
    ``workdir`` is passed as ``--directory`` and is the process's cwd; stub state and the
    sbatch log live under ``tmp_path``.  ``env`` overrides environment variables (None
    unsets one); ``partitions`` is the plugin's partition file (the profile names it
    relative to the repository root).  Returns the completed process (stdout and stderr
    captured as text) and the argv of every sbatch call, in submission order.
    """
    workdir = Path(workdir).resolve()
    stub_dir = tmp_path / "slurm_stub_state"
    stub_log = tmp_path / "sbatch_calls.jsonl"
    stub_dir.mkdir(parents=True, exist_ok=True)

    run_env = {
        k: v
        for k, v in os.environ.items()
        # never let a real Slurm job context or a user's profile leak into the run
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))
        and k not in ("SNAKEMAKE_PROFILE", "SNAKEMAKE_SLURM_PARTITIONS")
    }
    run_env.update(
        PATH=f"{STUBS}{os.pathsep}{os.environ.get('PATH', '')}",
        SLURM_STUB_DIR=str(stub_dir),
        SLURM_STUB_LOG=str(stub_log),
        SLURM_STUB_ACCOUNTS=STUB_ACCOUNT,
        SLURM_STUB_PARTITIONS=f"{STUB_CPU_PARTITION}*,{STUB_GPU_PARTITION}",
        PHYSIOSSL_SLURM_ACCOUNT=STUB_ACCOUNT,
        PYTHONUNBUFFERED="1",
    )
    for k, v in (env or {}).items():
        if v is None:
            run_env.pop(k, None)
        else:
            run_env[k] = v

    cmd = [
        sys.executable, "-m", "snakemake",
        "--profile", str(PROFILE),
        "--slurm-partition-config", str(Path(partitions).resolve()),
        "--directory", str(workdir),
        *FAST_POLLING,
        *map(str, args),
    ]
    proc = subprocess.run(
        cmd, cwd=workdir, env=run_env, capture_output=True, text=True, timeout=timeout
    )
    calls = []
    if stub_log.exists():
        calls = [json.loads(line)["argv"] for line in stub_log.read_text().splitlines() if line]
    return proc, calls


def _calls_for_rule(calls: list[list[str]], rule: str) -> list[list[str]]:
    # the plugin puts "rule_<name>" (plus "_wildcards_..." if any) into --comment
    return [
        c for c in calls
        if (_opt(c, "--comment") or "").split("_wildcards_")[0] == f"rule_{rule}"
    ]


# --------------------------------------------------------------------------- profile


def test_slurm_profile_parses_and_maps_resources():
    cfg = yaml.safe_load((PROFILE / "config.yaml").read_text())

    assert cfg["executor"] == "slurm"
    assert isinstance(cfg["jobs"], int) and cfg["jobs"] >= 1
    assert cfg["latency-wait"] >= 5
    assert cfg["retries"] == 1
    assert cfg["rerun-incomplete"] is True
    assert cfg["show-failed-logs"] is True
    assert cfg["slurm-delete-logfiles-older-than"] == 0  # failed jobs' Slurm logs are never deleted
    # partitions are chosen by the plugin from the jobs' resources: no rule and no partition is named here
    assert cfg["slurm-partition-config"] == "profiles/slurm/partitions.yaml"
    assert "set-resources" not in cfg

    defaults = cfg["default-resources"]
    assert defaults["slurm_account"] == "$PHYSIOSSL_SLURM_ACCOUNT"
    assert "slurm_partition" not in defaults
    assert isinstance(defaults["runtime"], int) and defaults["runtime"] > 0
    # GPUs are requested by the rules, never by default
    assert not {"gpu", "gpus", "gres", "gpu_model"} & set(defaults)

    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    partitions = {p.name: p.limits for p in read_partition_file(ROOT / cfg["slurm-partition-config"])}
    assert partitions["gpu"].max_gpu > 0 and partitions["cpu"].max_gpu == 0

    # Snakemake's own profile parser accepts the file and yields CLI-style values
    from snakemake.profiles import ProfileConfigFileParser

    with open(PROFILE / "config.yaml") as fh:
        parsed = ProfileConfigFileParser().parse(fh)
    assert parsed["executor"] == "slurm"
    assert "slurm_account=$PHYSIOSSL_SLURM_ACCOUNT" in parsed["default-resources"]


def test_default_profile_parses():
    cfg = yaml.safe_load((DEFAULT_PROFILE / "config.yaml").read_text())
    assert cfg == {
        "cores": "all",
        "printshellcmds": True,
        "rerun-incomplete": True,
        "show-failed-logs": True,
        "keep-going": False,
    }


def shipped_configs(tmp_path: Path) -> dict[str, Path]:
    """Every workflow config under config/, the paper sleep config with its home-recordings folder present (it
    reads the user's own recordings from a local folder)."""
    configs = {p.stem: p for p in sorted((ROOT / "config").glob("*.yaml")) if p.stem != "schema"}
    home = tmp_path / "home_recordings"
    home.mkdir()
    sleep = yaml.safe_load(configs["paper_sleep"].read_text())
    sleep["datasets"]["home"]["local"] = str(home)
    configs["paper_sleep"] = tmp_path / "paper_sleep.yaml"
    configs["paper_sleep"].write_text(yaml.safe_dump(sleep, sort_keys=False))
    return configs


def test_profile_is_found_by_name_at_the_repository_root_for_every_shipped_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name, config in shipped_configs(tmp_path).items():
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "--configfile",
                               str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{name}:\n{out[-3000:]}"
        assert "Using profiles slurm and workflow specific profile profiles/default" in out, f"{name}:\n{out[:2000]}"
        assert "Job stats:" in out or "Nothing to be done" in out, f"{name}:\n{out[-2000:]}"


class _Log:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda msg, *a, **k: self.lines.append(f"{level}: {msg}")


def sbatch_lines(configfile: Path) -> list[tuple[str, int, str]]:
    """(job, GPUs requested, the sbatch command line the Slurm plugin builds) for every job of a config's DAG,
    with the profile's partitions: the partition is the plugin's choice from the job's resources (or the job's own
    ``slurm_partition``), the rest the plugin's submit string and GPU options."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings
    from snakemake_executor_plugin_slurm import ExecutorSettings
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    partitions = read_partition_file(PROFILE / "partitions.yaml")
    settings, log, lines = ExecutorSettings(), _Log(), []
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, dryrun=True)) as api:
        workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1024),
                                    config_settings=ConfigSettings(configfiles=[configfile]),
                                    snakefile=ROOT / "Snakefile", workdir=ROOT)
        workflow = workflow_api.dag(dag_settings=DAGSettings(forceall=True)).workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        for job in workflow.dag.jobs:
            if job.rule.name in workflow._localrules or job.rule.norun:  # downloads, demo data, `all`: no sbatch
                continue
            partition = job.resources.get("slurm_partition") or get_best_partition(partitions, job, log)
            params = {"run_uuid": "uuid", "slurm_logfile": "job.log", "comment_str": f"rule_{job.name}",
                      "account": "-A acct", "partition": f"-p {partition}" if partition else "", "workdir": "."}
            call = get_submit_command(job, params, settings=settings) + set_gres_string(job)
            lines.append((f"{job.rule.name}{dict(job.wildcards_dict)}", int(job.resources.get("gpu", 0)), call))
    return lines


def test_every_gpu_job_of_every_shipped_config_is_sent_to_a_gpu_partition(tmp_path):
    """Whatever its rule: the partition follows the job's `gpu` resource."""
    gpu_rules = set()
    for name, config in shipped_configs(tmp_path).items():
        lines = sbatch_lines(config)
        assert lines, name
        for job, gpus, call in lines:
            argv = call.split()
            assert _opt(argv, "-p") == ("gpu" if gpus else "cpu"), f"{name} {job}: {call}"
            assert (f"--gpus={gpus}" in argv) == bool(gpus), f"{name} {job}: {call}"
            if gpus:
                gpu_rules.add(job.split("{")[0])
    # the training rules of the paper configs (pretraining, every evaluation, sleep training) all request GPUs
    assert {"pretrain", "evaluate", "evaluate_periodic", "train_sleep"} <= gpu_rules, gpu_rules


# --------------------------------------------------------------------------- real run

SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "report.txt"

    # a GPU rule that the profile does not name: its partition follows from its resources
    rule train_probe:
        output: "model.txt"
        resources: gpu=1, mem_mb=2000, runtime=30
        # SLURM_JOB_ID: set by (stub) sbatch; SLURM_GPUS: set by (stub) srun --gpus=1,
        # which the plugin's job step puts in front of the rule's command
        shell: "echo job=${{SLURM_JOB_ID:-none}} gpus=${{SLURM_GPUS:-none}} > {output}"

    rule report:
        input: "model.txt"
        output: "report.txt"
        shell: "cat {input} > {output} && echo report-done >> {output}"
    """
)


@pytest.mark.slow
def test_slurm_profile_runs_workflow_through_stub_cluster(tmp_path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    snakefile = workdir / "Snakefile"
    snakefile.write_text(SNAKEFILE)

    # the cluster's partitions, written by the plugin's own tool from (stub) `scontrol show partition`
    partitions = tmp_path / "partitions.yaml"
    gen = subprocess.run([str(Path(sys.executable).parent / "generate-slurm-partition-config"), "-o", str(partitions)],
                         env=dict(os.environ, PATH=f"{STUBS}{os.pathsep}{os.environ.get('PATH', '')}"),
                         capture_output=True, text=True, timeout=60)
    assert gen.returncode == 0, gen.stderr
    assert yaml.safe_load(partitions.read_text())["partitions"]["gpu"]["max_gpu"] == 8

    t0 = time.monotonic()
    proc, calls = run_with_slurm_stubs(["-s", snakefile, "all"], workdir, tmp_path, partitions=partitions)
    elapsed = time.monotonic() - t0
    log = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n--- sbatch calls\n{calls}"
    assert proc.returncode == 0, log

    # outputs were made inside the "cluster" jobs, the GPU one in a step with one GPU
    model = (workdir / "model.txt").read_text()
    assert re.fullmatch(r"job=\d+ gpus=1\n", model), model
    assert (workdir / "report.txt").read_text() == model + "report-done\n"

    # one submission per rule (the target rule 'all' is local)
    assert len(calls) == 2, log
    (gpu_call,) = _calls_for_rule(calls, "train_probe")
    (cpu_call,) = _calls_for_rule(calls, "report")

    # rule resources -> sbatch flags (the exact form the plugin emits)
    assert "--gpus=1" in gpu_call, gpu_call
    assert _opt(gpu_call, "--mem") == "2000", gpu_call
    assert _opt(gpu_call, "-t", "--time") == "30", gpu_call
    assert _opt(gpu_call, "-p", "--partition") == STUB_GPU_PARTITION, gpu_call
    assert _opt(gpu_call, "-A", "--account") == STUB_ACCOUNT, gpu_call
    assert "--parsable" in gpu_call

    assert not any(a.startswith(("--gpus", "--gres", "-G")) for a in cpu_call), cpu_call
    assert _opt(cpu_call, "-p", "--partition") == STUB_CPU_PARTITION, cpu_call
    assert _opt(cpu_call, "-A", "--account") == STUB_ACCOUNT, cpu_call
    assert _opt(cpu_call, "-t", "--time") == "120", cpu_call  # profile default runtime
    assert "--ntasks=1" in cpu_call
    assert _opt(cpu_call, "--mem") is not None  # Snakemake's default mem_mb

    # the GPU job ran first and the CPU job after it (dependency respected)
    assert calls.index(gpu_call) < calls.index(cpu_call)
    assert elapsed < 120, f"took {elapsed:.0f}s"


@pytest.mark.slow
def test_slurm_profile_unset_account_variable_fails_clearly(tmp_path):
    """An unset $PHYSIOSSL_SLURM_ACCOUNT is not expanded: the submission is refused
    before anything runs, naming the variable (as the profile's comments say)."""
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(
        'rule report:\n    output: "r.txt"\n    shell: "touch {output}"\n'
    )
    proc, calls = run_with_slurm_stubs(
        ["--retries", "0"], workdir, tmp_path, env={"PHYSIOSSL_SLURM_ACCOUNT": None}
    )
    assert proc.returncode != 0
    assert calls == []
    assert "$PHYSIOSSL_SLURM_ACCOUNT appears to be invalid" in proc.stderr, proc.stderr
    assert not (workdir / "r.txt").exists()


@pytest.mark.slow
def test_failed_job_keeps_its_slurm_log_and_its_log_is_shown(tmp_path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(textwrap.dedent(
        """
        rule all:
            input: "ok.txt", "broken.txt"

        rule ok:
            output: "ok.txt"
            log: "logs/ok.log"
            shell: "echo fine > {log}; touch {output}"

        rule broken:
            output: "broken.txt"
            log: "logs/broken.log"
            shell: "echo the-reason-it-failed > {log}; exit 3"
        """))
    proc, calls = run_with_slurm_stubs(["--retries", "0", "--keep-going"], workdir, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and len(calls) == 2, out
    slurm_logs = workdir / ".snakemake" / "slurm_logs"
    assert list((slurm_logs / "rule_broken").glob("*.log")), out   # the failed job's Slurm log is kept
    assert not list((slurm_logs / "rule_ok").glob("*.log")), out    # the successful one's is not
    assert "the-reason-it-failed" in out                            # show-failed-logs: the rule's log is printed
