"""DVC and Snakemake on one project, as docs/dvc.md ("Commands") uses them, with a directory as the DVC remote:
a Snakemake run recorded in DVC without rerunning anything and shared with `dvc push`; a fresh clone that, after
`dvc pull` and `physiossl dvc-sync`, neither tool wants to rerun; a changed parameter that both tools rerun the same
way, whichever runs it; the history of checkpoints, tables, metrics and plots; a parameter sweep as DVC experiments;
and the shipped pipelines (one per configuration, grouped stages, current exports).

One module-scoped project (a git repository with the pipeline of a small demo config) is run once by Snakemake; the
journeys after it work on a clone of it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from physiossl.dvc_export import SHIPPED_CONFIGS, export_document, export_dvc_yaml, pipeline_path, resolve
from test_workflow import make_project, planned_jobs, results, run, snakemake, tiny_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = "config/tiny.yaml"
PIPELINE = "pipelines/tiny/dvc.yaml"
LOCK = "pipelines/tiny/dvc.lock"
# the outputs compared across commits: a checkpoint, a result file, the report's tables and its metrics
KEPT = ["results/tiny/pretrain/simclr/encoder.pt", "results/tiny/eval/simclr/linear/all.json",
        "results/tiny/report/table.csv", "results/tiny/report/label_efficiency.csv",
        "results/tiny/report/robustness.csv", "results/tiny/report/metrics.json"]


def dvc_config() -> dict:
    """The demo config at its smallest: SimCLR pretrained for one epoch on 200 records, linear evaluation on all
    training records (with noise level 1) and on half of them."""
    config = tiny_config()
    config["experiment"] = {"methods": ["simclr"], "protocols": ["linear"],
                            "label_efficiency": {"protocols": ["linear"], "fractions": [0.5]}}
    config["evaluate"]["robustness"]["levels"] = 1
    return config


def dvc(project: Path, *args: str) -> str:
    return run([str(BIN / "dvc"), *args], project).stdout


def physiossl(project: Path, *args: str) -> str:
    return run([str(BIN / "physiossl"), *args], project).stdout


def git(project: Path, *args: str) -> str:
    return run(["git", *args], project).stdout.strip()


def commit(project: Path, message: str) -> str:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)
    return git(project, "rev-parse", "HEAD")


def set_key(project: Path, dotted: str, value) -> None:
    path = project / CONFIG
    config = yaml.safe_load(path.read_text())
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def dvc_project(root: Path, name: str) -> Path:
    """A copy of the project with the small config, its exported pipeline and the repository's DVC files."""
    project = make_project(root, name, dvc_config())
    for file in (".dvcignore", ".gitignore"):
        shutil.copy(REPO / file, project / file)
    (project / ".dvc").mkdir()
    for file in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / file, project / ".dvc" / file)
    shutil.copytree(REPO / ".dvc" / "plots", project / ".dvc" / "plots")
    physiossl(project, "export-dvc", "--configfile", CONFIG)
    return project


def git_user(project: Path) -> None:
    git(project, "config", "user.name", "physiossl test")
    git(project, "config", "user.email", "test@physiossl.invalid")


def changed_stages(project: Path) -> set[str]:
    """The stages `dvc status` names (without the pipeline file's path)."""
    return {name.rsplit(":", 1)[-1] for name in json.loads(dvc(project, "status", "--json", PIPELINE) or "{}")}


def stage_outputs(project: Path) -> dict[str, set[str]]:
    """Every stage of the pipeline (as DVC expands it) and its outputs."""
    stages = resolve(yaml.safe_load((project / PIPELINE).read_text()))
    return {name: {p for key in ("outs", "metrics", "plots") for p in stage.get(key, [])}
            for name, stage in stages.items()}


def snakemake_plan(project: Path) -> dict[str, str]:
    """Every output of the DAG (log files are not among them) and Snakemake's plan for it (`snakemake --summary`):
    "update pending" for the outputs of the jobs it would run."""
    text = snakemake(project, "--summary").stdout
    rows = [line.split("\t") for line in text[text.index("output_file\t"):].splitlines()[1:]]
    return {row[0]: row[-1] for row in rows}


def pending(plan: dict[str, str]) -> set[str]:
    return {path for path, action in plan.items() if action == "update pending"}


