# Sampling: (model variant, promptset) -> PNGs + index.csv, one generator per (prompt, seed).


rule sample_promptset:
    input:
        model=R.variant_chain,
        promptset=paths.PROMPTSET,
    output:
        paths.SAMPLES_INDEX,
    params:
        sampling=R.sampling_slice,
        promptset=R.promptset_slice,
        device=R.device,
    log:
        "logs/sample_promptset/{model}/{variant}/{promptset}.log",
    benchmark:
        "benchmarks/rules/sample_promptset/{model}/{variant}/{promptset}.tsv"
    threads: R.torch_threads
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/sample_promptset.py"
