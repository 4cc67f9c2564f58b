# Raw trees (generated for the demo or downloaded) and their conversion into ECG stores (sleep stores: sleep.smk).


rule demo_data:
    output:
        directory(f"{DATA}/raw/{{dataset}}"),
    benchmark:
        P.bench("demo_data/{dataset}")
    log:
        P.logfile("demo_data/{dataset}")
    wildcard_constraints:
        dataset=one_of(P.datasets_in_mode("demo")),
    params:
        code=lambda wc: P.code(P.source_module(wc.dataset)),
        cfg=lambda wc: stage_view(config, "demo_data", dataset=wc.dataset),
        source=lambda wc: P.source_of(wc.dataset),
        n_records=lambda wc: config["datasets"][wc.dataset]["demo"]["n_records"],
        seed=config["seed"],
        # demo.options (night lengths, rates, part counts) are read from the config file by the command
        options=lambda wc: (f" --configfile {shlex.quote(CONFIGFILE)} --dataset {shlex.quote(wc.dataset)}"
                            if config["datasets"][wc.dataset]["demo"].get("options") else ""),
    shell:
        "physiossl --log {log:q} demo {params.source:q} --out {output:q} --n-records {params.n_records:q} --seed {params.seed:q}{params.options}"


rule download_data:
    output:
        directory(f"{DATA}/raw/{{dataset}}"),
    benchmark:
        P.bench("download_data/{dataset}")
    log:
        P.logfile("download_data/{dataset}")
    wildcard_constraints:
        dataset=one_of(P.datasets_in_mode("download")),
    params:
        code=lambda wc: P.code(P.source_module(wc.dataset)),
        configfile=CONFIGFILE,
        cfg=lambda wc: stage_view(config, "download_data", dataset=wc.dataset),
    shell:
        "physiossl --log {log:q} download {wildcards.dataset:q} --configfile {params.configfile:q} --out {output:q}"


rule convert:
    output:
        store=directory(f"{DATA}/stores/{{dataset}}_{{fs}}hz.zarr"),
        quarantine=f"{DATA}/stores/{{dataset}}_{{fs}}hz.zarr.quarantine.csv",
    benchmark:
        P.bench("convert/{dataset}_{fs}hz")
    log:
        P.logfile("convert/{dataset}_{fs}hz")
    input:
        raw=lambda wc: P.raw_path(wc.dataset),
    wildcard_constraints:
        dataset=one_of([d for d in config["datasets"] if not P.is_sleep(d)]),
        fs=r"\d+",
    params:
        code=lambda wc: P.code(P.source_module(wc.dataset)),
        cfg=lambda wc: stage_view(config, "convert", dataset=wc.dataset),
        source=lambda wc: P.source_of(wc.dataset),
        max_quarantine=lambda wc: config["datasets"][wc.dataset]["max_quarantine_fraction"],
    threads: P.resources_of("convert")["threads"] if "convert" in config["resources"] else 1
    resources:
        **P.convert_resources(),
    shell:
        "physiossl --log {log:q} convert {params.source:q} --raw {input.raw:q} --out {output.store:q} --fs {wildcards.fs:q}"
        " --max-quarantine {params.max_quarantine:q} --workers {threads}"
