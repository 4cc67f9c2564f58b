"""The Slurm profile (workflow/profiles/slurm) driven through a real Snakemake run.

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
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
DEFAULT_PROFILE = ROOT / "workflow" / "profiles" / "default"
STUBS = Path(__file__).resolve().parent / "slurm_stubs"

GPU_RULES = {"pretrain", "evaluate"}
CPU_RULES = {"demo_data", "download_data", "convert", "report"}

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
    timeout: float = 300,
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run ``snakemake --profile workflow/profiles/slurm`` with the Slurm stubs on PATH.

    ``args`` are extra snakemake arguments (e.g. ``["-s", snakefile, "target"]``);
    ``workdir`` is passed as ``--directory`` and is the process's cwd; stub state and the
    sbatch log live under ``tmp_path``.  ``env`` overrides environment variables (e.g. a
    different PHYSIOSSL_SLURM_GPU_PARTITION; None unsets one).  Returns the completed
    process (stdout and stderr captured as text) and the argv of every sbatch call, in
    submission order.
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
        PHYSIOSSL_SLURM_PARTITION=STUB_CPU_PARTITION,
        PHYSIOSSL_SLURM_GPU_PARTITION=STUB_GPU_PARTITION,
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
    assert cfg["printshellcmds"] is True

    defaults = cfg["default-resources"]
    assert defaults["slurm_account"] == "$PHYSIOSSL_SLURM_ACCOUNT"
    assert defaults["slurm_partition"] == "$PHYSIOSSL_SLURM_PARTITION"
    assert isinstance(defaults["runtime"], int) and defaults["runtime"] > 0
    # GPUs are requested by the rules, never by default
    assert not {"gpu", "gpus", "gres", "gpu_model"} & set(defaults)

    set_res = cfg.get("set-resources") or {}
    assert set(set_res) <= GPU_RULES | CPU_RULES, "set-resources names an unknown rule"
    for rule in GPU_RULES:
        assert set_res[rule]["slurm_partition"] == "$PHYSIOSSL_SLURM_GPU_PARTITION"
    # gpu/mem_mb/runtime are declared in the rules, not duplicated in the profile
    for rule, res in set_res.items():
        assert not {"gpu", "mem_mb", "runtime"} & set(res), rule

    # slurm_extra must not contain anything the plugin sets itself (--gpus, --mem, -t, ...)
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    extras = [defaults.get("slurm_extra")] + [r.get("slurm_extra") for r in set_res.values()]
    for extra in filter(None, extras):
        for pattern, what in get_forbidden_slurm_options().items():
            assert not re.search(pattern, str(extra)), f"slurm_extra sets {what}: {extra}"

    # Snakemake's own profile parser accepts the file and yields CLI-style values
    from snakemake.profiles import ProfileConfigFileParser

    with open(PROFILE / "config.yaml") as fh:
        parsed = ProfileConfigFileParser().parse(fh)
    assert parsed["executor"] == "slurm"
    assert "slurm_account=$PHYSIOSSL_SLURM_ACCOUNT" in parsed["default-resources"]
    assert "pretrain:slurm_partition=$PHYSIOSSL_SLURM_GPU_PARTITION" in parsed["set-resources"]


def test_default_profile_parses():
    cfg = yaml.safe_load((DEFAULT_PROFILE / "config.yaml").read_text())
    assert cfg == {
        "cores": "all",
        "printshellcmds": True,
        "rerun-incomplete": True,
        "keep-going": False,
    }


# --------------------------------------------------------------------------- real run

SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "report.txt"

    # named like the workflow's GPU rule, so the profile's set-resources apply
    rule pretrain:
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

    t0 = time.monotonic()
    proc, calls = run_with_slurm_stubs(["-s", snakefile, "all"], workdir, tmp_path)
    elapsed = time.monotonic() - t0
    log = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n--- sbatch calls\n{calls}"
    assert proc.returncode == 0, log

    # outputs were made inside the "cluster" jobs, the GPU one in a step with one GPU
    model = (workdir / "model.txt").read_text()
    assert re.fullmatch(r"job=\d+ gpus=1\n", model), model
    assert (workdir / "report.txt").read_text() == model + "report-done\n"

    # one submission per rule (the target rule 'all' is local)
    assert len(calls) == 2, log
    (gpu_call,) = _calls_for_rule(calls, "pretrain")
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