def outputs_of(stages: set[str], outputs: dict[str, set[str]], plan: dict[str, str]) -> set[str]:
    """The outputs of DVC ``stages`` that are outputs of Snakemake's DAG (log files are outputs of DVC stages only)."""
    return {path for name in stages for path in outputs[name] if path in plan}


def ran(output: str) -> set[str]:
    """The stages a `dvc repro` ran."""
    return {m.group(1).rsplit(":", 1)[-1] for m in re.finditer(r"^Running stage '([^']+)'", output, re.M)}


def file_digests(project: Path) -> dict[str, str]:
    return {path: hashlib.sha256((project / path).read_bytes()).hexdigest() for path in KEPT}


def cache_file(project: Path, md5: str) -> Path:
    return project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def lock_outs(project: Path) -> dict[str, str]:
    """Every output that dvc.lock records, and its md5 (``<md5>.dir`` for a directory)."""
    lock = yaml.safe_load((project / LOCK).read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


# --------------------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """The project in git, run by Snakemake, recorded with `physiossl dvc-sync`, pushed and committed."""
    root = tmp_path_factory.mktemp("dvc_journeys")
    project = dvc_project(root, "origin")
    git(project, "init", "-q")
    git_user(project)
    remote = root / "remote"
    dvc(project, "remote", "add", "-d", "storage", str(remote))
    commit(project, "the tiny pipeline")
    snakemake(project)
    # result files record their run's wall time: a job run again would write other bytes
    before = {path: (project / path).read_bytes() for path in [*KEPT, "results/tiny/pretrain/simclr/encoder.json"]}
    synced = json.loads(physiossl(project, "dvc-sync", "--configfile", CONFIG))
    dvc(project, "push")
    rev = commit(project, "results of the first run")
    return SimpleNamespace(path=project, root=root, remote=remote, rev=rev, before=before, synced=synced,
                           digests=file_digests(project))


@pytest.fixture(scope="module")
def clone(origin):
    """A fresh clone of the project after `dvc pull`."""
    project = origin.root / "clone"
    run(["git", "clone", "-q", str(origin.path), str(project)], origin.root)
    git_user(project)
    dvc(project, "pull", PIPELINE)
    return project


@pytest.fixture(scope="module")
def changes(clone):
    """Two parameter changes in the clone: a linear-evaluation rate rerun by `dvc repro`, a pretraining rate rerun by
    Snakemake, each followed by `physiossl dvc-sync`; what both tools said before and after, and the commits."""
    seen = SimpleNamespace(digests_after_pull=file_digests(clone), status_after_pull=dvc(clone, "status", PIPELINE),
                           repro_after_pull=dvc(clone, "repro", PIPELINE))
    # a parameter changed before Snakemake holds any record of the pulled files: dvc-sync cannot tell and refuses
    set_key(clone, "evaluate.linear.lr", 0.05)
    seen.unrecorded = run([str(BIN / "physiossl"), "dvc-sync", "--configfile", CONFIG], clone, check=False)
    seen.lock_after_refusal = git(clone, "status", "--porcelain", LOCK)
    git(clone, "checkout", "-q", "--", CONFIG)
    physiossl(clone, "dvc-sync", "--configfile", CONFIG)
    seen.planned_after_sync = planned_jobs(clone)

    set_key(clone, "evaluate.linear.lr", 0.05)
    seen.dvc_changed_1, seen.snakemake_plan_1 = changed_stages(clone), snakemake_plan(clone)
    seen.ran_1 = ran(dvc(clone, "repro", PIPELINE))
    seen.sync_1 = json.loads(physiossl(clone, "dvc-sync", "--configfile", CONFIG))
    seen.planned_1, seen.dvc_changed_after_1 = planned_jobs(clone), changed_stages(clone)
    seen.rev_1 = commit(clone, "linear evaluation at lr 0.05")

    set_key(clone, "pretrain.methods.simclr.lr", 2.0e-3)
    seen.dvc_changed_2, seen.snakemake_plan_2 = changed_stages(clone), snakemake_plan(clone)
    seen.snakemake_jobs_2 = planned_jobs(clone)
    snakemake(clone)
    seen.sync_2 = json.loads(physiossl(clone, "dvc-sync", "--configfile", CONFIG))
    seen.dvc_changed_after_2, seen.repro_after_2 = changed_stages(clone), ran(dvc(clone, "repro", PIPELINE))
    seen.planned_2 = planned_jobs(clone)
    seen.rev_2 = commit(clone, "pretraining at lr 2e-3")
    seen.digests_2 = file_digests(clone)
    seen.outputs = stage_outputs(clone)
    return seen


# --------------------------------------------------------------------------------------------- journeys
@pytest.mark.slow
def test_a_snakemake_run_is_recorded_in_dvc_without_rerunning_and_pushed(origin):
    project = origin.path
    # dvc-sync recorded every stage (dvc commit) and ran none: the files are those Snakemake wrote
    assert set(origin.synced["committed"]) == {f"{PIPELINE}:{name}" for name in stage_outputs(project)}
    for path, data in origin.before.items():
        assert (project / path).read_bytes() == data, path
    assert "up to date" in dvc(project, "status")
    assert planned_jobs(project) == {}
    # the remote holds every output: raw tree, store, checkpoint, result files, tables, figures, metrics, plot data
    outs = lock_outs(project)
    kinds = ("/raw/ptbxl", ".zarr", "encoder.pt", "eval/simclr/linear/all.npz", "metrics.json",
             "label_efficiency.csv", "robustness.png")
    assert all(any(path.endswith(kind) for path in outs) for kind in kinds), sorted(outs)
    for path, md5 in outs.items():
        assert (origin.remote / "files" / "md5" / md5[:2] / md5[2:]).is_file(), path
    assert "in sync" in dvc(project, "status", "--cloud")
    # each file is on disk once: the workspace file is a hard link of the cache file
    store = project / "data/tiny/stores/ptbxl_100hz.zarr"
    for path in (project / "results/tiny/pretrain/simclr/encoder.pt", store / "zarr.json",
                 project / "data/tiny/raw/ptbxl/ptbxl_database.csv"):
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        assert path.stat().st_ino == cache_file(project, md5).stat().st_ino, path
    # Snakemake's time stamps in the directory outputs are not part of them (.dvcignore)
    assert (store / ".snakemake_timestamp").is_file()
    listing = json.loads(cache_file(project, outs["data/tiny/stores/ptbxl_100hz.zarr"]).read_text())
    assert not any(entry["relpath"].endswith(".snakemake_timestamp") for entry in listing)


@pytest.mark.slow
def test_a_fresh_clone_after_dvc_pull_has_nothing_to_rerun(origin, clone, changes):
    assert "up to date" in changes.status_after_pull
    assert "Running stage" not in changes.repro_after_pull and "up to date" in changes.repro_after_pull
    assert changes.planned_after_sync == {}
    assert changes.digests_after_pull == origin.digests
    # dvc-sync refused to record a changed parameter's stale outputs as up to date
    assert changes.unrecorded.returncode != 0 and changes.lock_after_refusal == ""
    assert re.search(r"no record of|both tools see work", changes.unrecorded.stderr), changes.unrecorded.stderr


@pytest.mark.slow
def test_a_changed_parameter_reruns_the_same_jobs_in_both_tools(changes):
    outputs = changes.outputs
    evaluations = {"evaluate@simclr-linear-all", "evaluate-frac0.5@simclr-linear-frac0.5"}
    # evaluate.linear.lr: DVC sees the linear evaluations changed; Snakemake plans them and the report; `dvc repro`
    # runs those same jobs; after dvc-sync, neither tool has anything left to do
    assert changes.dvc_changed_1 == evaluations
    assert changes.ran_1 == evaluations | {"report"}
    assert outputs_of(changes.ran_1, outputs, changes.snakemake_plan_1) == pending(changes.snakemake_plan_1)
    # every output of a DVC stage but its log file is an output of the Snakemake DAG
    assert all(path.endswith(".log") for paths in outputs.values() for path in paths
               if path not in changes.snakemake_plan_1)
    assert changes.sync_1["committed"] == [] and changes.planned_1 == {} and changes.dvc_changed_after_1 == set()
    # pretrain.methods.simclr.lr, run by Snakemake: pretraining and everything after it, in both tools' view;
    # dvc-sync records the run, after which `dvc repro` runs nothing and Snakemake plans nothing
    assert changes.dvc_changed_2 == {"pretrain@simclr"}
    assert changes.snakemake_jobs_2 == {"pretrain": 1, "evaluate": 2, "report": 1, "all": 1}
    rerun = {"pretrain@simclr", "report"} | evaluations
    assert outputs_of(rerun, outputs, changes.snakemake_plan_2) == pending(changes.snakemake_plan_2)
    assert {name.rsplit(":", 1)[-1] for name in changes.sync_2["committed"]} == rerun
    assert changes.dvc_changed_after_2 == set() and changes.repro_after_2 == set() and changes.planned_2 == {}


@pytest.mark.slow
def test_dvc_restores_the_history_of_checkpoints_tables_metrics_and_plots(origin, clone, changes):
    a, b = origin.rev, changes.rev_2
    assert origin.digests["results/tiny/pretrain/simclr/encoder.pt"] != changes.digests_2[
        "results/tiny/pretrain/simclr/encoder.pt"]
    git(clone, "checkout", "-q", a)
    dvc(clone, "checkout", PIPELINE)
    assert file_digests(clone) == origin.digests
    assert "up to date" in dvc(clone, "status", PIPELINE)
    git(clone, "checkout", "-q", b)
    dvc(clone, "checkout", PIPELINE)
    assert file_digests(clone) == changes.digests_2
    physiossl(clone, "dvc-sync", "--configfile", CONFIG)
    assert planned_jobs(clone) == {}

    metrics = json.loads(dvc(clone, "metrics", "diff", a, b, "--json"))["results/tiny/report/metrics.json"]
    old = json.loads((origin.path / KEPT[-1]).read_text())
    assert metrics["simclr/linear.test_macro_auc"]["old"] == old["simclr/linear"]["test_macro_auc"]
    assert metrics["simclr/linear.test_macro_auc"]["new"] == json.loads((clone / KEPT[-1]).read_text())[
        "simclr/linear"]["test_macro_auc"]

    plots = json.loads(dvc(clone, "plots", "diff", a, b, "--json", "-o", str(origin.root / "dvc_plots")))["data"]
    for plot, x, y in (("label_efficiency", "train_fraction", "test_macro_auc"), ("robustness", "level", "macro_auc")):
        (spec,) = plots[plot]
        assert spec["type"] == "vega" and spec["revisions"] == [a, b]
        encoding = spec["content"]["spec"]["encoding"]
        assert (encoding["x"]["field"], encoding["y"]["field"]) == (x, y)
        assert encoding["color"]["field"] == "display" and spec["content"]["facet"]["column"]["field"] == "protocol"
        rows = spec["content"]["data"]["values"]
        assert {(row["rev"], row["display"]) for row in rows} == {(a, "SimCLR"), (b, "SimCLR")}
        assert all(x in row and y in row for row in rows)
    assert {name for name in plots if name.endswith(".png")} == {
        f"results/tiny/report/{name}.png" for name in ("figure", "label_efficiency", "robustness")}


@pytest.mark.slow
def test_a_parameter_sweep_runs_as_dvc_experiments(clone, changes):
    workspace = (clone / CONFIG).read_text()
    for lr in (0.02, 0.1):
        dvc(clone, "exp", "run", "--temp", "-S", f"{CONFIG}:evaluate.linear.lr={lr}", PIPELINE)
    assert (clone / CONFIG).read_text() == workspace and "up to date" in dvc(clone, "status", PIPELINE)
    shown = json.loads(dvc(clone, "exp", "show", "--json"))
    (baseline,) = [entry for entry in shown if entry["rev"] == changes.rev_2]
    experiments = [e["revs"][0] for e in baseline["experiments"]]
    by_lr = {}
    for e in experiments:
        config = e["data"]["params"][CONFIG]["data"]
        by_lr[config["evaluate"]["linear"]["lr"]] = e["data"]["metrics"]["results/tiny/report/metrics.json"]["data"]
        # the experiment's config file is the workspace's with the one value changed
        expected = yaml.safe_load(workspace)
        expected["evaluate"]["linear"]["lr"] = config["evaluate"]["linear"]["lr"]
        assert yaml.safe_load(git(clone, "show", f"{e['rev']}:{CONFIG}")) == expected
    assert set(by_lr) == {0.02, 0.1}
    aucs = {lr: m["simclr/linear"]["test_macro_auc"] for lr, m in by_lr.items()}
    assert all(0 < auc <= 1 for auc in aucs.values()) and aucs[0.02] != aucs[0.1]


@pytest.mark.slow
def test_dvc_repro_from_scratch_gives_the_snakemake_results(origin, tmp_path):
    project = dvc_project(tmp_path, "scratch")
    run(["git", "init", "-q"], project)
    output = dvc(project, "repro", PIPELINE)
    assert ran(output) == set(stage_outputs(project))
    assert results(project) == results(origin.path) and len(results(project)) == 2
    assert (project / "results/tiny/report/table.csv").read_bytes() == (
        origin.path / "results/tiny/report/table.csv").read_bytes()
    physiossl(project, "dvc-sync", "--configfile", CONFIG)
    assert planned_jobs(project) == {}


# --------------------------------------------------------------------------------------------- no run needed
def test_sync_refuses_when_both_tools_see_work(tmp_path):
    project = dvc_project(tmp_path, "unrun")
    run(["git", "init", "-q"], project)
    proc = run([str(BIN / "physiossl"), "dvc-sync", "--configfile", CONFIG], project, check=False)
    assert proc.returncode != 0
    assert "both tools see work to do" in proc.stderr and "dvc repro pipelines/tiny/dvc.yaml" in proc.stderr
    (project / PIPELINE).write_text((project / PIPELINE).read_text().replace("--n-records 200", "--n-records 20"))
    proc = run([str(BIN / "physiossl"), "dvc-sync", "--configfile", CONFIG], project, check=False)
    assert proc.returncode != 0 and "is not the export of config/tiny.yaml" in proc.stderr


def test_shipped_pipelines_are_the_exports_of_their_configs():
    for configfile in SHIPPED_CONFIGS:
        name = yaml.safe_load((REPO / configfile).read_text())["name"]
        path = REPO / pipeline_path(name)
        assert path.read_text() == export_dvc_yaml(REPO / configfile, REPO / "Snakefile"), (
            f"{path.relative_to(REPO)} is stale: run `physiossl export-dvc --configfile {configfile}`")
    assert pipeline_path("paper_ecg") == Path("dvc.yaml") and pipeline_path("demo") == Path("pipelines/demo/dvc.yaml")


def test_paper_pipeline_groups_the_jobs_of_each_rule():
    document = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = resolve(document)
    # one group per rule, split where the jobs differ in more than their wildcards: per source, per method whose
    # code dependencies (import closure) differ, per encoder (32 groups for 281 stages)
    assert len(stages) == 281 and len(document["stages"]) < 40
    groups = document["stages"]
    pretrain_groups = [group for name, group in groups.items() if name.split("-")[0] == "pretrain"]
    assert sorted(m for group in pretrain_groups for m in group["matrix"]["method"]) == sorted(
        yaml.safe_load((REPO / "config/paper_ecg.yaml").read_text())["pretrain"]["methods"])
    assert "pretrain --configfile config/paper_ecg.yaml --method ${item.method} " in groups["pretrain"]["cmd"]
    assert {"download_data-ptbxl@ptbxl", "convert-ptbxl@ptbxl-100", "pretrain@simclr", "pretrain-cpc@cpc",
            "report"} <= set(stages)
    simclr = stages["pretrain@simclr"]
    assert simclr["params"] == [{"config/paper_ecg.yaml": [
        "seed", "pretrain.dataset", "pools.all", "pretrain.folds", "pretrain.encoder", "pretrain.crop_s",
        "pretrain.cache", "pretrain.trainer", "pretrain.methods.simclr", "evaluate.dataset", "evaluate.val_fold",
        "evaluate.test_fold"]}]
    assert "src/physiossl/models/xresnet1d.py" in simclr["deps"] and "src/physiossl/methods/simclr.py" in simclr["deps"]
    assert "src/physiossl/methods/byol.py" not in simclr["deps"] and "src/physiossl/methods/base.py" in simclr["deps"]
    for stage in ("pretrain@simclr", "evaluate-cpc-all@cpc-finetune-all"):
        assert {"src/physiossl/stages/common.py", "src/physiossl/data/store.py"} <= set(stages[stage]["deps"])
    assert "evaluate.robustness" in stages["evaluate-cpc-all@cpc-finetune-all"]["params"][0]["config/paper_ecg.yaml"]
    frac = stages["evaluate-cpc@cpc-finetune-frac0.1"]
    assert "evaluate.robustness" not in frac["params"][0]["config/paper_ecg.yaml"]
    assert "results/paper_ecg/pretrain/random/encoder.pt" not in stages["evaluate-random@random-linear-frac0.1"]["deps"]
    report = stages["report"]
    assert report["metrics"] == ["results/paper_ecg/report/metrics.json"]
    assert "results/paper_ecg/report/robustness.png" in report["plots"]
    assert "results/paper_ecg/report/label_efficiency.csv" in report["outs"]
    assert not any("cache" in str(out) for stage in stages.values() for out in stage.get("outs", []))
    curves = {name: spec for entry in document["plots"] for name, spec in entry.items()}
    assert curves["label_efficiency"]["y"] == {"results/paper_ecg/report/label_efficiency.csv": "test_macro_auc"}
    assert curves["robustness"]["x"] == "level"


def test_export_matches_the_dag_job_for_job():
    """export_document checks DVC's expansion against the DAG; its job → stage map covers every job once."""
    document, names = export_document(REPO / "config/config.yaml", REPO / "Snakefile")
    assert len(names) == len(set(names.values())) == len(resolve(document)) == 18
    assert names["evaluate-simclr-linear-frac0.5"] == "evaluate@simclr-linear-frac0.5"
    assert names["evaluate-random-finetune-all"] == "evaluate-random-all@random-finetune-all"
    assert all(stage.get("wdir") == "../.." for stage in resolve(document).values())
    assert document["plots"][0]["label_efficiency"]["y"] == {
        "../../results/demo/report/label_efficiency.csv": "test_macro_auc"}


def test_shipped_pipelines_load_together_with_separate_locks(tmp_path):
    project = tmp_path / "all"
    project.mkdir()
    for name in ("dvc.yaml", "pipelines", "config", ".dvc", ".dvcignore"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / name)
    run(["git", "init", "-q"], project)
    listed = dvc(project, "stage", "list", "--all", "--name-only").split()
    expected = set()
    for configfile in SHIPPED_CONFIGS:
        pipeline = pipeline_path(yaml.safe_load((REPO / configfile).read_text())["name"])
        prefix = "" if pipeline == Path("dvc.yaml") else f"{pipeline}:"
        expected |= {prefix + name for name in resolve(yaml.safe_load((REPO / pipeline).read_text()))}
    assert set(listed) == expected and len(listed) == len(expected)


def test_configs_of_the_pipelines_survive_dvc_exp_run_set_param(tmp_path):
    """`dvc exp run -S file:key=value` rewrites the config file (dvc.utils.hydra.apply_overrides, as DVC's experiment
    queue calls it): every config with a pipeline must stay valid and equal but for that key (no YAML anchors)."""
    from dvc.utils.hydra import apply_overrides

    for configfile in SHIPPED_CONFIGS:
        text = (REPO / configfile).read_text()
        assert not any(getattr(event, "anchor", None) for event in yaml.parse(text)), f"{configfile} has YAML anchors"
        copy = tmp_path / Path(configfile).name
        copy.write_text(text)
        apply_overrides(str(copy), ["seed=7"])
        expected = yaml.safe_load(text)
        expected["seed"] = 7
        assert yaml.safe_load(copy.read_text()) == expected, configfile


def test_export_cli_check_detects_stale_file(tmp_path):
    from physiossl.cli import main

    out = tmp_path / "dvc.yaml"
    args = ["export-dvc", "--configfile", str(REPO / "config/config.yaml"), "--snakefile", str(REPO / "Snakefile"),
            "--out", str(out)]
    assert main(args) == 0
    assert out.read_text() == (REPO / "pipelines/demo/dvc.yaml").read_text()   # as written at its default place
    assert main(args + ["--check"]) == 0
    out.write_text(out.read_text().replace("--n-records 1500", "--n-records 10"))
    with pytest.raises(SystemExit, match="stale"):
        main(args + ["--check"])
