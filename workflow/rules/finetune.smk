# Fine-tunes: M_ft = F(M) (variant ft-<F>) and M_ed_ft = F(E(M)) (variant ed-<E>+ft-<F>), plus the
# checkpoints <variant>@<step>. The shared VAE-latent cache of a dataset is its own target.


rule cache_latents:
    """A dataset's VAE posteriors (mean, logvar, mirrored too): once per (model, dataset)."""
    input:
        base=paths.fill(paths.VARIANT_JSON, variant="base"),
        data=R.dataset_inputs,
    output:
        paths.LATENT_CACHE,
    params:
        dataset=R.dataset_slice,
        device=R.device,
    wildcard_constraints:
        dataset=variant_names.NAME,
    log:
        "logs/cache_latents/{model}/{dataset}.log",
    benchmark:
        "benchmarks/rules/cache_latents/{model}/{dataset}.tsv"
    threads: R.torch_threads
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/cache_latents.py"


# One rule per (finetuner, parent): Snakemake outputs cannot be functions of the wildcards.
# `finetune_<F>` fine-tunes the base model (one job per model, shared by every edit);
# `finetune_<F>_edited` fine-tunes ed-<E>. The inputs are the parent's variant chain (base first)
# and the dataset's latent cache. The editor wildcard cannot contain `+`, so `ed-{editor}`
# (edit_model) never matches a fine-tuned variant.
# Checkpoints <variant>@<step> are written only for the variants something reads them of (a
# persistence figure, an evaluation: R.checkpointed_finetunes): each such fine-tune is a rule of
# its own that declares them, ordered before the generic rule. Its params are the generic rule's,
# and its job writes the same final variant; the script writes the checkpoints its rule declares.
for _name in config.get("finetuners", {}):
    for _suffix, _chain in (("", ["base"]), ("_edited", ["base", variant_names.ed("{editor}")])):
        _variant = variant_names.then(_chain[-1], variant_names.ft(_name))

        rule:
            name:
                f"finetune_{_name}{_suffix}"
            input:
                chain=[paths.fill(paths.VARIANT_JSON, variant=v) for v in _chain],
                cache=R.latent_cache(_name),
            output:
                final=R.finetune_output(_name, _chain[-1]),
            params:
                name=_name,
                device=R.device,
                **R.finetuner_params(_name),
            log:
                f"logs/finetune_model/{{model}}/{_variant}.log",
            benchmark:
                f"benchmarks/rules/finetune_model/{{model}}/{_variant}.tsv"
            threads: R.torch_threads
            resources:
                gpu=R.torch_gpu,
            conda:
                ENV
            script:
                "../scripts/finetune_model.py"

    for _job in R.checkpointed_finetunes(_name):

        rule:
            name:
                _job["rule"]
            input:
                chain=_job["chain"],
                cache=paths.fill(R.latent_cache(_name), model=_job["model"]),
            output:
                *_job["checkpoints"],
                final=_job["final"],
            params:
                name=_name,
                device=R.device,
                **R.finetuner_params(_name),
            log:
                f"logs/finetune_model/{_job['model']}/{_job['variant']}.log",
            benchmark:
                f"benchmarks/rules/finetune_model/{_job['model']}/{_job['variant']}.tsv"
            threads: R.torch_threads
            resources:
                gpu=R.torch_gpu,
            conda:
                ENV
            script:
                "../scripts/finetune_model.py"

        workflow.ruleorder(_job["rule"], _job["generic"])
