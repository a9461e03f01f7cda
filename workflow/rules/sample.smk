# Sampling: (model variant, promptset) -> PNGs + index.csv, one generator per (prompt, seed).


rule sample_promptset:
    input:
        model=variant_chain_inputs,
        promptset="results/promptsets/{promptset}.csv",
    output:
        "results/samples/{model}/{variant}/{promptset}/index.csv",
    params:
        sampling=sampling_settings_slice,
        promptset=promptset_slice,
        device=config["device"],
    log:
        "logs/sample_promptset/{model}/{variant}/{promptset}.log",
    benchmark:
        "benchmarks/rules/sample_promptset/{model}/{variant}/{promptset}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=TORCH_GPU,
    script:
        "../scripts/sample_promptset.py"
