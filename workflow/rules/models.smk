# Base models: train the toy model, or register a local diffusers directory or a hub snapshot.


rule prepare_base_model:
    input:
        unpack(base_model_inputs),
    output:
        "results/models/{model}/base/variant.json",
    params:
        model=model_slice,
    log:
        "logs/prepare_base_model/{model}.log",
    benchmark:
        "benchmarks/rules/prepare_base_model/{model}.tsv"
    threads: 2
    resources:
        gpu=TORCH_GPU,
    script:
        "../scripts/prepare_base_model.py"
