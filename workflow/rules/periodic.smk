# Periodic-target experiment (SimPer's protocols): regression of a store target (e.g. heart rate) from a
# pretrained or randomly initialised encoder: linear, fine-tuning, FFT readout of the feature series, zero-shot.


if "periodic" in config:

    rule evaluate_periodic:
        output:
            result=f"{RESULTS}/periodic/{{method}}/{{protocol}}/{{subset}}.json",
            predictions=f"{RESULTS}/periodic/{{method}}/{{protocol}}/{{subset}}.npz",
        benchmark:
            P.bench("evaluate_periodic/{method}-{protocol}-{subset}")
        log:
            P.logfile("evaluate_periodic/{method}-{protocol}-{subset}")
        input:
            store=P.store_path(config["evaluate"]["dataset"]),
            checkpoint=P.pretrained,
        wildcard_constraints:
            method=one_of(config["periodic"]["methods"]),
            protocol=one_of(config["periodic"]["protocols"]),
            subset=r"all|frac[0-9.e-]+|folds\d+",
        params:
            code=lambda wc: P.code("physiossl.stages.periodic", P.encoder_module(wc.method)),
            configfile=CONFIGFILE,
            cfg=lambda wc: stage_view(config, "evaluate_periodic", protocol=wc.protocol, subset=wc.subset),
            checkpoint=lambda wc, input: flag("--checkpoint", input.checkpoint),
        threads: P.resources_of("evaluate")["threads"]
        resources:
            gpu=P.resources_of("evaluate")["gpu"],
            mem_mb=P.resources_of("evaluate")["mem_mb"],
            runtime=P.resources_of("evaluate")["runtime"],
        shell:
            "physiossl --log {log:q} evaluate-periodic --configfile {params.configfile:q} --method {wildcards.method:q}"
            " --protocol {wildcards.protocol:q} --subset {wildcards.subset:q} --store {input.store:q} --out {output.result:q}"
            " {params.checkpoint}"
