# Linear evaluation and fine-tuning of a pretrained (or randomly initialised) encoder.


def pretrained(wc):
    return [] if wc.method == RANDOM_INIT else [f"{RESULTS}/pretrain/{wc.method}/encoder.pt"]


rule evaluate:
    output:
        f"{RESULTS}/eval/{{method}}/{{protocol}}.json",
    input:
        store=store_path(config["evaluate"]["dataset"]),
        checkpoint=pretrained,
        code=code("models", "eval", "data/loading.py", "stages/evaluate.py"),
    wildcard_constraints:
        method=one_of(config["experiment"]["methods"]),
        protocol=one_of(config["experiment"]["protocols"]),
    params:
        cfg=lambda wc: stage_view(config, "evaluate", protocol=wc.protocol),
        checkpoint=lambda wc, input: f"--checkpoint {input.checkpoint}" if input.checkpoint else "",
    threads: resources_of("evaluate")["threads"]
    resources:
        gpu=resources_of("evaluate")["gpu"],
        mem_mb=resources_of("evaluate")["mem_mb"],
        runtime=resources_of("evaluate")["runtime"],
    shell:
        "physiossl evaluate --configfile {CONFIGFILE} --method {wildcards.method} --protocol {wildcards.protocol}"
        " --store {input.store} --out {output} {params.checkpoint}"
