# Tables and figures of the experiment grids, from the result files only.


rule report:
    output:
        table_md=f"{RESULTS}/report/table.md",
        table_csv=P.shown(f"{RESULTS}/report/table.csv", "table", "ECG"),
        figure=P.shown(f"{RESULTS}/report/figure.png", "figure", "ECG"),
        metrics=f"{RESULTS}/report/metrics.json",
        label_efficiency=P.shown(f"{RESULTS}/report/label_efficiency.csv", "label_efficiency", "ECG"),
        label_efficiency_figure=P.shown(f"{RESULTS}/report/label_efficiency.png", "label_efficiency", "ECG"),
        robustness=P.shown(f"{RESULTS}/report/robustness.csv", "robustness", "ECG"),
        robustness_figure=P.shown(f"{RESULTS}/report/robustness.png", "robustness", "ECG"),
        **P.periodic_outputs(),
    benchmark:
        P.bench("report/report")
    log:
        P.logfile("report/report")
    input:
        results=P.eval_results(),
        periodic=P.periodic_results(),
        periodic_predictions=[path.replace(".json", ".npz") for path in P.periodic_results()],
    params:
        code=P.code("physiossl.stages.report"),
        out_dir=lambda wc, output: os.path.dirname(output.metrics),
        configfile=CONFIGFILE,
        cfg=stage_view(config, "report"),
        periodic=lambda wc, input: flag("--periodic", input.periodic) + " --" if input.periodic else "",
    shell:
        "physiossl --log {log:q} report --configfile {params.configfile:q} --out-dir {params.out_dir:q} {params.periodic} {input.results:q}"


localrules:
    report,
