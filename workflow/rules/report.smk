# Tables and figures of the experiment grids, from the result files only.


def periodic_outputs():
    """The periodic-target tables and figures; the label-efficiency ones only when fraction or fold runs exist."""
    if "periodic" not in config:
        return {}
    outputs = {"periodic_csv": f"{RESULTS}/report/periodic.csv", "periodic_md": f"{RESULTS}/report/periodic.md",
               "periodic_figure": f"{RESULTS}/report/periodic.png"}
    if any(subset != "all" for protocol in config["periodic"]["protocols"]
           for subset in eval_subsets(config, protocol, "periodic")):
        outputs["periodic_label_efficiency"] = f"{RESULTS}/report/periodic_label_efficiency.csv"
        outputs["periodic_label_efficiency_figure"] = f"{RESULTS}/report/periodic_label_efficiency.png"
    return outputs


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
        **periodic_outputs(),
    benchmark:
        bench("report/report")
    input:
        results=eval_results(),
        periodic=periodic_results(),
        periodic_predictions=[path.replace(".json", ".npz") for path in periodic_results()],
        code=code("report", "stages/report.py"),
    params:
        cfg=stage_view(config, "report"),
        periodic=lambda wc, input: f"--periodic {' '.join(input.periodic)} --" if input.periodic else "",
    shell:
        "physiossl report --configfile {CONFIGFILE} --out-dir {RESULTS}/report {params.periodic} {input.results}"


localrules:
    report,
