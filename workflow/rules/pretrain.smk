# Self-supervised pretraining of one method (GPU job on a cluster).


rule pretrain:
    output:
        encoder=f"{RESULTS}/pretrain/{{method}}/encoder.pt",
        summary=f"{RESULTS}/pretrain/{{method}}/encoder.json",
    benchmark:
        P.bench("pretrain/{method}")
    log:
        P.logfile("pretrain/{method}")
    input:
        stores=[P.store_path(d) for d in pretrain_members(config)],
        eval_store=P.store_path(config["evaluate"]["dataset"]),
    wildcard_constraints:
        method=one_of(pretrained_methods(config)),
    params:
        code=lambda wc: P.code("physiossl.stages.pretrain", METHODS[wc.method].module, P.encoder_module(wc.method)),
        configfile=CONFIGFILE,
        cfg=lambda wc: stage_view(config, "pretrain", method=wc.method),
    threads: P.resources_of("pretrain")["threads"]
    resources:
        gpu=P.resources_of("pretrain")["gpu"],
        mem_mb=P.resources_of("pretrain")["mem_mb"],
        runtime=P.resources_of("pretrain")["runtime"],
    shell:
        "physiossl --log {log:q} pretrain --configfile {params.configfile:q} --method {wildcards.method:q} --store {input.stores:q}"
        " --eval-store {input.eval_store:q} --out {output.encoder:q}"
