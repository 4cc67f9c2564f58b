# Linear evaluation and fine-tuning of a pretrained (or randomly initialised) encoder, on all training
# records or on a label-efficiency subset (frac<f>, folds<k>).


rule evaluate:
    output:
        result=f"{RESULTS}/eval/{{method}}/{{protocol}}/{{subset}}.json",
        predictions=f"{RESULTS}/eval/{{method}}/{{protocol}}/{{subset}}.npz",
    benchmark:
        P.bench("evaluate/{method}-{protocol}-{subset}")
    log:
        P.logfile("evaluate/{method}-{protocol}-{subset}")
    input:
        store=P.store_path(config["evaluate"]["dataset"]),
        checkpoint=P.pretrained,
    wildcard_constraints:
        method=one_of(config["experiment"]["methods"]),
        protocol=one_of(config["experiment"]["protocols"]),
        subset=r"all|frac[0-9.e-]+|folds\d+",
    params:
        code=lambda wc: P.code("physiossl.stages.evaluate", P.encoder_module(wc.method)),
        configfile=CONFIGFILE,
        cfg=lambda wc: stage_view(config, "evaluate", protocol=wc.protocol, subset=wc.subset),
        checkpoint=lambda wc, input: flag("--checkpoint", input.checkpoint),
    threads: P.resources_of("evaluate")["threads"]
    resources:
        gpu=P.resources_of("evaluate")["gpu"],
        mem_mb=P.resources_of("evaluate")["mem_mb"],
        runtime=P.resources_of("evaluate")["runtime"],
    shell:
        "physiossl --log {log:q} evaluate --configfile {params.configfile:q} --method {wildcards.method:q} --protocol {wildcards.protocol:q}"
        " --subset {wildcards.subset:q} --store {input.store:q} --out {output.result:q} {params.checkpoint}"
