"""Stand-in Slurm commands for tests: no cluster, just local background processes.

The executables next to this file (sbatch, sacct, squeue, scontrol, sacctmgr, sinfo,
scancel, srun) are thin wrappers around ``main()`` below.  Put this directory first on
PATH and snakemake-executor-plugin-slurm will submit, poll and cancel jobs as on a real
cluster, while the jobs actually run as detached processes on this machine.

Behaviour is modelled on what the plugin (v2.x) calls and parses:

* ``sbatch --parsable ... --wrap="cmd"`` (or a script path / ``/dev/stdin``) prints
  ``<jobid>`` (``<jobid>;<cluster>`` with ``--clusters``), runs the job detached with
  stdout/stderr to ``--output``/``--error`` (placeholders %j %A %a %x %u %%), in the
  ``-D``/``--chdir`` directory, with SLURM_JOB_ID, SLURM_GPUS, ... in its environment.
  Every call is logged as one JSON line ``{"argv": [...], "jobid": ...}`` to
  ``$SLURM_STUB_LOG``.  ``--array`` and ``--wait`` are supported.
* ``sacct`` answers ``-X --parsable2 --noheader --format=JobIdRaw,State --name <run>``
  (and other field lists / ``-j`` filters) from the recorded job states
  PENDING -> RUNNING -> COMPLETED | FAILED | CANCELLED.
* ``squeue``, ``sinfo``, ``scontrol show config|partition|job``, ``sacctmgr list user``,
  ``scancel`` answer the plugin's queries.
* ``srun [options] cmd ...`` drops its options and execs ``cmd`` (the job step).

State lives in ``$SLURM_STUB_DIR`` (default: a per-user directory under the system temp
dir).  Accounts and partitions can be configured with ``$SLURM_STUB_ACCOUNTS``
(comma-separated, default ``physiossl``) and ``$SLURM_STUB_PARTITIONS``
(comma-separated, default partition marked with ``*``, default ``cpu*,gpu``).
``$SLURM_STUB_PENDING_SECONDS`` keeps a job PENDING for that long before it starts.
Only the standard library is used, so any python3 on PATH will do.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

CLUSTER = "stubcluster"
FIRST_JOBID = 1000
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


# --------------------------------------------------------------------------- helpers


def _err(prog: str, msg: str, rc: int = 1) -> int:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return rc


def state_dir() -> Path:
    d = os.environ.get("SLURM_STUB_DIR") or os.path.join(
        tempfile.gettempdir(), f"slurm_stub_{os.getuid()}"
    )
    p = Path(d)
    (p / "jobs").mkdir(parents=True, exist_ok=True)
    return p


def accounts() -> list[str]:
    raw = os.environ.get("SLURM_STUB_ACCOUNTS", "physiossl")
    return [a.strip() for a in raw.split(",") if a.strip()]


def partitions() -> list[tuple[str, bool]]:
    """[(name, is_default)]"""
    raw = os.environ.get("SLURM_STUB_PARTITIONS", "cpu*,gpu")
    out = []
    for p in raw.split(","):
        p = p.strip()
        if p:
            out.append((p.rstrip("*"), p.endswith("*")))
    return out


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def next_jobid() -> int:
    d = state_dir()
    with _locked(d / "jobid.lock"):
        counter = d / "next_jobid"
        try:
            jobid = int(counter.read_text().strip())
        except (OSError, ValueError):
            jobid = FIRST_JOBID
        counter.write_text(str(jobid + 1))
    return jobid


def job_path(jobid: str) -> Path:
    return state_dir() / "jobs" / f"{jobid}.json"


def task_state_path(task_id: str) -> Path:
    """task_id is '<jobid>' or '<jobid>_<arrayindex>'."""
    return state_dir() / "jobs" / f"{task_id}.state"


def set_state(task_id: str, state: str, **extra) -> None:
    path = task_state_path(task_id)
    with _locked(path.with_suffix(".lock")):
        data = _read_json(path) or {}
        if data.get("state") in FINAL_STATES and state not in FINAL_STATES:
            return  # e.g. cancelled before it started
        if data.get("state") == "CANCELLED":
            return  # cancellation wins
        data.update(extra)
        data["state"] = state
        data.setdefault("submit", time.time())
        if state == "RUNNING":
            data["start"] = time.time()
        if state in FINAL_STATES:
            data["end"] = time.time()
        _write_json(path, data)


def all_tasks() -> list[tuple[dict, str, dict]]:
    """[(job record, task id, state record)] for every recorded job/task."""
    out = []
    jobs_dir = state_dir() / "jobs"
    for jp in sorted(jobs_dir.glob("*.json"), key=lambda p: int(p.stem)):
        job = _read_json(jp)
        if not job:
            continue
        for tid in job["tasks"]:
            st = _read_json(task_state_path(tid)) or {"state": "PENDING"}
            out.append((job, tid, st))
    return out


def _parse_options(argv, long_valued, short_valued):
    """Minimal getopt-like parser.

    Returns (opts, positional) where opts is a list of (name, value) with long names
    without dashes ('mem') or short names ('t').  Long options not in ``long_valued``
    are flags; short letters in ``short_valued`` take a value (attached or next arg),
    other short letters are flags and may be clustered ('-nX').
    Parsing stops at the first positional argument or at '--'.
    """
    opts: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return opts, argv[i + 1 :]
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a[2:].partition("=")
            if eq:
                opts.append((name, val))
            elif name in long_valued:
                if i + 1 >= len(argv):
                    raise ValueError(f"option '--{name}' requires an argument")
                opts.append((name, argv[i + 1]))
                i += 1
            else:
                opts.append((name, None))
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                c = a[j]
                if c in short_valued:
                    rest = a[j + 1 :]
                    if rest.startswith("="):
                        rest = rest[1:]
                    if rest:
                        opts.append((c, rest))
                    else:
                        if i + 1 >= len(argv):
                            raise ValueError(f"option '-{c}' requires an argument")
                        opts.append((c, argv[i + 1]))
                        i += 1
                    break
                opts.append((c, None))
                j += 1
        else:
            return opts, argv[i:]
        i += 1
    return opts, []


# --------------------------------------------------------------------------- sbatch

# sbatch long options that take no argument (everything else takes one).
_SBATCH_LONG_FLAGS = {
    "parsable", "requeue", "no-requeue", "wait", "hold", "test-only", "overcommit",
    "spread-job", "use-min-nodes", "contiguous", "quiet", "verbose", "ignore-pbs",
    "help", "usage", "version", "exclusive", "oversubscribe", "no-kill",
    "get-user-env", "reboot", "nice", "kill-on-invalid-dep", "propagate",
}
_SBATCH_SHORT_FLAGS = "HOQWksvhV"
_SBATCH_SHORT_TO_LONG = {
    "A": "account", "a": "array", "c": "cpus-per-task", "C": "constraint",
    "D": "chdir", "d": "dependency", "e": "error", "G": "gpus", "i": "input",
    "J": "job-name", "M": "clusters", "N": "nodes", "n": "ntasks", "o": "output",
    "p": "partition", "q": "qos", "t": "time", "w": "nodelist", "x": "exclude",
    "W": "wait", "H": "hold",
}


def _expand_array(spec: str) -> list[int]:
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        step = 1
        if ":" in part:
            part, s = part.split(":", 1)
            step = int(s)
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1, step))
        else:
            out.append(int(part))
    return out


def _fill_pattern(pattern: str, jobid: int, task: int | None, name: str) -> str:
    repl = {
        "%%": "\0",
        "%j": str(jobid if task is None else jobid),
        "%A": str(jobid),
        "%a": str(task if task is not None else 4294967294),
        "%x": name,
        "%u": getpass.getuser(),
        "%N": "localhost",
        "%n": "0",
        "%t": "0",
    }
    out = pattern
    for k, v in repl.items():
        out = out.replace(k, v)
    return out.replace("\0", "%")


def sbatch(argv: list[str]) -> int:
    prog = "sbatch"
    # Long options without "=" that are not known flags consume the next argument.
    opts: dict[str, str | None] = {}
    i = 0
    positional = []
    while i < len(argv):
        a = argv[i]
        if a == "--":
            positional = argv[i + 1 :]
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a[2:].partition("=")
            if eq:
                opts[name] = val
            elif name in _SBATCH_LONG_FLAGS:
                opts[name] = None
            else:
                if i + 1 >= len(argv):
                    return _err(prog, f"option '--{name}' requires an argument")
                opts[name] = argv[i + 1]
                i += 1
        elif a.startswith("-") and len(a) > 1 and a != "-":
            c = a[1]
            long = _SBATCH_SHORT_TO_LONG.get(c, c)
            if c in _SBATCH_SHORT_FLAGS:
                opts[long] = None
            else:
                rest = a[2:]
                if rest.startswith("="):
                    rest = rest[1:]
                if rest:
                    opts[long] = rest
                else:
                    if i + 1 >= len(argv):
                        return _err(prog, f"option requires an argument -- '{c}'")
                    opts[long] = argv[i + 1]
                    i += 1
        else:
            positional = argv[i:]
            break
        i += 1

    wrap = opts.get("wrap")
    if wrap is not None and positional:
        return _err(prog, "script arguments not permitted with --wrap option")
    if wrap is not None:
        script = f"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{wrap}\n"
        default_name = "wrap"
    elif positional:
        try:
            with open(positional[0]) as fh:
                script = fh.read()
        except OSError as e:
            return _err(prog, f"Unable to open file {positional[0]}: {e}")
        default_name = (
            "sbatch" if positional[0] in ("/dev/stdin", "-") else os.path.basename(positional[0])
        )
    else:
        script = sys.stdin.read()
        default_name = "sbatch"
    if not script.startswith("#!"):
        return _err(
            prog,
            "This does not look like a batch script.  The first line must start with "
            "#! followed by the path to an interpreter.",
        )

    account = opts.get("account")
    if account is not None and account.lower() not in {a.lower() for a in accounts()}:
        return _err(prog, "Batch job submission failed: Invalid account or "
                    "account/partition combination specified")
    parts = partitions()
    partition = opts.get("partition")
    if partition is not None:
        if partition not in {p for p, _ in parts}:
            return _err(prog, "Batch job submission failed: Invalid partition name "
                        "specified")
    else:
        partition = next((p for p, d in parts if d), parts[0][0] if parts else "")

    submit_dir = os.getcwd()
    workdir = os.path.abspath(opts.get("chdir") or submit_dir)
    if not os.path.isdir(workdir):
        return _err(prog, f"chdir to {workdir} failed")
    name = opts.get("job-name") or default_name
    jobid = next_jobid()
    tasks: list[int | None]
    if opts.get("array"):
        try:
            tasks = list(_expand_array(opts["array"]))
        except ValueError:
            return _err(prog, "Invalid job array specification")
    else:
        tasks = [None]
    task_ids = [str(jobid) if t is None else f"{jobid}_{t}" for t in tasks]

    d = state_dir()
    script_path = d / "jobs" / f"{jobid}.sh"
    script_path.write_text(script)
    script_path.chmod(0o755)

    job = {
        "jobid": jobid,
        "name": name,
        "comment": opts.get("comment", ""),
        "account": account or (accounts()[0] if accounts() else ""),
        "partition": partition,
        "user": getpass.getuser(),
        "submit_dir": submit_dir,
        "workdir": workdir,
        "output": opts.get("output"),
        "error": opts.get("error"),
        "open_mode": opts.get("open-mode", "truncate"),
        "export": opts.get("export", "ALL"),
        "script": str(script_path),
        "script_args": positional[1:] if wrap is None else [],
        "array": tasks if tasks != [None] else None,
        "tasks": task_ids,
        "opts": opts,
        "argv": argv,
    }
    _write_json(job_path(str(jobid)), job)
    for tid in task_ids:
        set_state(tid, "PENDING", exit_code="0:0")

    log = os.environ.get("SLURM_STUB_LOG")
    if log:
        with _locked(Path(log + ".lock")):
            with open(log, "a") as fh:
                fh.write(json.dumps({"argv": argv, "jobid": jobid, "cwd": submit_dir,
                                     "tasks": task_ids}) + "\n")

    # Start the job(s) detached, as a cluster would: new session, no inherited pipes
    # (the caller waits on our stdout until EOF).
    env = _job_env_base(job)
    for t, tid in zip(tasks, task_ids):
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "__run__", str(jobid), tid],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=workdir,
        )

    clusters = opts.get("clusters")
    if "parsable" in opts:
        print(f"{jobid};{clusters}" if clusters else str(jobid))
    else:
        suffix = f" on cluster {clusters}" if clusters else ""
        print(f"Submitted batch job {jobid}{suffix}")
    sys.stdout.flush()

    if "wait" in opts:
        rc = 0
        while True:
            states = [(_read_json(task_state_path(t)) or {}) for t in task_ids]
            if all(s.get("state") in FINAL_STATES for s in states):
                for s in states:
                    code = int(str(s.get("exit_code", "0:0")).split(":")[0] or 0)
                    if s.get("state") != "COMPLETED":
                        rc = max(rc, code or 1)
                return rc
            time.sleep(0.2)
    return 0


def _job_env_base(job: dict) -> dict:
    export = (job.get("export") or "ALL").split(",")
    if export[0].upper() == "NONE":
        env = {k: os.environ[k] for k in ("PATH", "HOME", "USER", "LOGNAME") if k in os.environ}
        extra = export[1:]
    else:
        env = dict(os.environ)
        extra = export[1:] if export[0].upper() == "ALL" else export
    for item in extra:
        k, eq, v = item.partition("=")
        if eq:
            env[k] = v
        elif k in os.environ:
            env[k] = os.environ[k]
    opts = job["opts"]
    jid = str(job["jobid"])
    env.update(
        SLURM_JOB_ID=jid,
        SLURM_JOBID=jid,
        SLURM_JOB_NAME=job["name"],
        SLURM_JOB_USER=job["user"],
        SLURM_JOB_ACCOUNT=job["account"],
        SLURM_JOB_PARTITION=job["partition"],
        SLURM_SUBMIT_DIR=job["submit_dir"],
        SLURM_SUBMIT_HOST=socket.gethostname(),
        SLURM_CLUSTER_NAME=CLUSTER,
        SLURM_JOB_NUM_NODES="1",
        SLURM_NNODES="1",
        SLURM_JOB_NODELIST="localhost",
        SLURM_NODELIST="localhost",
        SLURM_NTASKS=str(opts.get("ntasks") or 1),
        SLURM_NPROCS=str(opts.get("ntasks") or 1),
    )
    if opts.get("cpus-per-task"):
        env["SLURM_CPUS_PER_TASK"] = str(opts["cpus-per-task"])
    if opts.get("cpus-per-gpu"):
        env["SLURM_CPUS_PER_GPU"] = str(opts["cpus-per-gpu"])
    if opts.get("mem"):
        env["SLURM_MEM_PER_NODE"] = str(opts["mem"])
    if opts.get("mem-per-cpu"):
        env["SLURM_MEM_PER_CPU"] = str(opts["mem-per-cpu"])
    if opts.get("gpus"):
        env["SLURM_GPUS"] = str(opts["gpus"])
    if opts.get("gres"):
        env["SLURM_JOB_GRES"] = str(opts["gres"])
    if opts.get("time"):
        env["SLURM_TIMELIMIT"] = str(opts["time"])
    return env


def _run_job(jobid: str, task_id: str) -> int:
    """Body of the detached job process."""
    job = _read_json(job_path(jobid))
    if job is None:
        return 1
    pending = float(os.environ.get("SLURM_STUB_PENDING_SECONDS", "0") or 0)
    if pending > 0:
        time.sleep(pending)
    st = _read_json(task_state_path(task_id)) or {}
    if st.get("state") == "CANCELLED":
        return 0
    task = None
    env = dict(os.environ)
    if "_" in task_id:
        task = int(task_id.split("_", 1)[1])
        array = job["array"]
        env.update(
            SLURM_ARRAY_JOB_ID=jobid,
            SLURM_ARRAY_TASK_ID=str(task),
            SLURM_ARRAY_TASK_MIN=str(min(array)),
            SLURM_ARRAY_TASK_MAX=str(max(array)),
            SLURM_ARRAY_TASK_COUNT=str(len(array)),
        )
    name = job["name"]
    default_out = "slurm-%A_%a.out" if task is not None else "slurm-%j.out"
    out_pattern = job.get("output") or default_out
    out_path = Path(_fill_pattern(out_pattern, int(jobid), task, name))
    if not out_path.is_absolute():
        out_path = Path(job["workdir"]) / out_path
    mode = "a" if job.get("open_mode") == "append" else "w"
    set_state(task_id, "RUNNING", pid=os.getpid())
    try:
        out_fh = open(out_path, mode)
    except OSError:
        # like Slurm: the job fails when its output file cannot be opened
        set_state(task_id, "FAILED", exit_code="1:0")
        return 1
    err_fh = out_fh
    if job.get("error"):
        err_path = Path(_fill_pattern(job["error"], int(jobid), task, name))
        if not err_path.is_absolute():
            err_path = Path(job["workdir"]) / err_path
        err_fh = open(err_path, mode)
    with out_fh, err_fh:
        proc = subprocess.Popen(
            [job["script"], *job.get("script_args", [])],
            stdin=subprocess.DEVNULL,
            stdout=out_fh,
            stderr=err_fh,
            cwd=job["workdir"],
            env=env,
        )
        set_state(task_id, "RUNNING", pid=os.getpid(), child_pid=proc.pid)
        rc = proc.wait()
    if rc == 0:
        set_state(task_id, "COMPLETED", exit_code="0:0")
    elif rc < 0:
        set_state(task_id, "CANCELLED" if -rc in (signal.SIGTERM, signal.SIGKILL) else "FAILED",
                  exit_code=f"0:{-rc}")
    else:
        set_state(task_id, "FAILED", exit_code=f"{rc}:0")
    return 0


# --------------------------------------------------------------------------- queries


def _match_jobs(task_id: str, job: dict, wanted: list[str]) -> bool:
    if not wanted:
        return True
    jid = str(job["jobid"])
    return any(w in (task_id, jid) for w in wanted)


def _field_value(field: str, job: dict, task_id: str, st: dict) -> str:
    f = field.lower()
    state = st.get("state", "PENDING")

    def ts(key):
        v = st.get(key)
        return datetime.fromtimestamp(v).strftime("%Y-%m-%dT%H:%M:%S") if v else "Unknown"

    def elapsed():
        s, e = st.get("start"), st.get("end") or time.time()
        if not s:
            return "00:00:00"
        secs = int(e - s)
        return f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"

    opts = job.get("opts", {})
    values = {
        "jobid": task_id,
        "jobidraw": task_id,
        "jobname": job["name"],
        "state": state,
        "exitcode": st.get("exit_code", "0:0"),
        "account": job["account"],
        "partition": job["partition"],
        "user": job["user"],
        "comment": job.get("comment", ""),
        "nodelist": "localhost" if state != "PENDING" else "None assigned",
        "reason": "None",
        "submit": ts("submit"),
        "start": ts("start"),
        "end": ts("end"),
        "elapsed": elapsed(),
        "timelimit": str(opts.get("time") or "UNLIMITED"),
        "reqmem": f"{opts['mem']}M" if opts.get("mem") else "",
        "alloccpus": str(opts.get("cpus-per-task") or 1),
        "ncpus": str(opts.get("cpus-per-task") or 1),
        "nnodes": "1",
        "totalcpu": "00:00:00",
        "maxrss": "0",
        "workdir": job["workdir"],
        "cluster": CLUSTER,
    }
    return values.get(f, "")


def _format_rows(rows, fields, widths, parsable, parsable_trailing, header, delimiter="|"):
    lines = []
    if header:
        if parsable or parsable_trailing:
            lines.append(delimiter.join(fields) + ("|" if parsable_trailing else ""))
        else:
            lines.append(" ".join(f.ljust(w)[:w] for f, w in zip(fields, widths)))
            lines.append(" ".join("-" * w for w in widths))
    for r in rows:
        if parsable or parsable_trailing:
            lines.append(delimiter.join(r) + ("|" if parsable_trailing else ""))
        else:
            lines.append(" ".join(v.rjust(w)[:w] for v, w in zip(r, widths)))
    return "\n".join(lines) + ("\n" if lines else "")


def _split_format(fmt: str):
    fields, widths = [], []
    for item in fmt.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, width = item.partition("%")
        fields.append(name)
        try:
            widths.append(abs(int(width)) if width else 10)
        except ValueError:
            widths.append(10)
    return fields, widths


def sacct(argv: list[str]) -> int:
    try:
        opts, _positional = _parse_options(
            argv,
            long_valued={"format", "name", "jobs", "starttime", "endtime", "clusters",
                         "user", "state", "partition", "accounts", "delimiter", "uid"},
            short_valued="ojSEMusrAi",
        )
    except ValueError as e:
        return _err("sacct", str(e))
    fmt = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"
    names: list[str] = []
    jobs: list[str] = []
    states: list[str] = []
    parsable = parsable_trailing = False
    header = True
    delimiter = "|"
    for k, v in opts:
        if k in ("format", "o"):
            fmt = v
        elif k == "name":
            names += v.split(",")
        elif k in ("jobs", "j"):
            jobs += v.split(",")
        elif k in ("state", "s"):
            states += [s.upper() for s in v.split(",")]
        elif k in ("parsable2", "P"):
            parsable = True
        elif k in ("parsable", "p"):
            parsable_trailing = True
        elif k in ("noheader", "n"):
            header = False
        elif k == "delimiter":
            delimiter = v
    fields, widths = _split_format(fmt)
    rows = []
    for job, tid, st in all_tasks():
        if names and job["name"] not in names:
            continue
        if not _match_jobs(tid, job, jobs):
            continue
        if states and st.get("state", "PENDING")[:2] not in {s[:2] for s in states}:
            continue
        rows.append([_field_value(f, job, tid, st) for f in fields])
    sys.stdout.write(_format_rows(rows, fields, widths, parsable, parsable_trailing, header,
                                  delimiter))
    return 0


_SQUEUE_CODES = {
    "i": "jobid", "A": "jobid", "T": "state", "t": "state", "j": "jobname",
    "u": "user", "P": "partition", "a": "account", "N": "nodelist", "k": "comment",
    "l": "timelimit", "M": "elapsed",
}
_SHORT_STATES = {"PENDING": "PD", "RUNNING": "R", "COMPLETED": "CD", "FAILED": "F",
                 "CANCELLED": "CA", "TIMEOUT": "TO", "OUT_OF_MEMORY": "OOM", "NODE_FAIL": "NF"}


def squeue(argv: list[str]) -> int:
    try:
        opts, _ = _parse_options(
            argv,
            long_valued={"format", "name", "jobs", "states", "user", "partition",
                         "clusters", "account"},
            short_valued="onjtupMA",
        )
    except ValueError as e:
        return _err("squeue", str(e))
    fmt = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
    names, jobs, states = [], [], []
    header = True
    for k, v in opts:
        if k in ("format", "o"):
            fmt = v
        elif k in ("name", "n"):
            names += v.split(",")
        elif k in ("jobs", "j"):
            jobs += v.split(",")
        elif k in ("states", "t"):
            states += [s.upper() for s in v.split(",")]
        elif k in ("noheader", "h"):
            header = False

    def render(job, tid, st):
        out, i = [], 0
        while i < len(fmt):
            c = fmt[i]
            if c != "%":
                out.append(c)
                i += 1
                continue
            j = i + 1
            while j < len(fmt) and (fmt[j].isdigit() or fmt[j] in ".-"):
                j += 1
            code = fmt[j] if j < len(fmt) else ""
            if code == "t":
                val = _SHORT_STATES.get(st.get("state", "PENDING"), "PD")
            elif code == "D":
                val = "1"
            elif code == "R":
                val = "localhost"
            else:
                key = _SQUEUE_CODES.get(code)
                val = _field_value(key, job, tid, st) if key else ""
            out.append(val)
            i = j + 1
        return "".join(out)

    lines = []
    if header:
        lines.append("JOBID|STATE" if "|" in fmt else "JOBID PARTITION NAME USER ST TIME NODES")
    show_all = "ALL" in states
    for job, tid, st in all_tasks():
        state = st.get("state", "PENDING")
        if names and job["name"] not in names:
            continue
        if not _match_jobs(tid, job, jobs):
            continue
        if not show_all:
            if states and state not in states and _SHORT_STATES.get(state) not in states:
                continue
            if not states and state in FINAL_STATES:
                continue
        lines.append(render(job, tid, st))
    if lines:
        print("\n".join(lines))
    return 0


def sinfo(argv: list[str]) -> int:
    try:
        opts, _ = _parse_options(argv, long_valued={"format", "partition", "clusters"},
                                 short_valued="opM")
    except ValueError as e:
        return _err("sinfo", str(e))
    fmt = "%9P %.5a %.10l %.6D %.6t %N"
    header = True
    only = None
    for k, v in opts:
        if k in ("format", "o"):
            fmt = v
        elif k in ("noheader", "h"):
            header = False
        elif k in ("partition", "p"):
            only = set(v.split(","))
    heads = {"P": "PARTITION", "R": "PARTITION", "a": "AVAIL", "l": "TIMELIMIT",
             "D": "NODES", "t": "STATE", "T": "STATE", "N": "NODELIST", "G": "GRES",
             "c": "CPUS", "m": "MEMORY"}

    def render(values):
        out, i = [], 0
        while i < len(fmt):
            c = fmt[i]
            if c != "%":
                out.append(c)
                i += 1
                continue
            j = i + 1
            while j < len(fmt) and (fmt[j].isdigit() or fmt[j] in ".-"):
                j += 1
            code = fmt[j] if j < len(fmt) else ""
            out.append(values.get(code, ""))
            i = j + 1
        return "".join(out)

    lines = []
    if header:
        lines.append(render(heads))
    for name, default in partitions():
        if only and name not in only:
            continue
        lines.append(render({
            "P": name + ("*" if default else ""), "R": name, "a": "up", "l": "infinite",
            "D": "1", "t": "idle", "T": "idle", "N": "localhost",
            "G": "gpu:4" if "gpu" in name else "(null)", "c": str(os.cpu_count() or 1),
            "m": "128000",
        }))
    print("\n".join(lines))
    return 0


def scontrol(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    if len(args) >= 2 and args[0] == "show":
        what = args[1].lower()
        if what == "config":
            print(f"Configuration data as of {datetime.now():%Y-%m-%dT%H:%M:%S}")
            print(f"ClusterName             = {CLUSTER}")
            print("MaxArraySize            = 1001")
            print("MinJobAge               = 300 sec")
            print("SLURM_VERSION           = 23.02.0-stub")
            return 0
        if what in ("partition", "partitions"):
            for name, default in partitions():
                if len(args) > 2 and args[2] != name:
                    continue
                print(f"PartitionName={name}")
                print(f"   AllowGroups=ALL AllowAccounts=ALL Default={'YES' if default else 'NO'}")
                print("   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0")
                print(f"   State=UP TotalCPUs={os.cpu_count() or 1} TotalNodes=1")
                print("   MaxMemPerNode=UNLIMITED DefMemPerCPU=1000")
                if "gpu" in name:
                    print("   TRES=cpu=16,mem=128000M,node=1,gres/gpu=4")
                print()
            return 0
        if what == "job":
            wanted = args[2:] or []
            found = False
            for job, tid, st in all_tasks():
                if not _match_jobs(tid, job, wanted):
                    continue
                found = True
                print(f"JobId={job['jobid']} JobName={job['name']}")
                print(f"   UserId={job['user']} Account={job['account']}")
                print(f"   JobState={st.get('state', 'PENDING')} Reason=None "
                      f"ExitCode={st.get('exit_code', '0:0')}")
                print(f"   Partition={job['partition']} WorkDir={job['workdir']}")
                print(f"   StdOut={job.get('output') or ''}")
                print()
            if not found and wanted:
                return _err("scontrol", "Invalid job id specified", 1)
            return 0
    return _err("scontrol", f"stub does not implement: scontrol {' '.join(argv)}")


def sacctmgr(argv: list[str]) -> int:
    words = [a for a in argv if not a.startswith("-")]
    noheader = any(a in ("-n", "--noheader") or (a.startswith("-") and not a.startswith("--")
                                                  and "n" in a[1:]) for a in argv)
    parsable = any(a in ("-P", "-p", "--parsable", "--parsable2") for a in argv)
    lower = [w.lower() for w in words]
    if lower and lower[0] in ("list", "show") and len(lower) > 1 and lower[1] in (
        "user", "users", "association", "associations", "account", "accounts"
    ):
        width = 10
        for w in words:
            if w.lower().startswith("format="):
                _, widths = _split_format(w.split("=", 1)[1])
                width = widths[0] if widths else 10
        if not noheader:
            print("Account" if parsable else "Account".rjust(width))
            if not parsable:
                print("-" * width)
        for a in accounts():
            print(a if parsable else a.rjust(width))
        return 0
    return _err("sacctmgr", f"stub does not implement: sacctmgr {' '.join(argv)}")


def scancel(argv: list[str]) -> int:
    ids = [a for a in argv if not a.startswith("-")]
    known = {tid: job for job, tid, _ in all_tasks()}
    rc = 0
    for wanted in ids:
        targets = [t for t, job in known.items() if wanted in (t, str(job["jobid"]))]
        if not targets:
            print(f"scancel: error: Invalid job id {wanted}", file=sys.stderr)
            rc = 1
            continue
        for tid in targets:
            st = _read_json(task_state_path(tid)) or {}
            if st.get("state") in FINAL_STATES:
                continue
            set_state(tid, "CANCELLED", exit_code="0:15")
            for key in ("child_pid", "pid"):
                pid = st.get(key)
                if pid:
                    try:
                        os.killpg(os.getpgid(pid), signal.SIGTERM)
                    except (OSError, ProcessLookupError):
                        pass
    return rc


# --------------------------------------------------------------------------- srun

_SRUN_LONG_FLAGS = {
    "exclusive", "overlap", "pty", "label", "unbuffered", "quiet", "verbose",
    "kill-on-bad-exit", "no-kill", "overcommit", "oversubscribe", "exact", "whole",
    "mpi-none", "disable-status", "help", "usage", "version",
}
_SRUN_SHORT_FLAGS = "lukKOQsvXZhVEH"


_SRUN_SHORT_TO_LONG = {"n": "ntasks", "c": "cpus-per-task", "G": "gpus", "N": "nodes"}
# step environment a real srun sets from its options
_SRUN_ENV = {
    "ntasks": ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"),
    "cpus-per-task": ("SLURM_CPUS_PER_TASK",),
    "gpus": ("SLURM_GPUS",),
    "nodes": ("SLURM_STEP_NUM_NODES",),
    "mem-per-cpu": ("SLURM_MEM_PER_CPU",),
}


def srun(argv: list[str]) -> int:
    """Drop srun's options, export the step's SLURM_* variables, exec the command."""
    opts: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a[2:].partition("=")
            if eq:
                opts[name] = val
            elif name in _SRUN_LONG_FLAGS:
                opts[name] = None
            elif i + 1 < len(argv):
                opts[name] = argv[i + 1]  # value in the next argument
                i += 1
        elif a.startswith("-") and len(a) > 1:
            c = a[1]
            if c not in _SRUN_SHORT_FLAGS:
                if len(a) > 2:
                    val = a[2:].lstrip("=")  # '-n1'
                elif i + 1 < len(argv):
                    val = argv[i + 1]  # '-n 1'
                    i += 1
                else:
                    val = ""
                opts[_SRUN_SHORT_TO_LONG.get(c, c)] = val
        else:
            break
        i += 1
    cmd = argv[i:]
    step_env = {"SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for opt, names in _SRUN_ENV.items():
        if opts.get(opt):
            for n in names:
                step_env[n] = opts[opt]
    os.environ.update(step_env)
    if not cmd:
        return _err("srun", "no command given")
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        return _err("srun", f"execve(): {cmd[0]}: {e}", 2)
    return 0  # not reached


# --------------------------------------------------------------------------- entry

COMMANDS = {
    "sbatch": sbatch,
    "sacct": sacct,
    "squeue": squeue,
    "sinfo": sinfo,
    "scontrol": scontrol,
    "sacctmgr": sacctmgr,
    "scancel": scancel,
    "srun": srun,
}


def main(prog: str, argv: list[str]) -> int:
    return COMMANDS[prog](argv)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "__run__":
        sys.exit(_run_job(sys.argv[2], sys.argv[3]))
    if len(sys.argv) >= 2 and sys.argv[1] in COMMANDS:
        sys.exit(main(sys.argv[1], sys.argv[2:]))
    print(f"usage: {sys.argv[0]} {{{','.join(COMMANDS)}}} ARGS...", file=sys.stderr)
    sys.exit(2)
