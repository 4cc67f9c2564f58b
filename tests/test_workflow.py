"""The DAG end to end: the grids each config plans, config errors, the periodic grid run through Snakemake and its
DVC pipeline, and the tiny workflow through the Slurm profile (the DVC journeys: test_dvc.py). Each test works on a
copy of the project in a temporary directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from physiossl.dvc_export import export_document, resolve

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tiny_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["name"] = "tiny"
    config["paths"] = {"data": "data/tiny", "results": "results/tiny"}
    config["datasets"]["ptbxl"]["demo"]["n_records"] = 200
    config["datasets"]["ptbxl"]["max_quarantine_fraction"] = 0.0
    config["pretrain"]["trainer"].update(max_epochs=1, batch_size=64)
    config["evaluate"]["linear"]["epochs"] = 3
    config["evaluate"]["finetune"]["epochs"] = 1
    config["evaluate"]["bootstrap"]["n"] = 20
    config["evaluate"]["robustness"]["levels"] = 2
    config["experiment"]["label_efficiency"] = {"protocols": ["linear"], "fractions": [0.5], "folds": [2]}
    for stage in ("pretrain", "evaluate"):
        config["resources"][stage]["threads"] = 1
    return config


def make_project(tmp_path: Path, name: str, config: dict | None = None) -> Path:
    project = tmp_path / name
    project.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copy(REPO / "Snakefile", project)
    for folder in ("workflow", "profiles", "config", "src"):
        shutil.copytree(REPO / folder, project / folder, ignore=ignore)
    (project / "slurm").symlink_to(os.readlink(REPO / "slurm"))
    (project / "config" / "tiny.yaml").write_text(yaml.safe_dump(config or tiny_config(), sort_keys=False))
    return project


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    # one thread per job: the same arithmetic order in every process, whatever the machine's load
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def snakemake(project: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Snakemake in ``project``, which runs (and versions) the project's copy of the package, as in a checkout."""
    return run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/tiny.yaml", *args],
               project, check, {"PYTHONPATH": str(project / "src"), **(env or {})})


