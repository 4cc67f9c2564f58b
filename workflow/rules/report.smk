# Tables and figure of the experiment grid, from the result files only.


rule report:
    output:
        table_md=f"{RESULTS}/report/table.md",
        table_csv=f"{RESULTS}/report/table.csv",
        figure=f"{RESULTS}/report/figure.png",
    input:
        results=expand(f"{RESULTS}/eval/{{method}}/{{protocol}}.json",
                       method=config["experiment"]["methods"], protocol=config["experiment"]["protocols"]),
        code=code("report", "stages/report.py"),
    params:
        cfg=stage_view(config, "report"),
    shell:
        "physiossl report --configfile {CONFIGFILE} --out-dir {RESULTS}/report {input.results}"
