# Scoring: one row per image per scorer; summaries are pure functions of score files.
# CLIP scorers share one embeddings file per (image set, CLIP model); quality sets compare an
# image set with a reference set (FID) and with its prompts (CLIP score).
from editrobust.scoring import SCORERS


wildcard_constraints:
    clip_model=NAME,
    quality_set=NAME,


def clip_model_spec(name):
    """A `clip_models` entry plus its name: what the embeddings and the CLIP scorers load."""
    return {"name": name, **config["clip_models"][name]}


def scorer_params(wildcards):
    """The scorer's entry with what it names elsewhere resolved (scoring.Scorer.resolved: a CLIP
    model's spec), so changing the CLIP weights re-runs its scores."""
    entry = config["scorers"][wildcards.scorer]
    return canonical({**entry, **SCORERS.get(entry["kind"]).resolved(entry, config)})


def score_inputs(wildcards):
    """The image set's index and the files its scorer reads (scoring.Scorer.inputs)."""
    entry = config["scorers"][wildcards.scorer]
    w = wildcards
    extra = SCORERS.get(entry["kind"]).inputs(w.model, w.variant, w.promptset, entry, config)
    return {"index": paths.samples_index(w.model, w.variant, w.promptset), **extra}


rule score_images:
    input:
        unpack(score_inputs),
    output:
        "results/scores/{model}/{variant}/{promptset}/{scorer}.csv",
    params:
        scorer=scorer_params,
    log:
        "logs/score_images/{model}/{variant}/{promptset}/{scorer}.log",
    threads: 1
    script:
        "../scripts/score_images.py"


rule embed_images:
    input:
        index="results/samples/{model}/{variant}/{promptset}/index.csv",
    output:
        "results/embeddings/{model}/{variant}/{promptset}/{clip_model}.safetensors",
    params:
        clip_model=lambda wildcards: canonical(clip_model_spec(wildcards.clip_model)),
        device=config["device"],
    log:
        "logs/embed_images/{model}/{variant}/{promptset}/{clip_model}.log",
    benchmark:
        "benchmarks/rules/embed_images/{model}/{variant}/{promptset}/{clip_model}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=TORCH_GPU,
    script:
        "../scripts/embed_images.py"


rule summarize_scores:
    input:
        "results/scores/{model}/{variant}/{promptset}/{scorer}.csv",
    output:
        "results/summaries/{model}/{variant}/{promptset}/{scorer}.csv",
    log:
        "logs/summarize_scores/{model}/{variant}/{promptset}/{scorer}.log",
    script:
        "../scripts/summarize_scores.py"


def quality_params(wildcards):
    """The quality set's entry with its CLIP model spec resolved; `models`/`variants` only say
    what `all` builds, so they are left out (adding a variant re-runs nothing)."""
    entry = {k: v for k, v in config["quality_sets"][wildcards.quality_set].items() if k not in ("models", "variants")}
    if entry.get("clip_score") is not None:
        entry["clip_score"] = {**entry["clip_score"], "clip_model": clip_model_spec(entry["clip_score"]["clip_model"])}
    return canonical(entry)


def quality_inputs(wildcards):
    entry = config["quality_sets"][wildcards.quality_set]
    image_set = f"{wildcards.model}/{wildcards.variant}/{entry['promptset']}"
    out = {"index": f"results/samples/{image_set}/index.csv"}
    if entry.get("fid") is not None:
        ref = entry["reference"]
        out["reference"] = via_downloads(ref["path"]) if ref["source"] == "dir" else f"results/references/{wildcards.quality_set}"
    if entry.get("clip_score") is not None:
        out["embeddings"] = f"results/embeddings/{image_set}/{entry['clip_score']['clip_model']}.safetensors"
    return out


rule render_reference:
    output:
        directory("results/references/{quality_set}"),
    params:
        reference=lambda wildcards: canonical(config["quality_sets"][wildcards.quality_set]["reference"]),
    log:
        "logs/render_reference/{quality_set}.log",
    script:
        "../scripts/render_reference.py"


rule quality_metrics:
    input:
        unpack(quality_inputs),
    output:
        "results/quality/{model}/{variant}/{quality_set}.csv",
    params:
        quality_set=quality_params,
        device=config["device"],
    log:
        "logs/quality_metrics/{model}/{variant}/{quality_set}.log",
    benchmark:
        "benchmarks/rules/quality_metrics/{model}/{variant}/{quality_set}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=TORCH_GPU,
    script:
        "../scripts/quality_metrics.py"
