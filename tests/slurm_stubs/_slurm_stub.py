"""Stand-in Slurm commands for tests: no cluster, each "job" is a detached local process.

The executables next to this file (sbatch, sacct, squeue, sinfo, scontrol, sacctmgr,
scancel, srun) are thin wrappers around ``main()``.  With this directory first on PATH,
snakemake-executor-plugin-slurm (2.x) submits, polls and cancels jobs as on a cluster.
Only what the plugin calls is implemented:

  sbatch --parsable --job-name <uuid> --output <log> -A <acct> -p <part> -D <dir>
         [--gpus=N] ... --wrap="<cmd>"   (or a script on /dev/stdin)
                            -> prints the job id, runs <cmd> detached with sh
  sacct ... --name <uuid>   -> "<jobid>|<STATE>" per job (squeue: the same)
  sacctmgr ... list user    -> the accounts, one per line (account validation)
  sinfo -o %P               -> the partitions, default one marked with '*'
  scontrol show config      -> MaxArraySize and MinJobAge
  scontrol show partition   -> the partitions' limits, GPUs in TRES ($SLURM_STUB_GPUS)
  scancel <jobid>...        -> kills the job's process group
  srun [options] cmd ...    -> exports SLURM_GPUS / SLURM_CPUS_PER_TASK, execs cmd

Environment: $SLURM_STUB_DIR holds the state (default: a per-user temp dir),
$SLURM_STUB_LOG gets one JSON line {"argv": [...], "jobid": N} per accepted sbatch call,
$SLURM_STUB_ACCOUNTS (default "physiossl") and $SLURM_STUB_PARTITIONS (default "cpu*,gpu",
'*' marks the default partition) are comma-separated lists that sbatch enforces.

State per job in $SLURM_STUB_DIR: <id>.json {"name", "pid"} and, once it has ended,
<id>.rc holding the exit status (or "CANCELLED").  Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

STATE_DIR = Path(
    os.environ.get("SLURM_STUB_DIR")
    or os.path.join(tempfile.gettempdir(), f"slurm_stub_{os.getuid()}")
)
FIRST_JOBID = 1000

# Body of a job, run by `sh -c` in a new session: run the batch script ($1), then record
# its exit status in $2.rc (via rename, so that sacct never reads a half-written file).
JOB_RUNNER = 'sh -c "$1"; echo $? > "$2.tmp" && mv "$2.tmp" "$2.rc"'


def _env_list(var: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(var, default).split(",") if x.strip()]


def _opt(argv: list[str], *names: str) -> str | None:
    """Value of an option given as '--name value', '--name=value' or '-X value'."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def _fail(prog: str, msg: str) -> int:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return 1


def _job(jobid: str) -> dict:
    """The job's record; {} if unknown or still being written by sbatch."""
    try:
        return json.loads((STATE_DIR / f"{jobid}.json").read_text())
    except (OSError, ValueError):
        return {}


def _state(jobid: str) -> str:
    try:
        rc = (STATE_DIR / f"{jobid}.rc").read_text().strip()
    except FileNotFoundError:
        return "RUNNING"  # no queue: a job runs as soon as it is submitted
    return {"0": "COMPLETED", "CANCELLED": "CANCELLED"}.get(rc, "FAILED")


def sbatch(argv: list[str]) -> int:
    # refuse what the stub cluster does not have, as Slurm would
    account, partition = _opt(argv, "-A", "--account"), _opt(argv, "-p", "--partition")
    accounts = [a.lower() for a in _env_list("SLURM_STUB_ACCOUNTS", "physiossl")]
    if account is not None and account.lower() not in accounts:
        return _fail("sbatch", "Batch job submission failed: Invalid account or "
                     "account/partition combination specified")
    partitions = [p.rstrip("*") for p in _env_list("SLURM_STUB_PARTITIONS", "cpu*,gpu")]
    if partition is not None and partition not in partitions:
        return _fail("sbatch", "Batch job submission failed: Invalid partition name "
                     "specified")
    if _opt(argv, "-a", "--array"):
        return _fail("sbatch", "--array is not supported by the Slurm stub")

    # The plugin passes the command with --wrap, or (pass_command_as_script) as a script
    # on /dev/stdin, the last argument.
    script = _opt(argv, "--wrap")
    if script is None:
        with open(argv[-1]) as fh:
            script = fh.read()

    # Claim the next free job id: O_EXCL makes concurrent sbatch calls (the plugin
    # submits from a thread pool) get distinct ids.
    jobid = FIRST_JOBID
    while True:
        try:
            fd = os.open(STATE_DIR / f"{jobid}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            break
        except FileExistsError:
            jobid += 1

    # Start the job detached, as a cluster would: new session, stdout+stderr to the
    # --output file (relative to -D), nothing inherited from our pipes (the plugin
    # reads sbatch's stdout until EOF).
    workdir = _opt(argv, "-D", "--chdir") or os.getcwd()
    output = (_opt(argv, "-o", "--output") or "slurm-%j.out").replace("%j", str(jobid))
    env = dict(os.environ, SLURM_JOB_ID=str(jobid), SLURM_JOBID=str(jobid))
    if _opt(argv, "--gpus"):
        env["SLURM_GPUS"] = _opt(argv, "--gpus")  # the jobstep plugin reads it
    with open(Path(workdir, output), "w") as out:
        proc = subprocess.Popen(
            ["sh", "-c", JOB_RUNNER, "slurm-job", script, str(STATE_DIR / str(jobid))],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=workdir, env=env, start_new_session=True,
        )
    tmp = STATE_DIR / f"{jobid}.json.tmp"
    tmp.write_text(json.dumps({"name": _opt(argv, "-J", "--job-name"), "pid": proc.pid}))
    os.replace(tmp, STATE_DIR / f"{jobid}.json")

    log = os.environ.get("SLURM_STUB_LOG")
    if log:  # one O_APPEND write per line, so concurrent sbatch calls do not interleave
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, (json.dumps({"argv": argv, "jobid": jobid}) + "\n").encode())
        os.close(fd)

    print(jobid if "--parsable" in argv else f"Submitted batch job {jobid}")
    return 0


