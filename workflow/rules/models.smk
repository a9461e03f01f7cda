# Base models: train the toy model, or register a local diffusers directory or a hub snapshot.


rule prepare_base_model:
    input:
        unpack(R.base_model_inputs),
    output:
        paths.fill(paths.VARIANT_JSON, variant="base"),
    params:
        model=R.model_slice,
        device=R.device,
    log:
        "logs/prepare_base_model/{model}.log",
    benchmark:
        "benchmarks/rules/prepare_base_model/{model}.tsv"
    # the toy model's training keeps two threads (1.4x faster per step than one; nothing else can
    # run beside it) and trains on the CPU whatever the device (models/base.py)
    threads: 2
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/prepare_base_model.py"
