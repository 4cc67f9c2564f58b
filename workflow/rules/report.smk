# Tables and figures of the experiment grid, from the result files only.


rule report:
    output:
        table_md=f"{RESULTS}/report/table.md",
        table_csv=f"{RESULTS}/report/table.csv",
        figure=f"{RESULTS}/report/figure.png",
        metrics=f"{RESULTS}/report/metrics.json",
        label_efficiency=f"{RESULTS}/report/label_efficiency.csv",
        label_efficiency_figure=f"{RESULTS}/report/label_efficiency.png",
        robustness=f"{RESULTS}/report/robustness.csv",
        robustness_figure=f"{RESULTS}/report/robustness.png",
    input:
        results=eval_results(),
        code=code("report", "stages/report.py"),
    params:
        cfg=stage_view(config, "report"),
    shell:
        "physiossl report --configfile {CONFIGFILE} --out-dir {RESULTS}/report {input.results}"