def sacct(argv: list[str]) -> int:
    """`sacct -X --parsable2 --noheader --format=JobIdRaw,State ... --name <uuid>` (and
    `squeue --format=%i|%T --noheader --name <uuid>`): one "<jobid>|<STATE>" line per job
    of that name.  Other queries (failure reasons, account guessing) get no rows."""
    name = _opt(argv, "--name")
    for path in sorted(STATE_DIR.glob("*.json"), key=lambda p: int(p.stem)):
        if name and _job(path.stem).get("name") == name:
            print(f"{path.stem}|{_state(path.stem)}")
    return 0


def sacctmgr(argv: list[str]) -> int:
    # `sacctmgr -n -s list user <user> format=account%256`: the user's accounts
    print("\n".join(_env_list("SLURM_STUB_ACCOUNTS", "physiossl")))
    return 0


def sinfo(argv: list[str]) -> int:
    # `sinfo -o %P`: header, then one partition per line, the default one marked '*'
    print("\n".join(["PARTITION", *_env_list("SLURM_STUB_PARTITIONS", "cpu*,gpu")]))
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:2] == ["show", "config"]:
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")
        return 0
    if argv[:2] == ["show", "partition"]:
        # the multi-line form of a real `scontrol show partition`, one block per partition of
        # $SLURM_STUB_PARTITIONS, with the GPUs of $SLURM_STUB_GPUS ("<partition>=<gpus>", default "gpu=8")
        gpus = dict(item.split("=") for item in _env_list("SLURM_STUB_GPUS", "gpu=8"))
        for part in _env_list("SLURM_STUB_PARTITIONS", "cpu*,gpu"):
            name = part.rstrip("*")
            tres = "cpu=128,mem=1000G,node=2,billing=128" + (f",gres/gpu={gpus[name]}" if name in gpus else "")
            print(f"PartitionName={name}\n"
                  "   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL\n"
                  f"   Default={'YES' if part.endswith('*') else 'NO'} QoS=N/A\n"
                  "   MaxNodes=UNLIMITED MaxTime=2-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED\n"
                  "   State=UP TotalCPUs=128 TotalNodes=2 SelectTypeParameters=NONE\n"
                  f"   TRES={tres}\n")
        return 0
    return _fail("scontrol", f"stub does not implement: scontrol {' '.join(argv)}")


def scancel(argv: list[str]) -> int:
    rc = 0
    for jobid in (a for a in argv if not a.startswith("-")):  # skip --clusters=all
        job = _job(jobid)
        if not job:
            rc = _fail("scancel", f"Invalid job id {jobid}")
        elif not (STATE_DIR / f"{jobid}.rc").exists():  # still running
            try:
                os.killpg(job["pid"], signal.SIGTERM)  # its own session: pgid == pid
            except ProcessLookupError:
                pass
            (STATE_DIR / f"{jobid}.rc").write_text("CANCELLED\n")
    return rc


# srun options whose value a real srun exports to the step's environment
SRUN_ENV = {"--gpus": "SLURM_GPUS", "--cpus-per-task": "SLURM_CPUS_PER_TASK"}


def srun(argv: list[str]) -> int:
    """`srun -n1 --cpu-bind=q --cpus-per-task=N [--gpus=N] --nodes=1 cmd ...` (the
    jobstep plugin's form: every option is one argument): export, then exec cmd."""
    i = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    options, cmd = argv[:i], argv[i:]
    if not cmd:
        return _fail("srun", "no command given")
    for opt, var in SRUN_ENV.items():
        if _opt(options, opt):
            os.environ[var] = _opt(options, opt)
    os.execvp(cmd[0], cmd)


COMMANDS = {"sbatch": sbatch, "sacct": sacct, "squeue": sacct, "sacctmgr": sacctmgr,
            "sinfo": sinfo, "scontrol": scontrol, "scancel": scancel, "srun": srun}


def main(prog: str, argv: list[str]) -> int:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    return COMMANDS[prog](argv)
