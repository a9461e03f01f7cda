# Fine-tunes: M_ft = F(M) (variant ft-<F>) and M_ed_ft = F(E(M)) (variant ed-<E>+ft-<F>), plus the
# checkpoints <variant>@<step>. The shared VAE-latent cache of a dataset is its own target.
from editrobust.variant_names import checkpoint_steps
from editrobust.data.finetune_datasets import dataset_inputs


rule cache_latents:
    """A dataset's VAE posteriors (mean, logvar, mirrored too): once per (model, dataset)."""
    input:
        base="results/models/{model}/base/variant.json",
        data=lambda w: sorted({via_downloads(p) for p in dataset_inputs(config["datasets"][w.dataset])}),
    output:
        "results/cache/{model}/latents_{dataset}.safetensors",
    params:
        dataset=lambda w: canonical(config["datasets"][w.dataset]),
        device=config["device"],
    wildcard_constraints:
        dataset=NAME,
    log:
        "logs/cache_latents/{model}/{dataset}.log",
    benchmark:
        "benchmarks/rules/cache_latents/{model}/{dataset}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=TORCH_GPU,
    script:
        "../scripts/cache_latents.py"


def finetune_params(name):
    """The finetuner's entry and its dataset's entry, canonical: changing either re-runs only
    this finetuner's variants."""
    entry = config["finetuners"][name]
    return dict(
        finetuner=canonical(entry),
        dataset=canonical({"name": entry["dataset"], "entry": config["datasets"][entry["dataset"]]}),
    )


# One pair of rules per finetuner (Snakemake outputs cannot be functions of the wildcards, and a
# finetuner's checkpoints <variant>@<step> are declared outputs, so each finetuner needs its own
# output list). `finetune_<F>` fine-tunes the base model: one job per model, shared by every
# edit; `finetune_<F>_edited` fine-tunes ed-<E>. The editor wildcard cannot contain `+`, so
# `ed-{editor}` (edit_model) never matches a fine-tuned variant.
for _name, _entry in config.get("finetuners", {}).items():
    _cache = f"results/cache/{{model}}/latents_{_entry['dataset']}.safetensors"
    _steps = checkpoint_steps(_entry.get("save_every"), _entry["steps"])

    rule:
        name:
            f"finetune_{_name}"
        input:
            parent="results/models/{model}/base/variant.json",
            cache=_cache,
        output:
            *[f"results/models/{{model}}/ft-{_name}@{s}/variant.json" for s in _steps],
            final=f"results/models/{{model}}/ft-{_name}/variant.json",
        params:
            name=_name,
            device=config["device"],
            **finetune_params(_name),
        log:
            f"logs/finetune_model/{{model}}/ft-{_name}.log",
        benchmark:
            f"benchmarks/rules/finetune_model/{{model}}/ft-{_name}.tsv"
        threads: TORCH_THREADS
        resources:
            gpu=TORCH_GPU,
        script:
            "../scripts/finetune_model.py"

    rule:
        name:
            f"finetune_{_name}_edited"
        input:
            parent="results/models/{model}/ed-{editor}/variant.json",
            base="results/models/{model}/base/variant.json",
            cache=_cache,
        output:
            *[f"results/models/{{model}}/ed-{{editor}}+ft-{_name}@{s}/variant.json" for s in _steps],
            final=f"results/models/{{model}}/ed-{{editor}}+ft-{_name}/variant.json",
        params:
            name=_name,
            device=config["device"],
            **finetune_params(_name),
        log:
            f"logs/finetune_model/{{model}}/ed-{{editor}}+ft-{_name}.log",
        benchmark:
            f"benchmarks/rules/finetune_model/{{model}}/ed-{{editor}}+ft-{_name}.tsv"
        threads: TORCH_THREADS
        resources:
            gpu=TORCH_GPU,
        script:
            "../scripts/finetune_model.py"
