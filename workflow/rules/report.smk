# Tables and figures of the experiment grids, from the result files only.


rule report:
    output:
        table_md=f"{RESULTS}/report/table.md",
        table_csv=shown(f"{RESULTS}/report/table.csv", "table", "ECG"),
        figure=shown(f"{RESULTS}/report/figure.png", "figure", "ECG"),
        metrics=f"{RESULTS}/report/metrics.json",
        label_efficiency=shown(f"{RESULTS}/report/label_efficiency.csv", "label_efficiency", "ECG"),
        label_efficiency_figure=shown(f"{RESULTS}/report/label_efficiency.png", "label_efficiency", "ECG"),
        robustness=shown(f"{RESULTS}/report/robustness.csv", "robustness", "ECG"),
        robustness_figure=shown(f"{RESULTS}/report/robustness.png", "robustness", "ECG"),
        **periodic_outputs(),
    benchmark:
        bench("report/report")
    log:
        logfile("report/report")
    input:
        results=eval_results(),
        periodic=periodic_results(),
        periodic_predictions=[path.replace(".json", ".npz") for path in periodic_results()],
        code=code("physiossl.stages.report"),
    params:
        out_dir=lambda wc, output: os.path.dirname(output.metrics),
        configfile=CONFIGFILE,
        cfg=stage_view(config, "report"),
        periodic=lambda wc, input: flag("--periodic", input.periodic) + " --" if input.periodic else "",
    shell:
        "physiossl --log {log:q} report --configfile {params.configfile:q} --out-dir {params.out_dir:q} {params.periodic} {input.results:q}"


localrules:
    report,
