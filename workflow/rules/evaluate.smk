# Linear evaluation and fine-tuning of a pretrained (or randomly initialised) encoder, on all training
# records or on a label-efficiency subset (frac<f>, folds<k>).


def pretrained(wc):
    return [] if random_init_encoder(config, wc.method) else [f"{RESULTS}/pretrain/{wc.method}/encoder.pt"]


def eval_results():
    """Every result file of the experiment grid."""
    return [f"{RESULTS}/eval/{method}/{protocol}/{subset}.json"
            for method in config["experiment"]["methods"]
            for protocol in config["experiment"]["protocols"]
            for subset in eval_subsets(config, protocol)]


rule evaluate:
    output:
        result=f"{RESULTS}/eval/{{method}}/{{protocol}}/{{subset}}.json",
        predictions=f"{RESULTS}/eval/{{method}}/{{protocol}}/{{subset}}.npz",
    benchmark:
        bench("evaluate/{method}-{protocol}-{subset}")
    input:
        store=store_path(config["evaluate"]["dataset"]),
        checkpoint=pretrained,
        code=code("models", "eval", "augment", "data/loading.py", *STAGE_CODE, "stages/evaluate.py"),
    wildcard_constraints:
        method=one_of(config["experiment"]["methods"]),
        protocol=one_of(config["experiment"]["protocols"]),
        subset=r"all|frac[0-9.e-]+|folds\d+",
    params:
        cfg=lambda wc: stage_view(config, "evaluate", protocol=wc.protocol, subset=wc.subset),
        checkpoint=lambda wc, input: f"--checkpoint {input.checkpoint}" if input.checkpoint else "",
    threads: resources_of("evaluate")["threads"]
    resources:
        gpu=resources_of("evaluate")["gpu"],
        mem_mb=resources_of("evaluate")["mem_mb"],
        runtime=resources_of("evaluate")["runtime"],
    shell:
        "physiossl evaluate --configfile {CONFIGFILE} --method {wildcards.method} --protocol {wildcards.protocol}"
        " --subset {wildcards.subset} --store {input.store} --out {output.result} {params.checkpoint}"
