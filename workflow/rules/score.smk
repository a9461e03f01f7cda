# Scoring: one row per image per scorer; summaries are pure functions of score files.
# CLIP scorers share one embeddings file per (image set, CLIP model); quality sets compare an
# image set with a reference set (FID) and with its prompts (CLIP score).


wildcard_constraints:
    clip_model=variant_names.NAME,
    quality_set=variant_names.NAME,


rule score_images:
    input:
        unpack(R.score_inputs),
    output:
        paths.SCORES,
    params:
        scorer=R.scorer_slice,
    log:
        "logs/score_images/{model}/{variant}/{promptset}/{scorer}.log",
    benchmark:
        "benchmarks/rules/score_images/{model}/{variant}/{promptset}/{scorer}.tsv",
    threads: 1
    conda:
        ENV
    script:
        "../scripts/score_images.py"


rule embed_images:
    input:
        index=paths.SAMPLES_INDEX,
    output:
        paths.EMBEDDINGS,
    params:
        clip_model=R.clip_model_slice,
        device=R.device,
    log:
        "logs/embed_images/{model}/{variant}/{promptset}/{clip_model}.log",
    benchmark:
        "benchmarks/rules/embed_images/{model}/{variant}/{promptset}/{clip_model}.tsv"
    threads: R.torch_threads
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/embed_images.py"


rule summarize_scores:
    input:
        paths.SCORES,
    output:
        paths.SUMMARY,
    log:
        "logs/summarize_scores/{model}/{variant}/{promptset}/{scorer}.log",
    benchmark:
        "benchmarks/rules/summarize_scores/{model}/{variant}/{promptset}/{scorer}.tsv",
    conda:
        ENV
    script:
        "../scripts/summarize_scores.py"


rule render_reference:
    output:
        directory(paths.REFERENCE),
    params:
        reference=R.reference_slice,
    log:
        "logs/render_reference/{quality_set}.log",
    benchmark:
        "benchmarks/rules/render_reference/{quality_set}.tsv",
    conda:
        ENV
    script:
        "../scripts/render_reference.py"


rule quality_metrics:
    input:
        unpack(R.quality_inputs),
    output:
        paths.QUALITY,
    params:
        quality_set=R.quality_slice,
        device=R.device,
    log:
        "logs/quality_metrics/{model}/{variant}/{quality_set}.log",
    benchmark:
        "benchmarks/rules/quality_metrics/{model}/{variant}/{quality_set}.tsv"
    threads: R.torch_threads
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/quality_metrics.py"