def snakemake_traced(project: Path, trace: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the workflow with every job recording the physiossl modules it imports (see
    :func:`assert_jobs_imported_only_declared_code`)."""
    from physiossl.cli import TRACE_IMPORTS

    return snakemake(project, *args, env={TRACE_IMPORTS: str(trace)})


def assert_jobs_imported_only_declared_code(project: Path, trace: Path) -> None:
    """Every physiossl module that a job of the last run imported is among the files of the job's code version (its
    rule's import closure, physiossl.codedeps; the DVC export lists them as the stage's deps), the command-line
    dispatcher excepted; and every job that ran recorded its imports."""
    document, _ = export_document(project / "config" / "tiny.yaml", project / "Snakefile")
    declared = {}
    for stage in resolve(document).values():
        for out in stage.get("outs", []):
            if str(out).endswith(".log"):
                declared[str(out)] = {str(dep) for dep in stage["deps"]}
    traces = [json.loads(p.read_text()) for p in sorted(trace.glob("*.json"))]
    logs = {t["argv"][t["argv"].index("--log") + 1]: t["modules"] for t in traces}
    assert set(logs) == set(declared), (sorted(set(declared) - set(logs)), sorted(set(logs) - set(declared)))
    for log, modules in logs.items():
        files = set()
        for module in modules:
            if module == "physiossl.cli":
                continue
            path = Path("src", *module.split("."))
            files.add(str(path / "__init__.py" if (project / path).is_dir() else path.with_suffix(".py")))
        missing = sorted(files - declared[log])
        assert not missing, f"the job of {log} imported modules its rule does not declare: {missing}"


def planned_jobs(project: Path) -> dict[str, int]:
    """Rule → number of jobs that a dry run would execute."""
    out = snakemake(project, "-n").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def results(project: Path) -> dict:
    """Metrics of every result file; losses rounded (float reductions may differ in the last bits
    between processes), AUCs and selected epochs compared as they are."""
    out = {}
    for path in sorted((project / "results" / "tiny" / "eval").rglob("*.json")):
        r = json.loads(path.read_text())
        out[str(path.relative_to(project))] = {
            "test_macro_auc": round(r["test_macro_auc"], 6), "val_macro_auc": round(r["val_macro_auc"], 6),
            "best_epoch": r["best_epoch"], "classes": r["classes"], "n_records": r["n_records"],
            "val_curve": [round(h["val_macro_auc"], 6) for h in r["history"]],
            "loss_curve": [round(h["train_loss"], 3) for h in r["history"]],
        }
    return out


def test_paper_grid_plans_every_method_protocol_and_subset():
    config = yaml.safe_load((REPO / "config" / "paper_ecg.yaml").read_text())
    exp = config["experiment"]
    sweep = exp["label_efficiency"]
    runs_per_method = sum(1 + (len(sweep["fractions"]) + len(sweep["folds"]) if p in sweep["protocols"] else 0)
                          for p in exp["protocols"])
    per = config["periodic"]
    periodic_runs = sum(1 + (len(per["label_efficiency"]["fractions"])
                             if p in per["label_efficiency"]["protocols"] else 0)
                        for p in per["protocols"])
    pretrained = {m for m in exp["methods"] + per["methods"] if not m.startswith("random")}
    proc = run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--configfile", "config/paper_ecg.yaml"], REPO)
    table = proc.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    n_data = len(config["datasets"])
    assert jobs == {"download_data": n_data, "convert": n_data, "pretrain": len(pretrained),
                    "evaluate": len(exp["methods"]) * runs_per_method,
                    "evaluate_periodic": len(per["methods"]) * periodic_runs, "report": 1, "all": 1}
    assert sum(jobs.values()) == 282  # the count stated in config/paper_ecg.yaml and docs/experiments.md


def test_snakemake_rejects_a_wrong_config_key(tmp_path):
    config = tiny_config()
    config["pretrain"]["trainer"]["max_epoch"] = 3
    project = make_project(tmp_path, "bad", config)
    proc = snakemake(project, "-n", check=False)
    assert proc.returncode != 0
    assert "max_epoch" in proc.stdout + proc.stderr


def test_snakemake_rejects_config_overrides(tmp_path):
    project = make_project(tmp_path, "override")
    proc = snakemake(project, "-n", "--config", "seed=3", check=False)
    assert proc.returncode != 0 and "--config overrides" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_project_workflow_runs_through_the_slurm_profile(tmp_path):
    """The whole tiny workflow through `--profile slurm` against stand-in Slurm commands: GPU jobs in the GPU
    partition, a log and a benchmark file per job (progress bars not flooding the logs), then `snakemake --report`
    with the report's tables and figures."""
    from test_slurm_profile import STUBS, run_with_slurm_stubs

    config = tiny_config()
    config["resources"]["pretrain"] = {"threads": 1, "gpu": 1, "mem_mb": 3000, "runtime": 45}
    config["experiment"].update(methods=["simclr"], protocols=["linear"])  # 3 evaluations: all, frac0.5, folds2
    project = make_project(tmp_path, "cluster", config)
    path = os.pathsep.join([str(STUBS), str(BIN), os.environ.get("PATH", "")])
    proc, calls = run_with_slurm_stubs(["--configfile", "config/tiny.yaml", "--retries", "0", "--jobs", "4"],
                                       project, tmp_path, env={"PATH": path, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (project / "results/tiny/report/table.md").exists()
    rules = [argv[argv.index("--comment") + 1].split("_wildcards_")[0].removeprefix("rule_") for argv in calls]
    assert sorted(set(rules)) == ["convert", "evaluate", "pretrain"], rules  # demo_data, report: local rules
    assert rules.count("evaluate") == 3
    for argv, rule in zip(calls, rules):
        line = " ".join(argv)
        assert ("--gpus=1" in line) == (rule == "pretrain"), line
        assert f"-p {'gpu' if rule == 'pretrain' else 'cpu'}" in line, line
    assert "--mem 3000" in " ".join(calls[rules.index("pretrain")])

    # one log and one benchmark file per job; a progress bar refreshes at most once a minute in a log
    results = project / "results/tiny"
    logs = sorted(p.relative_to(results / "logs").as_posix() for p in (results / "logs").rglob("*.log"))
    benchmarks = sorted(p.relative_to(results / "benchmarks").as_posix()
                        for p in (results / "benchmarks").rglob("*.tsv"))
    assert len(logs) == 1 + 1 + 1 + 3 + 1 and [b.removesuffix(".tsv") for b in benchmarks] == \
        [log.removesuffix(".log") for log in logs], (logs, benchmarks)
    convert_log = (results / "logs/convert/ptbxl_100hz.log").read_text()
    assert convert_log.startswith("==== ") and "ptbxl → ptbxl_100hz.zarr" in convert_log
    assert convert_log.count("\r") <= 3, convert_log  # tqdm's first and last refresh only (TQDM_MININTERVAL)
    assert '"final_train_loss"' in (results / "logs/pretrain/simclr.log").read_text()

    # the report: tables and figures of the report rule, with their captions
    proc = snakemake(project, "--report", "report.zip")
    import zipfile
    with zipfile.ZipFile(project / "report.zip") as archive:
        names = archive.namelist()
        for name in ("table.csv", "figure.png", "label_efficiency.png", "label_efficiency.csv", "robustness.png",
                     "robustness.csv"):
            assert any(n.endswith(f"/{name}") for n in names), (name, names)


def test_mixed_pool_demo_config_plans_every_source():
    proc = run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--configfile", "config/demo_pool.yaml"],
               REPO)
    table = proc.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    assert jobs == {"all": 1, "demo_data": 4, "convert": 4, "pretrain": 1, "evaluate": 4, "report": 1}
    assert re.search(r"physiossl --log \S+ pretrain .*--store data/demo/stores/cinc2020_100hz.zarr "
                     r"data/demo/stores/chapman_100hz.zarr data/demo/stores/code15_100hz.zarr "
                     r"--eval-store data/demo/stores/ptbxl_100hz.zarr", proc.stdout)


@pytest.mark.slow
def test_periodic_grid_runs_through_snakemake_and_its_dvc_export(tmp_path):
    """SimPer pretrained from config, the four periodic protocols and the periodic report, through Snakemake."""
    config = tiny_config()
    config["pretrain"]["encoder_args"] = {"stage_strides": [1, 2, 1, 1]}
    config["pretrain"]["methods"] = {"simper": {
        "crop_s": 10.0, "batch_size": 32, "lr": 1.0e-3, "weight_decay": 0.0, "warmup_epochs": 0, "n_speeds": 3,
        "view_s": 4.0, "augment": [{"gaussian_noise": {"std": 0.05}}]}}
    config["experiment"] = {"methods": ["random"], "protocols": ["linear"]}
    config["periodic"] = {
        "target": "heart_rate", "units": "bpm", "units_per_hz": 60, "band": [30, 210],
        "methods": ["simper", "random"], "protocols": ["linear", "fft", "zero_shot", "finetune"],
        "label_efficiency": {"protocols": ["linear"], "fractions": [0.5]},
        "zero_shot": {"hold_out": [75, 90], "train_max": 110},
        "linear": {"epochs": 3, "lr": 1.0e-2, "weight_decay": 1.0e-4},
        "finetune": {"epochs": 1, "lr": 1.0e-3, "weight_decay": 1.0e-4},
    }
    project = make_project(tmp_path, "periodic", config)
    assert planned_jobs(project) == {"demo_data": 1, "convert": 1, "pretrain": 1, "evaluate": 1,
                                     "evaluate_periodic": 10, "report": 1, "all": 1}
    snakemake_traced(project, tmp_path / "trace")
    assert_jobs_imported_only_declared_code(project, tmp_path / "trace")
    report = project / "results/tiny/report"
    table = (report / "periodic.csv").read_text()
    for method in ("simper", "random"):
        for protocol in ("linear", "fft", "zero_shot", "finetune"):
            assert re.search(rf"^{method},[^\n]*,{protocol},", table, re.M), (method, protocol, table)
    assert "heart rate regression" in (report / "periodic.md").read_text()
    for figure in ("periodic", "periodic_label_efficiency"):
        assert (report / f"{figure}.png").stat().st_size > 1000
    metrics = json.loads((report / "metrics.json").read_text())
    assert "simper/linear" in metrics["periodic"]
    fft = json.loads((project / "results/tiny/periodic/simper/fft/all.json").read_text())
    assert fft["series"] == "trained series head" and fft["series_fs_hz"] == pytest.approx(12.5)
    assert planned_jobs(project) == {}
    # a code change reruns exactly the jobs that run the changed code; a file whose time alone changed, nothing
    os.utime(project / "src/physiossl/stages/periodic.py")
    assert planned_jobs(project) == {}
    simper = project / "src/physiossl/methods/simper.py"
    simper.write_text(simper.read_text() + "\n# changed\n")
    assert planned_jobs(project) == {"pretrain": 1, "evaluate_periodic": 5, "report": 1, "all": 1}
    reason = snakemake(project, "-n", "--rerun-triggers", "params", "--", "results/tiny/pretrain/simper/encoder.pt")
    assert "Params have changed since last execution" in reason.stdout, reason.stdout

    document, names = export_document(project / "config" / "tiny.yaml", project / "Snakefile")
    stages = resolve(document)
    stage = stages[names["evaluate_periodic-simper-zero_shot-all"]]
    assert " evaluate-periodic --configfile" in stage["cmd"] and "--protocol zero_shot" in stage["cmd"]
    params = stage["params"][0]["config/tiny.yaml"]
    assert {"periodic.zero_shot", "periodic.linear", "periodic.target"} <= set(params)
    assert "periodic.finetune" not in params
    report_stage = stages["report"]
    assert any(str(p).endswith("periodic/simper/fft/all.npz") for p in report_stage["deps"])
