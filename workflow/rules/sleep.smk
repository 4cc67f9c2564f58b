# Sound-based sleep staging: sleep stores of log-mel epochs, one training run per cell of the ablation grid
# (variant x labeled fraction x unlabeled pool x seed), and the report (table, per-class F1, hypnogram).


rule convert_sleep:
    output:
        store=directory(f"{DATA}/stores/{{dataset}}_sleep.zarr"),
        quarantine=f"{DATA}/stores/{{dataset}}_sleep.zarr.quarantine.csv",
    benchmark:
        P.bench("convert_sleep/{dataset}")
    log:
        P.logfile("convert_sleep/{dataset}")
    input:
        raw=lambda wc: P.raw_path(wc.dataset),
    wildcard_constraints:
        dataset=one_of(sleep_datasets(config)),
    params:
        code=lambda wc: P.code(P.source_module(wc.dataset)),
        configfile=CONFIGFILE,
        cfg=lambda wc: stage_view(config, "convert_sleep", dataset=wc.dataset),
    threads: P.resources_of("convert")["threads"] if "convert" in config["resources"] else 1
    resources:
        **P.convert_resources(),
    shell:
        "physiossl --log {log:q} convert-sleep --configfile {params.configfile:q} --dataset {wildcards.dataset:q} --raw {input.raw:q}"
        " --out {output.store:q} --workers {threads}"


rule train_sleep:
    output:
        result=f"{RESULTS}/sleep/{{variant}}/frac{{fraction}}/{{pool}}/seed{{seed}}.json",
        predictions=f"{RESULTS}/sleep/{{variant}}/frac{{fraction}}/{{pool}}/seed{{seed}}.npz",
        model=f"{RESULTS}/sleep/{{variant}}/frac{{fraction}}/{{pool}}/seed{{seed}}.pt",
    benchmark:
        P.bench("train_sleep/{variant}-frac{fraction}-{pool}-seed{seed}")
    log:
        P.logfile("train_sleep/{variant}-frac{fraction}-{pool}-seed{seed}")
    input:
        store=P.sleep_store_path(config["sleep"]["dataset"]),
        unlabeled=lambda wc: [P.sleep_store_path(d) for d in config["sleep"].get("unlabeled", [])] if wc.pool == "ood" else [],
    wildcard_constraints:
        variant=one_of(VARIANTS.names()),
        fraction=r"[0-9.e-]+",
        pool="none|in|ood",
        seed=r"\d+",
    params:
        code=lambda wc: P.code("physiossl.stages.sleep", VARIANTS[wc.variant].module,
                             SLEEP_MODELS[config["sleep"]["model"]["name"]].module),
        configfile=CONFIGFILE,
        cfg=lambda wc: stage_view(config, "train_sleep", variant=wc.variant, pool=wc.pool),
        unlabeled=lambda wc, input: flag("--unlabeled", input.unlabeled),
    threads: P.resources_of("sleep")["threads"]
    resources:
        gpu=P.resources_of("sleep")["gpu"],
        mem_mb=P.resources_of("sleep")["mem_mb"],
        runtime=P.resources_of("sleep")["runtime"],
    shell:
        "physiossl --log {log:q} train-sleep --configfile {params.configfile:q} --variant {wildcards.variant:q} --fraction {wildcards.fraction:q}"
        " --pool {wildcards.pool:q} --seed {wildcards.seed:q} --store {input.store:q} {params.unlabeled}"
        " --out {output.result:q}"


rule sleep_report:
    output:
        table_md=f"{RESULTS}/report/sleep.md",
        table_csv=P.shown(f"{RESULTS}/report/sleep.csv", "sleep", "Sleep staging"),
        runs_csv=f"{RESULTS}/report/sleep_runs.csv",
        per_class=P.shown(f"{RESULTS}/report/sleep_per_class.csv", "sleep_per_class", "Sleep staging"),
        hypnogram=P.shown(f"{RESULTS}/report/hypnogram.png", "hypnogram", "Sleep staging"),
        confusion=P.shown(f"{RESULTS}/report/sleep_confusion.png", "sleep_confusion", "Sleep staging"),
        metrics=f"{RESULTS}/report/sleep_metrics.json",
    benchmark:
        P.bench("sleep_report/sleep_report")
    log:
        P.logfile("sleep_report/sleep_report")
    input:
        results=P.sleep_results(),
        predictions=[path.replace(".json", ".npz") for path in P.sleep_results()],
    params:
        code=P.code("physiossl.stages.report"),
        out_dir=lambda wc, output: os.path.dirname(output.metrics),
        configfile=CONFIGFILE,
        cfg=stage_view(config, "sleep_report"),
    shell:
        "physiossl --log {log:q} report-sleep --configfile {params.configfile:q} --out-dir {params.out_dir:q} {input.results:q}"


localrules:
    sleep_report,
