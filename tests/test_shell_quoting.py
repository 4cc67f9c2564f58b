"""Config values reach the jobs' command lines quoted: a data folder with spaces and shell characters is one
argument, and nothing in it runs."""

from __future__ import annotations

import shlex

import pytest

from test_workflow import make_project, snakemake, tiny_config


@pytest.mark.slow
def test_paths_with_spaces_and_shell_characters_are_single_arguments(tmp_path):
    config = tiny_config()
    data = "data/my data $(touch PWNED) `touch PWNED2`; touch PWNED3"
    config["paths"] = {"data": data, "results": "results/r&x y"}
    project = make_project(tmp_path, "quoting", config)
    store = f"{data}/stores/ptbxl_100hz.zarr"

    plan = snakemake(project, "-n", "-p", "--", store).stdout
    assert f"--out {shlex.quote(store)}" in plan, plan

    snakemake(project, "--", store)
    assert (project / store / "zarr.json").exists()
    assert not list(project.glob("PWNED*")) and not list((project / "data").glob("PWNED*"))
    log = project / "results/r&x y/logs/convert/ptbxl_100hz.log"
    assert "ptbxl → ptbxl_100hz.zarr" in log.read_text()
